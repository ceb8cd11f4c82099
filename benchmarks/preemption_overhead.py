"""What watching for preemption costs a training step, under `horovodrun -np 2`.

    .venv/bin/python benchmarks/preemption_overhead.py [--rounds=9] \
        [--out=benchmarks/results/preemption_overhead.json]

The demo's model (CIFAR ResNet-20, n = 32 per worker, one intra-op thread per process), the
package's bridge and its `preemption.MidEpochCheckpoints` callback, three variants fitted in
the same processes, in rotation (each leads a round in turn), `--rounds` times each:

- `none`: no preemption handling (no stop flag, no callback): the baseline;
- `in-graph`: the package's way, the stop flag riding in the gradients' allreduce
  (`distributed.StopFlag`) and read locally after each step;
- `per-step allreduce`: the way before, one eager one-integer allreduce after every step
  (`distributed.any_worker`), kept here to measure what it cost.

Reports each variant's median step time and its ratio to `none` (1.0 = free), and the time
of one `distributed.any_worker` call alone (what the per-step variant adds to every step).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BATCH = 32
STEPS = 40  # timed steps a fit (after 3 untimed ones)


def worker(rounds, out):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    from tf_largebatch import distributed, models, optimizers
    from tf_largebatch.experiment import preemption
    from tf_largebatch.experiment.config import OutputConfig
    from tf_largebatch.experiment.workers import Workers

    context = distributed.init()

    class InGraph(Workers):
        def __init__(self, flag):
            self.flag = flag

        def request_stop(self):
            self.flag.request()

        def stop_agreed(self):
            return self.flag.agreed()

    class PerStepAllreduce(Workers):  # the agreement before: a collective after every step
        def __init__(self, watch):
            self.watch = watch

        def stop_agreed(self):
            return distributed.any_worker(self.watch.received is not None)

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

        def on_train_begin(self, logs=None):
            self.times = []

    rng = np.random.default_rng(context.rank)
    data = tf.data.Dataset.from_tensors((
        rng.normal(size=(BATCH, 32, 32, 3)).astype("float32"),
        rng.integers(0, 10, BATCH).astype("int32"))).repeat()
    fits = {}
    for variant in ("none", "in-graph", "per-step allreduce"):
        keras.utils.set_random_seed(0)
        model = models.cifar_resnet(20)
        flag = distributed.StopFlag() if variant == "in-graph" else None
        model.compile(distributed.distributed_optimizer(optimizers.MomentumSGD(0.01),
                                                        stop_flag=flag),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        watch = preemption.SignalWatch()
        callbacks = [distributed.BroadcastInitialState(), Timer()]
        if variant != "none":
            workers = InGraph(flag) if flag is not None else PerStepAllreduce(watch)
            callbacks.append(preemption.MidEpochCheckpoints(workers, OutputConfig(), watch, 10**9))
        fits[variant] = (model, callbacks)
    step_s = {variant: [] for variant in fits}
    order = list(fits)
    for round_ in range(rounds):
        for variant in order[round_ % 3:] + order[:round_ % 3]:  # each variant leads in turn
            model, callbacks = fits[variant]
            model.fit(data, steps_per_epoch=STEPS + 3, epochs=1, verbose=0,
                      callbacks=callbacks)
            times = callbacks[1].times[3:]
            step_s[variant].append((times[-1] - times[0]) / (len(times) - 1))
    distributed.any_worker(False)  # what the per-step variant adds, timed alone
    start = time.perf_counter()
    for _ in range(200):
        distributed.any_worker(False)
    any_worker_ms = (time.perf_counter() - start) / 200 * 1e3
    if context.rank == 0:
        medians = {variant: statistics.median(s) for variant, s in step_s.items()}
        result = {
            "processes": context.size, "per_worker_batch": BATCH, "model": "cifar_resnet20",
            "rounds": rounds, "steps_per_round": STEPS,
            "median_step_ms": {v: 1e3 * s for v, s in medians.items()},
            "all_step_ms": {v: [1e3 * x for x in s] for v, s in step_s.items()},
            "ratio_to_none": {v: s / medians["none"] for v, s in medians.items()},
            "any_worker_call_ms": any_worker_ms,
        }
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps(result, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/preemption_overhead.json")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.rounds, args.out)
        return
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable,
                    __file__, "--worker", f"--rounds={args.rounds}", f"--out={args.out}"],
                   check=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))


if __name__ == "__main__":
    main()
