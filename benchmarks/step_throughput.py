"""Training-step throughput and peak memory: the package against plain Keras, same run.

    .venv/bin/python benchmarks/step_throughput.py [--out=benchmarks/results/step_throughput.json]

Each measurement runs in a fresh subprocess (so peak RSS is its own) and fits a fixed
synthetic batch for a few steps after one warmup step:
- package: the trainer's model (`models.resnet` / `models.cifar_resnet`), `MomentumSGD`
  behind the Horovod bridge (`distributed_optimizer`, one process), the trainer's loss,
  metrics and callbacks (`StopOnNonFiniteLoss`, `AverageBatchNormStatistics`);
- plain Keras: `keras.applications.ResNet50(weights=None)` / the same CIFAR ResNet-20
  with `keras.optimizers.SGD(momentum=0.9)`, accuracy metric, no callbacks.
Ratio = package images/s ÷ plain images/s (≥ 1.0: the package adds nothing). This
machine's throughput jumps between levels from one process to the next (a shared VM), so
the sides alternate for --repeats rounds, each leading every other round, and the medians
are compared; `round_ratios` gives each round's ratio, for the spread.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    # name: (model, batch, image size, timed steps)
    "resnet50_b32": ("resnet50", 32, 224, 3),
    "cifar_resnet20_b128": ("cifar_resnet20", 128, 32, 20),
}


def measure(side, model_name, batch, size, steps, xla, precision):
    """Runs in the subprocess: builds one side, fits, returns images/s and peak RSS."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    if precision != "float32":
        keras.mixed_precision.set_global_policy(precision)
    classes = 1000 if model_name == "resnet50" else 10
    x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, classes, batch).astype("int32")
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    callbacks = []
    if side == "package":
        from tf_largebatch import callbacks as cbs
        from tf_largebatch import distributed, models, optimizers

        distributed.init()
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

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch_index, logs=None):
            if batch_index == 0:
                self.start = time.perf_counter()
            self.end = time.perf_counter()

    timer = Timer()
    model.fit(data, steps_per_epoch=steps + 1, epochs=1, verbose=0,
              callbacks=callbacks + [timer])
    rate = steps * batch / (timer.end - timer.start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images_per_sec": rate, "peak_rss_mb": peak_mb}


def run_case(side, case, xla, precision):
    cmd = [sys.executable, __file__, "--child", json.dumps([side, *CASES[case], xla, precision])]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{side} {case} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/step_throughput.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--variants", default="float32,xla,mixed_bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": []}
    for case in args.cases.split(","):
        for variant in args.variants.split(","):
            xla = variant == "xla"
            precision = variant if variant.startswith("mixed") else "float32"
            row = {"case": case, "variant": variant}
            samples = {"plain": [], "package": []}
            for round_index in range(args.repeats):
                sides = list(samples) if round_index % 2 == 0 else list(samples)[::-1]
                for side in sides:  # each side leads every other round
                    samples[side].append(run_case(side, case, xla, precision))
            for side, runs in samples.items():
                rates = [r["images_per_sec"] for r in runs]
                row[side] = {"images_per_sec": statistics.median(rates),
                             "all_images_per_sec": rates,
                             "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs)}
            row["ratio"] = row["package"]["images_per_sec"] / row["plain"]["images_per_sec"]
            pairs = zip(samples["package"], samples["plain"], strict=True)
            row["round_ratios"] = [p["images_per_sec"] / q["images_per_sec"] for p, q in pairs]
            row["memory_ratio"] = row["package"]["peak_rss_mb"] / row["plain"]["peak_rss_mb"]
            results["rows"].append(row)
            print(f"{case:22s} {variant:15s} plain {row['plain']['images_per_sec']:8.2f} img/s "
                  f"package {row['package']['images_per_sec']:8.2f} img/s ratio "
                  f"{row['ratio']:.3f} (rounds {min(row['round_ratios']):.3f}–"
                  f"{max(row['round_ratios']):.3f})  peak RSS {row['plain']['peak_rss_mb']:.0f} / "
                  f"{row['package']['peak_rss_mb']:.0f} MB", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
