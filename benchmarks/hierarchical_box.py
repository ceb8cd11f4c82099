"""Flat against hierarchical allreduce across two real hosts, at several link rates.

    nice -n -10 .venv/bin/python benchmarks/hierarchical_box.py \\
        --out=benchmarks/results/hierarchical_box.json          (as root; about 15 min)

The driver builds a box of 2 hosts (`launchers/cluster_box.sh up 2`, BOX=tlbbench) and
starts one horovodrun job across them for each link rate, 2 processes per host (Gloo, over
SSH), after setting the rate between the hosts (`cluster_box.sh shape`, tc tbf on each
host's link; "off" is the bare veth). Rank 0 writes one JSON record per rate:

- the links measured as `tf_largebatch.auto_allreduce` measures them for ResNet-50's
  fused 47 MB messages (allreduces and broadcasts inside a host, allreduces between the
  hosts' first ranks, at 256 KiB, 12 MB and 47 MB), fitted to α and β
  (`auto_allreduce.fit_links`): the planner's inputs, measured in the box;
- the fused ResNet-50 gradient (one float32 tensor of 25,557,032 values, 102 MB): flat
  (`hvd.allreduce`) and hierarchical (`distributed.ThreePhaseAllreduce`) alternating,
  `--rounds` pairs; the achieved rate between hosts (bytes each inter-host hop carries per
  direction / time: 2(P-1)/P·b for the flat ring over P = 4 ranks, b for the hierarchical
  one's phase 2) against the shaped rate; the planner's prediction (`plan.flat_collective`,
  `plan.three_phase` with the fitted links);
- a ResNet-50 training step (Keras, 32×32 images, n = `--batch` per worker, SGD): flat,
  hierarchical, and the scheme `--allreduce=auto` picks (`auto_allreduce.choose`, as the
  trainer calls it), the three traced separately and timed in alternating rounds; medians
  with a 95% interval of each ratio to flat (geometric mean of the per-round ratios).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]  # this checkout's package first
from step_throughput import t975  # noqa: E402

BOX_SH = os.path.join(ROOT, "launchers", "cluster_box.sh")
RESNET50_VALUES = 25_557_032  # Keras ResNet50, 1000 classes: its trainable and BN values


def ratio_interval(pairs):
    """Geometric mean of a/b over the pairs, with its 95% t-interval."""
    logs = [math.log(a / b) for a, b in pairs]
    mean, n = statistics.fmean(logs), len(logs)
    half = t975(n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


# ---------------------------------------------------------------------------- the workers
def worker(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow as hvd
    import keras
    import tensorflow as tf

    from tf_largebatch import auto_allreduce, distributed, plan

    context = distributed.init("auto")
    assert context.allreduce == "auto", context  # several hosts
    three = distributed.ThreePhaseAllreduce()
    p, g = three.hosts, len(three.host_ranks)
    token = tf.zeros([1])

    def barrier():
        hvd.allreduce(token, op=hvd.Sum, name="barrier")

    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=False)
    x = tf.random.stateless_uniform([args.batch, 32, 32, 3], [hvd.rank(), 0])
    y = tf.random.stateless_uniform([args.batch], [hvd.rank(), 1], maxval=10, dtype=tf.int32)

    def make_step(three_phase):
        distributed._three_phase = three_phase  # read while the step is traced

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = distributed.allreduce_gradients(tape.gradient(loss,
                                                                 model.trainable_variables))
            optimizer.apply(grads, model.trainable_variables)
            return loss

        step().numpy()  # traced now, with this scheme
        distributed._three_phase = None
        return step

    nbytes = auto_allreduce.gradient_bytes(model.trainable_variables)
    messages = plan.fused_messages(nbytes, len(model.trainable_variables), 64 * 1024 * 1024)
    fused = tf.ones([RESNET50_VALUES], tf.float32)
    fused_bytes = RESNET50_VALUES * 4
    records, steps = [], {}
    for rate in args.rates.split(","):
        barrier()
        links = auto_allreduce.measure_links(  # what the trainer's auto measures
            three, auto_allreduce.sizes_for(nbytes / messages))
        barrier()
        choice = auto_allreduce.choose(three, nbytes, messages)  # measures again, as it does
        if not records:
            steps = {"flat": make_step(None), "hierarchical": make_step(three)}
        steps["auto"] = make_step(three if choice.scheme == "hierarchical" else None)
        # the three phases of the hierarchical allreduce, each alone (rank 0 is a root)
        phases = (("host_allreduce", lambda: hvd.allreduce(
                      fused, op=hvd.Sum, process_set=three.host_set)),
                  ("roots_allreduce", lambda: three.is_local_root and hvd.allreduce(
                      fused, op=hvd.Sum, process_set=three.roots_set)),
                  ("host_broadcast", lambda: hvd.broadcast(
                      fused, three.local_root, process_set=three.host_set)))
        times = {"flat_allreduce": [], "hierarchical_allreduce": [],
                 **{name: [] for name, _ in phases}, **{name: [] for name in steps}}
        for _ in range(args.rounds):
            for name, run in (("flat_allreduce", lambda: hvd.allreduce(fused, op=hvd.Sum)),
                              ("hierarchical_allreduce", lambda: three.sum(fused, "fused")),
                              *phases, *((n, lambda s=s: s().numpy()) for n, s in steps.items())):
                barrier()
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        if hvd.rank() == 0:
            records.append(summarise(rate, times, links, three, fused_bytes, nbytes,
                                     messages, choice))
            print(json.dumps(records[-1]["summary"]), flush=True)
    if hvd.rank() == 0:
        with open(args.out, "w") as f:
            json.dump({"processes": hvd.size(), "hosts": p, "per_host": g,
                       "batch": args.batch, "rounds": args.rounds,
                       "records": records}, f,
                      indent=1)


def summarise(rate, times, links, three, fused_bytes, nbytes, messages, choice):
    from tf_largebatch import auto_allreduce, plan

    p, g = three.hosts, len(three.host_ranks)
    inter_link, intra_link, _, broadcast_link = auto_allreduce.fit_links(three, links)
    flat_s = statistics.median(times["flat_allreduce"])
    hier_s = statistics.median(times["hierarchical_allreduce"])
    predicted_flat = plan.flat_collective(p, g, fused_bytes, inter_link, intra_link).seconds
    predicted_hier = plan.three_phase(p, g, fused_bytes, inter_link, intra_link,
                                      broadcast_link).seconds
    ranks = p * g
    shaped = None if rate == "off" else float(rate.rstrip("gbit")) if rate.endswith(
        "gbit") else float(rate.rstrip("mbit")) / 1000

    def ratio(name):
        r, lo, hi = ratio_interval(list(zip(times[name], times["flat"], strict=True)))
        return {"ratio_to_flat": r, "ci95": [lo, hi]}

    summary = {
        "rate": rate, "shaped_gbit_s": shaped,
        "inter_link": {"alpha_us": inter_link.latency_s * 1e6,
                       "gbit_s": 8 * inter_link.bandwidth_bytes_per_s / 1e9},
        "intra_link": {"alpha_us": intra_link.latency_s * 1e6,
                       "gbit_s": 8 * intra_link.bandwidth_bytes_per_s / 1e9},
        "broadcast_link": {"alpha_us": broadcast_link.latency_s * 1e6,
                           "gbit_s": 8 * broadcast_link.bandwidth_bytes_per_s / 1e9},
        "fused_allreduce_ms": {"flat": flat_s * 1e3, "hierarchical": hier_s * 1e3,
                               "ratio": hier_s / flat_s,
                               "predicted_flat": predicted_flat * 1e3,
                               "predicted_hierarchical": predicted_hier * 1e3,
                               "predicted_ratio": predicted_hier / predicted_flat},
        "phases_ms": {name: statistics.median(times[name]) * 1e3
                      for name in ("host_allreduce", "roots_allreduce", "host_broadcast")},
        "predicted_phases_ms": {
            "host_allreduce": plan.collective_ring(g, fused_bytes, intra_link).seconds * 1e3,
            "roots_allreduce": plan.collective_ring(p, fused_bytes, inter_link).seconds * 1e3,
            "host_broadcast": plan.broadcast(g, fused_bytes, broadcast_link).seconds * 1e3},
        "achieved_inter_gbit_s": {
            "flat": 8 * 2 * (ranks - 1) / ranks * fused_bytes / flat_s / 1e9,
            "roots_allreduce": 8 * fused_bytes / statistics.median(times["roots_allreduce"]) / 1e9},
        "step_ms": {name: statistics.median(times[name]) * 1e3
                    for name in ("flat", "hierarchical", "auto")},
        "step_vs_flat": {name: ratio(name) for name in ("hierarchical", "auto")},
        "auto": {"scheme": choice.scheme, "reason": choice.reason,
                 "gradient_mb": nbytes / 1e6, "messages": messages},
    }
    return {"summary": summary, "times_s": times, "link_medians_s": links}


def box(env, *args, check=True):
    return subprocess.run([BOX_SH, *map(str, args)], env=env, check=check, cwd=ROOT,
                          capture_output=True, text=True)


def driver(args):
    if os.geteuid() != 0:
        sys.exit("hierarchical_box.py: needs root (network namespaces)")
    name = "tlbbench"
    env = dict(os.environ, BOX=name, BOX_DIR=f"/tmp/{name}", TF_CPP_MIN_LOG_LEVEL="2",
               PATH=os.path.join(ROOT, ".venv/bin") + ":" + os.environ["PATH"])
    out = os.path.abspath(args.out)
    box(env, "up", 2)
    merged = None
    try:
        hostfile = os.path.join(env["BOX_DIR"], "hostfile")
        with open(hostfile, "w") as f:
            f.write(f"{name}-h1 slots=2\n{name}-h2 slots=2\n")
        for rate in args.rates.split(","):
            # One job per rate, the rate set before it starts: TCP connections that live
            # through a rate change (BBR, tc tbf) fell to about 1 MB/s here.
            box(env, "shape", rate)
            print(f"link between the hosts: {rate}", flush=True)
            part = f"{out}.{rate}.part"
            subprocess.run(
                [BOX_SH, "exec", "1", os.path.join(ROOT, ".venv/bin/horovodrun"), "-np", "4",
                 "-hostfile", hostfile, os.path.join(ROOT, ".venv/bin/python"),
                 os.path.abspath(__file__), "--worker",
                 f"--out={part}", f"--rates={rate}", f"--rounds={args.rounds}",
                 f"--batch={args.batch}"], env=env, cwd=ROOT, check=True, timeout=3600)
            with open(part) as f:
                result = json.load(f)
            os.remove(part)
            if merged is None:
                merged = result
            else:
                merged["records"] += result["records"]
        with open(out, "w") as f:
            json.dump(merged, f, indent=1)
        print(f"wrote {out}")
    finally:
        box(env, "down", check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rates", default="off,2500mbit,1gbit,500mbit",
                    help="tc rates between the hosts, in turn ('off': the bare veth)")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds per rate")
    ap.add_argument("--batch", type=int, default=2, help="n, images per worker and step")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    (worker if args.worker else driver)(args)


if __name__ == "__main__":
    main()
