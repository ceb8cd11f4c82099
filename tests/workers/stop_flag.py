"""Run under horovodrun -np 2: the stop flag riding in a gradient allreduce.

Each rank applies three gradient sets through `distributed_optimizer` with a `StopFlag`;
rank 1 requests a stop before the second. Writes <out_dir>/rank<r>.json with the agreed
flag after each step and the weights after each step (to compare with a run without flag).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_largebatch import distributed  # noqa: E402

context = distributed.init()
rank = context.rank
with_flag = sys.argv[2] == "flag"
flag = distributed.StopFlag() if with_flag else None
kernel = keras.Variable(np.zeros((2, 3), np.float32))
bias = keras.Variable(np.zeros((3,), np.float32))
optimizer = distributed.distributed_optimizer(keras.optimizers.SGD(1.0), stop_flag=flag)
optimizer.build([kernel, bias])
agreed, weights = [], []
for step in range(3):
    if with_flag and rank == 1 and step == 1:
        flag.request()
    # rank r's gradient: (r + 1)·(step + 1) everywhere; the average is 1.5·(step + 1).
    grads = [tf.fill((2, 3), float((rank + 1) * (step + 1))),
             tf.fill((3,), float((rank + 1) * (step + 1)))]
    tf.function(lambda g: optimizer.apply(g, [kernel, bias]))(grads)
    agreed.append(flag.agreed() if with_flag else None)
    weights.append([np.asarray(kernel).tolist(), np.asarray(bias).tolist()])
with open(os.path.join(sys.argv[1], f"rank{rank}-{sys.argv[2]}.json"), "w") as f:
    json.dump({"agreed": agreed, "weights": weights}, f)
