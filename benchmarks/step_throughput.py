"""Training-step throughput and peak memory: the package against plain Keras, one process.

    .venv/bin/python benchmarks/step_throughput.py [--cases=...] [--variants=...] [--out=...]

The two sides, on a fixed synthetic batch:
- package: the trainer's model (`models.resnet` v1 / `models.cifar_resnet`), `MomentumSGD`
  behind the Horovod bridge (`distributed_optimizer`, one process), the trainer's loss,
  metrics and callbacks (`StopOnNonFiniteLoss`, `AverageBatchNormStatistics`);
- plain Keras: `keras.applications.ResNet50(weights=None)` / the same CIFAR ResNet-20
  with `keras.optimizers.SGD(momentum=0.9)`, accuracy metric, no callbacks.

Throughput. This VM's speed jumps between levels, from one process to the next and within
a process, so both sides are built and compiled in one process (one per case and variant)
and timed in short alternating windows: in pair i, `model.fit(steps_per_epoch=W + 1)` of
side A then of side B (B first in every other pair). Each window is timed by a callback
from the end of its first step to the end of its last, so the fit call's own setup and the
first step after the switch are left out, the same for both sides; rate = W·batch / time.
With r_i = rate_A,i / rate_B,i, the ratio is the geometric mean exp(mean(log r_i)) and its
95% interval exp(mean ± t(0.975, n−1)·sd(log r)/√n) (Student t on the n pairs' log ratios).
Level jumps slower than a pair cancel in r_i; `windows` keeps every window's rate and step
times. Other processes' bursts lengthen single steps, so the same is also computed from
each window's median step time (r_i = median step B / median step A): the typical step's
ratio, which such bursts move far less; on a quiet machine both agree.
`--sides=plain,plain` (or package,package) is the A/A check: two separate models of one
side, same procedure; its interval must hold 1.0. Horovod is initialised once for the
process, so its idle background thread runs during both sides' windows.

Memory needs a process of its own: each side is also fitted alone in a fresh subprocess
(`--memory_rounds` times) for its peak RSS; memory does not drift, its rate is not used.
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
import time

CASES = {
    # name: (model, batch, image size, steps per window W, pairs)
    "resnet50_b32": ("resnet50", 32, 224, 3, 20),
    "cifar_resnet20_b128": ("cifar_resnet20", 128, 32, 8, 40),
}


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


def window(built, steps):
    """Fits steps + 1 steps; the times from the end of each step to the end of the next."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch_index, logs=None):
            self.ends.append(time.perf_counter())

    model, callbacks, data = built
    timer = Timer()  # last, so that the side's own callbacks are inside the timed steps
    gc.collect()
    model.fit(data, steps_per_epoch=steps + 1, epochs=1, verbose=0,
              callbacks=callbacks + [timer])
    return [b - a for a, b in zip(timer.ends[:-1], timer.ends[1:], strict=True)]


def setup(precision):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from tf_largebatch import distributed

    if precision != "float32":
        keras.mixed_precision.set_global_policy(precision)
    distributed.init()  # for the package side; one process, nothing is exchanged


def interleaved(sides, model_name, batch, size, steps, pairs, xla, precision):
    """Runs in the subprocess: both sides, alternating windows; every window's rate."""
    setup(precision)
    built = [build(side, model_name, batch, size, xla) for side in sides]
    for _ in range(2):  # tracing, then warm caches; not timed
        for b in built:
            window(b, steps)
    start, windows = time.perf_counter(), []
    for i in range(pairs):
        order = (0, 1) if i % 2 == 0 else (1, 0)  # A leads the even pairs, B the odd ones
        times = [[], []]
        for j in order:
            times[j] = window(built[j], steps)
        windows.append({"t": round(time.perf_counter() - start, 2), "first": sides[order[0]],
                        "a": steps * batch / sum(times[0]), "b": steps * batch / sum(times[1]),
                        "a_steps": times[0], "b_steps": times[1]})
    return {"windows": windows}


