"""Times `hvd.allreduce` (TensorFlow eager, float32) and fits the α–β model to it.

    .venv/bin/horovodrun -np 2 -H localhost:2 --gloo \\
      .venv/bin/python benchmarks/allreduce_calibration.py --out=runs/allreduce.json

Sizes 1 KiB to 64 MiB in powers of 4 take turns: `--warmup` untimed rounds over all
sizes, then `--repeats` timed rounds, each allreduce after a barrier (a 1-element
allreduce); rank 0 keeps the median, minimum and maximum of its own times. Rank 0 then
fits α and β of the ring model to the medians of all sizes but the second largest
(`tf_largebatch.plan.fit_link`), and the same to the minima (the least disturbed runs
on a shared machine), prints the table and the held-out errors, and writes everything
to --out as JSON.
"""

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import horovod  # noqa: E402
import horovod.tensorflow as hvd  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_largebatch.plan import ALGORITHMS, fit_link, format_table  # noqa: E402

SIZES = [1024 * 4**k for k in range(9)]  # 1 KiB ... 64 MiB


def time_allreduces(sizes, warmup, repeats):
    """{size: [seconds, ...]}; the sizes take turns, so a burst of load elsewhere on the
    machine hits all of them alike rather than one."""
    tensors = {n: tf.ones([n // 4], tf.float32) for n in sizes}
    token = tf.zeros([1], tf.float32)
    times = {n: [] for n in sizes}
    for round_ in range(warmup + repeats):
        for n, x in tensors.items():
            hvd.allreduce(token, op=hvd.Sum)  # barrier: both ranks start together
            start = time.perf_counter()
            hvd.allreduce(x, op=hvd.Sum)  # eager: returns once the reduction is done
            if round_ >= warmup:
                times[n].append(time.perf_counter() - start)
    return times


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return names[0] if names else platform.processor()
    except OSError:
        return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON file written by rank 0")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--algorithm", default="ring", choices=sorted(ALGORITHMS),
                    help="model fitted (all coincide for 2 processes)")
    args = ap.parse_args()
    if args.warmup < 0 or args.repeats < 1:
        ap.error("--warmup must be ≥ 0 and --repeats ≥ 1")

    hvd.init()
    times = time_allreduces(SIZES, args.warmup, args.repeats)
    rows = [{"bytes": n, "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)}
            for n, t in times.items()]
    if hvd.rank() != 0:
        return

    p = hvd.size()
    algorithm = ALGORITHMS[args.algorithm]
    sizes = [r["bytes"] for r in rows]
    fits = {stat: fit_link(sizes, [r[f"{stat}_s"] for r in rows], algorithm=algorithm, p=p)
            for stat in ("median", "min")}
    print(format_table(
        ["bytes", "median ms", "min ms", "max ms", "model ms (median fit)", "GB/s (b / median)"],
        [[r["bytes"], f"{r['median_s'] * 1e3:.3f}", f"{r['min_s'] * 1e3:.3f}",
          f"{r['max_s'] * 1e3:.3f}",
          f"{algorithm(p, r['bytes'], fits['median'].link).seconds * 1e3:.3f}",
          f"{r['bytes'] / r['median_s'] / 1e9:.3f}"] for r in rows]))
    for stat, fit in fits.items():
        print(f"fit to {stat}s ({args.algorithm}, p = {p}, all sizes but "
              f"{fit.held_out_bytes:.0f} B): α = {fit.link.latency_s * 1e6:.1f} µs, "
              f"β = {fit.link.bandwidth_bytes_per_s / 1e9:.3f} GB/s; held out: measured "
              f"{fit.held_out_seconds * 1e3:.3f} ms, predicted {fit.predicted_seconds * 1e3:.3f} "
              f"ms, error {fit.relative_error:+.1%}")
    result = {
        "processes": p, "backend": "gloo", "dtype": "float32", "warmup": args.warmup,
        "repeats": args.repeats, "rows": rows,
        "fits": {stat: {"algorithm": args.algorithm, "alpha_s": fit.link.latency_s,
                        "beta_bytes_per_s": fit.link.bandwidth_bytes_per_s,
                        "held_out_bytes": fit.held_out_bytes,
                        "held_out_measured_s": fit.held_out_seconds,
                        "held_out_predicted_s": fit.predicted_seconds,
                        "held_out_relative_error": fit.relative_error}
                 for stat, fit in fits.items()},
        "machine": {"cpu": _cpu_model(), "cpus": os.cpu_count(), "system": platform.platform()},
        "versions": {"horovod": horovod.__version__, "tensorflow": tf.__version__},
        "env": {k: os.environ[k] for k in ("HOROVOD_CYCLE_TIME", "HOROVOD_FUSION_THRESHOLD")
                if k in os.environ},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
