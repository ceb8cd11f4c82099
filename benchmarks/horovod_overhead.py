"""Horovod's cost on this machine: 2 processes × 1 thread against 1 process × 2 threads.

    .venv/bin/python benchmarks/horovod_overhead.py [--out=benchmarks/results/horovod_overhead.json]

Same model (CIFAR ResNet-20), same global batch (128), the package's training path in
both: one process with two intra-op threads and batch 128, then
`horovodrun -np 2 --gloo` with one intra-op thread each and batch 64 per worker. Reports
global images/s of each, their ratio, and the allreduce share of the 2-process step: the
time of one `hvd.grouped_allreduce` of the model's gradient tensors divided by the step
time (measured separately, in the same processes).
"""

import argparse
import json
import os
import subprocess
import sys
import time

GLOBAL_BATCH = 128
STEPS = 30


def worker(threads, out):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import horovod.tensorflow as hvd
    import keras
    import numpy as np

    from tf_largebatch import distributed, models, optimizers

    ctx = distributed.init()
    batch = GLOBAL_BATCH // ctx.size
    model = models.cifar_resnet(20)
    model.compile(distributed.distributed_optimizer(optimizers.MomentumSGD(0.1)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(ctx.rank)
    data = tf.data.Dataset.from_tensors((
        rng.normal(size=(batch, 32, 32, 3)).astype("float32"),
        rng.integers(0, 10, batch).astype("int32"))).repeat()

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, i, logs=None):
            if i == 1:
                self.start = time.perf_counter()
            self.end = time.perf_counter()

    timer = Timer()
    model.fit(data, steps_per_epoch=STEPS + 2, epochs=1, verbose=0, callbacks=[timer])
    step_s = (timer.end - timer.start) / STEPS
    allreduce_s = None
    if ctx.size > 1:
        shapes = [tuple(v.shape) for v in model.trainable_variables]
        reduce = tf.function(lambda: hvd.grouped_allreduce([tf.ones(s) for s in shapes],
                                                           op=hvd.Average))
        reduce()[0].numpy()
        start = time.perf_counter()
        for _ in range(20):
            reduce()[0].numpy()  # wait for the result
        allreduce_s = (time.perf_counter() - start) / 20
    if ctx.rank == 0:
        with open(out, "w") as f:
            json.dump({"processes": ctx.size, "threads_per_process": threads,
                       "step_s": step_s, "images_per_sec": GLOBAL_BATCH / step_s,
                       "allreduce_s": allreduce_s,
                       "gradient_mb": sum(int(np.prod(v.shape)) for v in
                                          model.trainable_variables) * 4 / 2**20}, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/horovod_overhead.json")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1])
        return
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    single, multi = args.out + ".single", args.out + ".hvd"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    subprocess.run([sys.executable, __file__, "--worker", "2", single], check=True, env=env)
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable,
                    __file__, "--worker", "1", multi], check=True, env=env)
    with open(single) as f:
        one = json.load(f)
    with open(multi) as f:
        two = json.load(f)
    os.remove(single)
    os.remove(multi)
    result = {"single_process": one, "horovod_2x1": two,
              "ratio": two["images_per_sec"] / one["images_per_sec"],
              "allreduce_share": two["allreduce_s"] / two["step_s"]}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