def alone(side, model_name, batch, size, steps, xla, precision):
    """Runs in the subprocess: one side alone, for its peak RSS."""
    setup(precision)
    times = window(build(side, model_name, batch, size, xla), steps)
    return {"images_per_sec": steps * batch / sum(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(*args):
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def t975(df):
    """Student t's 0.975 quantile (Cornish-Fisher expansion; within 1e-4 for df >= 9)."""
    z = 1.959963985
    terms = [z, (z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
             (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160]
    return sum(term / df**k for k, term in enumerate(terms))


def interval(logs):
    """exp of the mean of `logs` and of its 95% t-interval; sd; lag-1 autocorrelation."""
    n, mean, sd = len(logs), statistics.fmean(logs), statistics.stdev(logs)
    half = t975(n - 1) * sd / math.sqrt(n)
    centred = [x - mean for x in logs]
    lag1 = (sum(p * q for p, q in zip(centred[:-1], centred[1:], strict=True))
            / sum(x * x for x in centred))
    return math.exp(mean), [math.exp(mean - half), math.exp(mean + half)], sd, lag1


def summarise(windows):
    """Both estimators' ratios with their 95% intervals, and the spreads."""
    ratio, ci95, sd, lag1 = interval([math.log(w["a"] / w["b"]) for w in windows])
    median = interval([math.log(statistics.median(w["b_steps"]) / statistics.median(w["a_steps"]))
                       for w in windows])
    rates_b = [w["b"] for w in windows]
    return {"ratio": ratio, "ci95": ci95, "pairs": len(windows), "sd_log_ratio": sd,
            "lag1_autocorrelation": lag1, "median_step_ratio": median[0],
            "median_step_ci95": median[1], "median_step_sd_log_ratio": median[2],
            "a_images_per_sec": statistics.median(w["a"] for w in windows),
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
    parser.add_argument("--window", type=int, help="timed steps per window (default per case)")
    parser.add_argument("--pairs", type=int, help="window pairs (default per case)")
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
        model_name, batch, size, steps, pairs = CASES[case]
        steps, pairs = args.window or steps, args.pairs or pairs
        for variant in args.variants.split(","):
            xla = variant == "xla"
            precision = variant if variant.startswith("mixed") else "float32"
            began = time.perf_counter()
            run = child("interleaved", sides, model_name, batch, size, steps, pairs, xla,
                        precision)
            row = {"case": case, "variant": variant, "window_steps": steps,
                   **summarise(run["windows"]),
                   "seconds": round(time.perf_counter() - began)}
            line = (f"{case:20s} {variant:15s} {sides[0]}/{sides[1]} {row['ratio']:.4f} "
                    f"[{row['ci95'][0]:.4f}, {row['ci95'][1]:.4f}], median step "
                    f"{row['median_step_ratio']:.4f} [{row['median_step_ci95'][0]:.4f}, "
                    f"{row['median_step_ci95'][1]:.4f}] ({pairs} pairs of {steps} "
                    f"steps; {sides[1]} {row['b_range'][0]:.1f}–{row['b_range'][1]:.1f} img/s, "
                    f"sd log ratio {row['sd_log_ratio']:.4f}, {row['seconds']} s)")
            if sides == ["package", "plain"] and args.memory_rounds:
                for side in sides:
                    runs = [child("alone", side, model_name, batch, size, steps, xla,
                                  precision) for _ in range(args.memory_rounds)]
                    row[f"{side}_peak_rss_mb"] = statistics.median(
                        r["peak_rss_mb"] for r in runs)
                row["memory_ratio"] = row["package_peak_rss_mb"] / row["plain_peak_rss_mb"]
                line += (f"  peak RSS {row['plain_peak_rss_mb']:.0f} / "
                         f"{row['package_peak_rss_mb']:.0f} MB")
            row["windows"] = run["windows"]
            results["rows"].append(row)
            print(line, flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
