"""Run under horovodrun: averages known gradients with `distributed.allreduce_gradients`,
uncompressed and fp16-compressed (per gradient and grouped); each rank writes its inputs and
the results to <out_dir>/rank<r>.npz."""

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import horovod.tensorflow as hvd  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_largebatch import distributed  # noqa: E402

context = distributed.init()
rng = np.random.default_rng(context.rank)
# Magnitudes from 1e-6 to 1e2, so fp16's normal range and its subnormals (< 2^-14) both occur.
grads = [(rng.normal(size=shape) * 10.0 ** rng.uniform(-6, 2, size=shape)).astype(np.float32)
         for shape in ((1000,), (7, 9))]
tensors = [tf.constant(g) for g in grads]
out = {f"in{i}": g for i, g in enumerate(grads)}
for key, compression, grouped in (("none", hvd.Compression.none, False),
                                  ("fp16", hvd.Compression.fp16, False),
                                  ("fp16_grouped", hvd.Compression.fp16, True)):
    for i, g in enumerate(distributed.allreduce_gradients(tensors, compression, grouped)):
        out[f"{key}{i}"] = g.numpy()
np.savez(os.path.join(sys.argv[1], f"rank{context.rank}.npz"), **out)
