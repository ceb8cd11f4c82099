"""Training-step throughput and peak memory: the package against plain Keras, one process.

    .venv/bin/python benchmarks/step_throughput.py [--cases=...] [--variants=...] [--out=...]

The two sides, on a fixed synthetic batch:
- package: the trainer's model (`models.resnet` v1 / `models.cifar_resnet`), `MomentumSGD`
  behind the Horovod bridge (`distributed_optimizer`, one process), the trainer's loss,
  metrics and callbacks (`StopOnNonFiniteLoss`, `AverageBatchNormStatistics`);
- plain Keras: `keras.applications.ResNet50(weights=None)` / the same CIFAR ResNet-20
  with `keras.optimizers.SGD(momentum=0.9)`, accuracy metric, no callbacks.

Throughput. This VM's speed jumps between levels, from one process to the next and, every
few seconds, within one, so both sides are built and compiled in one process (one per case
and variant) and their steps alternate: each side runs its own `model.fit` in a thread of
its own, and a baton passed in a callback (the last of the side's callbacks) lets one step
run at a time, in the order A B, B A, A B, ... (n pairs, each side leading every other
pair, after 3 untimed steps each). A step's time runs from its side taking the baton to the
end of that step's callbacks, so it holds the whole fit loop's step (data, train step,
callbacks) and not the other side's; Python's garbage collector is paused meanwhile.
With r_i = time_B,i / time_A,i (A's images/s over B's in pair i), the ratio is the geometric
mean exp(mean(log r_i)) and its 95% interval exp(mean ± t(0.975, n−1)·sd(log r)/√n)
(Student t on the n pairs' log ratios). A level jump moves both steps of a pair alike and
cancels in r_i; `step_seconds` keeps every pair. `--sides=plain,plain` (or package,package)
is the A/A check: two separate models of one side, same procedure; its interval must hold
1.0. Horovod is initialised once for the process, so its idle background thread runs
during both sides' steps.

Memory needs a process of its own: each side is also fitted alone (5 steps) in a fresh
subprocess (`--memory_rounds` times) for its peak RSS; memory does not drift.
"""

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time

CASES = {
    # name: (model, batch, image size, step pairs)
    "resnet50_b32": ("resnet50", 32, 224, 50),
    "cifar_resnet20_b128": ("cifar_resnet20", 128, 32, 300),
}
WARMUP = 3  # untimed steps per side before the pairs (the first holds the fit call's setup)


def build(side, model_name, batch, size, xla):
    """One side's compiled model, its callbacks and its data."""
    import keras
    import numpy as np
    import tensorflow as tf

    classes = 1000 if model_name == "resnet50" else 10
    x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, classes, batch).astype("int32")
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    callbacks = []
    if side == "package":
        from tf_largebatch import callbacks as cbs
        from tf_largebatch import distributed, models, optimizers

        if model_name == "resnet50":
            model = models.resnet(50, version="1")  # keras.applications' ResNet50 is v1
        else:
            model = models.cifar_resnet(20)
        optimizer = distributed.distributed_optimizer(optimizers.MomentumSGD(0.1))
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="top1"),
                   keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"),
                   keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="xent")]
        callbacks = [cbs.StopOnNonFiniteLoss(), distributed.AverageBatchNormStatistics()]
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        if model_name == "resnet50":
            model = keras.applications.ResNet50(weights=None)
            loss = keras.losses.SparseCategoricalCrossentropy()  # softmax output
        else:
            from tf_largebatch import models

            model = models.cifar_resnet(20)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        metrics = ["accuracy"]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=xla)
    return model, callbacks, data


def setup(precision):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from tf_largebatch import distributed

    if precision != "float32":
        keras.mixed_precision.set_global_policy(precision)
    distributed.init()  # for the package side; one process, nothing is exchanged


