"""Run under horovodrun: each rank writes what it sees to <out_dir>/rank<r>.json."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import horovod.tensorflow as hvd  # noqa: E402
import tensorflow as tf  # noqa: E402

hvd.init()
rank = hvd.rank()
summed = hvd.allreduce(tf.constant([float(rank), 1.0]), op=hvd.Sum).numpy().tolist()
averaged = hvd.allreduce(tf.constant(float(rank + 1)), op=hvd.Average).numpy().item()
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({"rank": rank, "size": hvd.size(), "sum": summed, "average": averaged}, f)
