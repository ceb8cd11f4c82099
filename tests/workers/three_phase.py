"""Under horovodrun: sums tensors of odd sizes and several dtypes with the three-phase
process-set allreduce and with Horovod's flat allreduce; writes both to <out>/rank<r>.npz."""

import sys

import numpy as np
import tensorflow as tf

from tf_largebatch import distributed

context = distributed.init("hierarchical")
rank = context.rank
cases = {
    "f32_7": tf.constant(np.arange(7, dtype=np.float32) * (rank + 1) + 0.25),
    "f64_3x5": tf.constant(np.full((3, 5), 1.5 ** rank, dtype=np.float64)),
    "f16_1": tf.constant([np.float16(rank + 0.5)]),
    "i32_11": tf.constant(np.arange(11, dtype=np.int32) + 100 * rank),
}
three, flat = {}, {}
for name, value in cases.items():
    three[name] = distributed._three_phase.sum(value, name).numpy()
    flat[name] = distributed.hvd.allreduce(value, op=distributed.hvd.Sum, name=f"{name}_flat"
                                           ).numpy()
np.savez(f"{sys.argv[1]}/rank{rank}.npz",
         **{f"three_{k}": v for k, v in three.items()}, **{f"flat_{k}": v for k, v in flat.items()},
         scheme=np.array(context.allreduce), hosts=np.array(distributed._three_phase.hosts))