def interleaved(sides, model_name, batch, size, pairs, xla, precision):
    """Runs in the subprocess: both sides, steps alternating; every step's time."""
    import keras

    setup(precision)
    built = [build(side, model_name, batch, size, xla) for side in sides]
    for model, callbacks, data in built:  # traces the train step here, not in the threads
        model.fit(data, steps_per_epoch=2, epochs=1, verbose=0, callbacks=callbacks)
    turns = [0, 1] * WARMUP + [j for i in range(pairs) for j in ((0, 1), (1, 0))[i % 2]]
    times, state, errors, baton = [0.0] * len(turns), {"turn": 0}, [], threading.Condition()

    class Baton(keras.callbacks.Callback):
        def __init__(self, me):
            super().__init__()
            self.me = me

        def wait(self):  # for this side's next turn, or the end
            with baton:
                baton.wait_for(lambda: state["turn"] >= len(turns)
                               or turns[state["turn"]] == self.me)
            self.start = time.perf_counter()

        def on_train_begin(self, logs=None):
            self.wait()

        def on_train_batch_end(self, batch_index, logs=None):
            seconds = time.perf_counter() - self.start
            with baton:
                times[state["turn"]] = seconds
                state["turn"] += 1
                baton.notify_all()
            self.wait()

    def fit(j):
        model, callbacks, data = built[j]
        try:
            model.fit(data, steps_per_epoch=turns.count(j), epochs=1, verbose=0,
                      callbacks=callbacks + [Baton(j)])
        except BaseException as error:  # let the other side finish, then raise
            errors.append(error)
            with baton:
                state["turn"] = len(turns)
                baton.notify_all()

    gc.collect()
    gc.disable()
    threads = [threading.Thread(target=fit, args=(j,)) for j in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gc.enable()
    if errors:
        raise errors[0]
    timed = list(zip(turns, times, strict=True))[2 * WARMUP:]
    return {"pairs": [{"first": sides[timed[k][0]], "a": timed[k + timed[k][0]][1],
                       "b": timed[k + 1 - timed[k][0]][1]} for k in range(0, len(timed), 2)]}


def alone(side, model_name, batch, size, xla, precision):
    """Runs in the subprocess: one side alone, for its peak RSS."""
    setup(precision)
    model, callbacks, data = build(side, model_name, batch, size, xla)
    model.fit(data, steps_per_epoch=5, epochs=1, verbose=0, callbacks=callbacks)
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(*args):
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def t975(df):
    """Student t's 0.975 quantile (Cornish-Fisher expansion; within 1e-4 for df >= 9),
    written here because the environment has no SciPy."""
    z = 1.959963985
    terms = [z, (z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
             (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160]
    return sum(term / df**k for k, term in enumerate(terms))


def summarise(pairs, batch):
    """Geometric mean of the pair ratios, its 95% t-interval, and the spreads."""
    logs = [math.log(p["b"] / p["a"]) for p in pairs]  # log(A's images/s over B's)
    n, mean, sd = len(logs), statistics.fmean(logs), statistics.stdev(logs)
    half = t975(n - 1) * sd / math.sqrt(n)
    centred = [x - mean for x in logs]
    lag1 = (sum(p * q for p, q in zip(centred[:-1], centred[1:], strict=True))
            / sum(x * x for x in centred))
    rates_b = [batch / p["b"] for p in pairs]
    return {"ratio": math.exp(mean), "ci95": [math.exp(mean - half), math.exp(mean + half)],
            "pairs": n, "sd_log_ratio": sd, "lag1_autocorrelation": lag1,
            "a_images_per_sec": batch / statistics.median(p["a"] for p in pairs),
            "b_images_per_sec": statistics.median(rates_b),
            "b_range": [min(rates_b), max(rates_b)]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/step_throughput.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--variants", default="float32,mixed_bfloat16",
                        help="float32, mixed_bfloat16, xla (float32 with jit_compile)")
    parser.add_argument("--sides", default="package,plain",
                        help="A,B: ratio = A/B; plain,plain is the A/A check")
    parser.add_argument("--pairs", type=int, help="step pairs (default per case)")
    parser.add_argument("--memory_rounds", type=int, default=1,
                        help="fresh processes per side for peak RSS (package,plain only)")
    args = parser.parse_args()
    if args.child:
        kind, *rest = json.loads(args.child)
        print(json.dumps((interleaved if kind == "interleaved" else alone)(*rest)))
        return
    sides = args.sides.split(",")
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d %H:%M"), "sides": sides, "rows": []}
    for case in args.cases.split(","):
        model_name, batch, size, pairs = CASES[case]
        pairs = args.pairs or pairs
        for variant in args.variants.split(","):
            xla = variant == "xla"
            precision = variant if variant.startswith("mixed") else "float32"
            began = time.perf_counter()
            run = child("interleaved", sides, model_name, batch, size, pairs, xla, precision)
            row = {"case": case, "variant": variant, **summarise(run["pairs"], batch),
                   "seconds": round(time.perf_counter() - began)}
            line = (f"{case:20s} {variant:15s} {sides[0]}/{sides[1]} {row['ratio']:.4f} "
                    f"[{row['ci95'][0]:.4f}, {row['ci95'][1]:.4f}] ({pairs} step pairs; "
                    f"{sides[1]} {row['b_range'][0]:.1f}–{row['b_range'][1]:.1f} img/s, "
                    f"sd log ratio {row['sd_log_ratio']:.4f}, {row['seconds']} s)")
            if sides == ["package", "plain"] and args.memory_rounds:
                for side in sides:
                    runs = [child("alone", side, model_name, batch, size, xla, precision)
                            for _ in range(args.memory_rounds)]
                    row[f"{side}_peak_rss_mb"] = statistics.median(
                        r["peak_rss_mb"] for r in runs)
                row["memory_ratio"] = row["package_peak_rss_mb"] / row["plain_peak_rss_mb"]
                line += (f"  peak RSS {row['plain_peak_rss_mb']:.0f} / "
                         f"{row['package_peak_rss_mb']:.0f} MB")
            row["step_seconds"] = run["pairs"]
            results["rows"].append(row)
            print(line, flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
