"""Does the gradient allreduce overlap backprop? Horovod's timeline, grouped against
per-gradient allreduce, and flat against hierarchical allreduce.

    nice .venv/bin/python benchmarks/allreduce_overlap.py \\
        [--out=benchmarks/results/allreduce_overlap.json] [--rounds=1] [--keep=DIR]

1. Ready profile (one process, no Horovod): ResNet-50 training steps that record the time
   t_loss at which the loss is ready and t_i at which gradient i is. For gradient i (a share
   s_i of the gradient bytes) x_i = (t_i - t_loss) / (max_j t_j - t_loss) is the fraction of
   backprop after which it is ready (median over the steps). Written as "profile", the
   input of `python -m tf_largebatch.plan --profile=...`.
2. `horovodrun -np 2 -H localhost:2 --gloo --timeline-filename=...` running
   `python -m tf_largebatch.train` (ResNet-50, synthetic data) with the per-gradient
   allreduce (the default) and with `--grouped_allreduce`, --rounds times, alternating.
3. `horovodrun -np 4 -H localhost:2,127.0.0.1:2 --gloo` (two virtual hosts of two
   workers): flat against `--hierarchical_allreduce` (the three phases on process sets).

From each timeline, per training step (the k-th collective of every gradient tensor is
step k; the first --skip_steps are left out):
- step time: the time between the first gradient seen in one step and in the next;
- share enqueued before the end of backprop: bytes of the gradients that Horovod saw
  enqueued in an earlier cycle than the last gradient of the step (more than half a cycle,
  0.5 ms, before it), over all gradient bytes; 1 - this is the measured tail fraction f;
- share reduced before the end of backprop: bytes whose allreduce had finished by then;
- exposed communication: from the last gradient seen to the end of the step's last allreduce.
"""

import argparse
import dataclasses
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int32": 4,
               "int64": 8, "uint8": 1, "int8": 1}
# Gradient collectives as the trainer names them: one allreduce per gradient (`grad<i>`), one
# grouped allreduce (`HorovodGroupedAllreduce_<inputs>_<i>of<n>`), or the three phases
# `grad<i>_host`, `grad<i>_cross` (local roots only), `grad<i>_bcast`.
FIRST_PHASE = r"(grad\d+|grad\d+_host|HorovodGroupedAllreduce_.*\d+of\d+)$"
DECILES = [i / 10 for i in range(1, 11)]


# ----------------------------------------------------------------------------- timeline


def read_trace(path):
    """The events of a Chrome-trace JSON array. Horovod's file may lack the closing bracket
    (and end in a comma or a cut event) when the job did not shut Horovod down cleanly."""
    with open(path) as f:
        text = f.read().strip()
    if not text.endswith("]"):
        text = text[:text.rfind("}") + 1] + "]"
    return json.loads(text)


@dataclasses.dataclass
class Collective:
    """One collective on one tensor; times in µs on the timeline's clock."""

    name: str
    seen: float  # NEGOTIATE_* began: the tensor was first seen enqueued, on any worker
    start: float | None = None
    end: float | None = None
    nbytes: int | None = None


def collectives(events):
    """{tensor name: [Collective, ...] in order} from Horovod's timeline events.

    Horovod writes one trace "process" per tensor name (a "process_name" metadata event);
    for each collective on that tensor: B NEGOTIATE_<OP> when the coordinator's cycle first
    sees it enqueued, E when every worker has, then B <OP> (nested phases) E, the outer E
    carrying its dtype and shape.
    """
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name" and "name" in e["args"]}
    out, stacks = defaultdict(list), defaultdict(list)
    for e in events:
        ph, label = e.get("ph"), e.get("name", "")
        name, stack = names.get(e.get("pid")), stacks[e.get("pid")]
        if name is None or ph not in ("B", "E"):  # M: metadata, X: a worker's request arrived
            continue
        if ph == "B":
            if label.startswith("NEGOTIATE_"):
                out[name].append(Collective(name, e["ts"]))
            elif not stack and out[name]:
                out[name][-1].start = e["ts"]
            stack.append(label)
        elif stack:
            label = stack.pop()
            if not stack and not label.startswith("NEGOTIATE_") and out[name]:
                op, args = out[name][-1], e.get("args", {})
                op.end = e["ts"]
                if "shape" in args:
                    count = 1
                    for dim in json.loads(args["shape"]):
                        count *= dim
                    op.nbytes = count * DTYPE_BYTES[args["dtype"]]
    return dict(out)


def training_steps(ops):
    """[[Collective of each gradient] for each step]. The gradients are the tensors whose
    first-phase name matches FIRST_PHASE and that have the most collectives (one per step;
    the batch-norm statistics averaged at the epoch's end have fewer); the k-th collective
    of each is step k. With the three-phase scheme a gradient ends with its last phase."""
    grads = {n: v for n, v in ops.items() if re.search(FIRST_PHASE, n)}
    if not grads:
        raise ValueError(f"no tensor in the timeline matches {FIRST_PHASE!r}")
    steps = max(len(v) for v in grads.values())
    grads = {n: v for n, v in grads.items() if len(v) == steps}
    for name, mine in grads.items():
        if name.endswith("_host"):
            for later in (name[:-len("host")] + "cross", name[:-len("host")] + "bcast"):
                for op, phase in zip(mine, ops.get(later, []), strict=False):
                    op.end = max(op.end, phase.end)
    return [[v[k] for v in grads.values()] for k in range(steps)]


def step_overlap(step, same_cycle_us=500.0):
    """Overlap of one step's gradient collectives with its backprop (see the module doc).

    Horovod's background thread stamps every tensor it finds enqueued in one cycle within
    well under a millisecond, and its cycles are HOROVOD_CYCLE_TIME (1 ms) apart, so a
    gradient seen more than `same_cycle_us` before the last one was enqueued before it."""
    first, last = min(op.seen for op in step), max(op.seen for op in step)
    total = sum(op.nbytes for op in step)
    span = last - first
    return {
        "share_enqueued_before_last": sum(op.nbytes for op in step
                                          if op.seen < last - same_cycle_us) / total,
        "share_reduced_before_last": sum(op.nbytes for op in step if op.end <= last) / total,
        "first_to_last_gradient_ms": span / 1e3,
        "exposed_ms": (max(op.end for op in step) - last) / 1e3,
        "profile": cumulative_deciles([((op.seen - first) / span if span else 1.0, op.nbytes)
                                       for op in step]),
    }


def cumulative_deciles(points):
    """Share of the bytes ready by each tenth of the time: points are (x in [0, 1], bytes)."""
    total = sum(b for _, b in points)
    return [sum(b for x, b in points if x <= d + 1e-9) / total for d in DECILES]


def analyse(timeline, skip_steps):
    """Step times and overlap of the steps after the first `skip_steps`, from one timeline."""
    steps = training_steps(collectives(read_trace(timeline)))
    starts = [min(op.seen for op in step) for step in steps]
    step_ms = [(b - a) / 1e3 for a, b in itertools.pairwise(starts[skip_steps:])]
    per_step = [step_overlap(step) for step in steps[skip_steps:]]
    median = {key: statistics.median(s[key] for s in per_step)
              for key in per_step[0] if key != "profile"}
    median["profile"] = [statistics.median(s["profile"][i] for s in per_step)
                         for i in range(len(DECILES))]
    return {"tensors": len(steps[0]), "gradient_bytes": sum(op.nbytes for op in steps[0]),
            "steps_timed": len(step_ms), "step_ms": step_ms,
            "median_step_ms": statistics.median(step_ms), "median": median,
            "per_step": [{k: v for k, v in s.items() if k != "profile"} for s in per_step]}


# ----------------------------------------------------------------------------- ready profile


def ready_profile(image_size, batch, steps, out):
    """Runs in a subprocess: ResNet-50 steps that stamp the time at which the loss and each
    gradient are ready; writes each gradient's median time fraction of backprop, its share
    of the bytes, and the cumulative share by tenths of backprop."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_largebatch import models

    model = models.resnet(50, input_shape=(image_size, image_size, 3))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, image_size, image_size, 3)),
                    tf.float32)
    y = tf.constant(np.random.default_rng(1).integers(0, 1000, batch), tf.int32)

    def stamp(tensor):
        """The time at which `tensor` is ready: a data dependency on one element of it. Not a
        `tf.timestamp()` under a control dependency: tf.function runs stateful ops in program
        order (variable order), so every stamp would wait for the stem's gradient, the last."""
        return tf.numpy_function(lambda _: np.float64(time.perf_counter()),
                                 [tf.reshape(tensor, [-1])[:1]], tf.float64, stateful=False)

    @tf.function
    def step():
        begin = stamp(x)
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        after_loss = stamp(loss)
        stamps = tf.stack([stamp(grad) for grad in tape.gradient(loss, variables)])
        return begin, after_loss, stamps

    fractions, backprop, forward = [], [], []
    for i in range(steps + 2):
        begin, after_loss, stamps = (t.numpy() for t in step())
        if i >= 2:  # tracing and the first run
            end = stamps.max()
            fractions.append((stamps - after_loss) / (end - after_loss))
            backprop.append(end - after_loss)
            forward.append(after_loss - begin)
    median = np.median(np.array(fractions), axis=0)
    nbytes = [int(np.prod(v.shape)) * 4 for v in variables]
    order = np.argsort(median, kind="stable")
    total = sum(nbytes)
    with open(out, "w") as f:
        json.dump({"image_size": image_size, "batch": batch, "steps": steps,
                   "backprop_ms": 1e3 * float(np.median(backprop)),
                   "forward_ms": 1e3 * float(np.median(forward)),
                   "time_fraction": [float(median[i]) for i in order],
                   "bytes_share": [nbytes[i] / total for i in order],
                   "variables": [variables[i].path for i in order],
                   "deciles": cumulative_deciles(list(zip(median, nbytes, strict=True)))}, f)


# ----------------------------------------------------------------------------- runs


def train_command(args, hosts, np_, timeline, log_dir, extra):
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    return [horovodrun, "-np", str(np_), "-H", hosts, "--gloo",
            f"--timeline-filename={timeline}", sys.executable, "-m", "tf_largebatch.train",
            "--dataset=synthetic", "--synthetic_examples=2048", "--model=resnet50",
            f"--image_size={args.image_size}", f"--per_worker_batch={args.batch}",
            "--epochs=1", f"--steps_per_epoch={args.steps}", "--eval_every=0",
            "--warmup=none", "--decay=constant", f"--log_dir={log_dir}", *extra]


VARIANTS = {
    # name: (hosts, processes, extra trainer flags)
    "overlapped": ("localhost:2", 2, []),
    "grouped": ("localhost:2", 2, ["--grouped_allreduce"]),
    "flat_np4": ("localhost:2,127.0.0.1:2", 4, []),
    "hierarchical_np4": ("localhost:2,127.0.0.1:2", 4, ["--hierarchical_allreduce"]),
}


def run(cmd, env, log):
    start = time.time()
    with open(log, "w") as f:
        result = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        with open(log) as f:
            sys.exit(f"{' '.join(cmd)} exited {result.returncode}:\n{f.read()[-4000:]}")
    return time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/allreduce_overlap.json")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="images per worker")
    parser.add_argument("--steps", type=int, default=12, help="training steps per run")
    parser.add_argument("--skip_steps", type=int, default=2,
                        help="first steps left out (tracing, warmup)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each variant; the variants alternate")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--no_ready_profile", action="store_true")
    parser.add_argument("--keep", help="folder to keep the timelines and logs in")
    parser.add_argument("--ready_profile_worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ready_profile_worker:
        size, batch, steps, out = args.ready_profile_worker
        ready_profile(int(size), int(batch), int(steps), out)
        return
    env = dict(os.environ, PYTHONPATH=os.getcwd(), TF_CPP_MIN_LOG_LEVEL="2")
    work = args.keep or tempfile.mkdtemp(prefix="allreduce_overlap.")
    os.makedirs(work, exist_ok=True)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_at_start": os.getloadavg()},
              "settings": {k: v for k, v in vars(args).items()
                           if k not in ("ready_profile_worker", "keep", "out")},
              "runs": []}
    if not args.no_ready_profile:
        path = os.path.join(work, "ready_profile.json")
        seconds = run([sys.executable, __file__, "--ready_profile_worker", str(args.image_size),
                       str(args.batch), str(args.steps), path], env,
                      os.path.join(work, "ready_profile.log"))
        with open(path) as f:
            result["profile"] = json.load(f)
        result["profile"]["wall_s"] = seconds
        print(f"ready profile: backprop {result['profile']['backprop_ms']:.0f} ms, bytes ready "
              f"by tenths of it {[round(d, 3) for d in result['profile']['deciles']]}")
    for round_ in range(args.rounds):
        for name in args.variants.split(","):
            hosts, np_, extra = VARIANTS[name]
            tag = f"{name}_{round_}"
            timeline = os.path.join(work, f"{tag}.timeline.json")
            cmd = train_command(args, hosts, np_, timeline, os.path.join(work, tag), extra)
            seconds = run(cmd, env, os.path.join(work, f"{tag}.log"))
            stats = analyse(timeline, args.skip_steps)
            result["runs"].append({"variant": name, "round": round_, "processes": np_,
                                   "wall_s": seconds, "command": " ".join(cmd[1:]), **stats})
            m = stats["median"]
            print(f"{tag}: median step {stats['median_step_ms']:.0f} ms, enqueued before the "
                  f"last gradient {m['share_enqueued_before_last']:.3f}, reduced before it "
                  f"{m['share_reduced_before_last']:.3f}, exposed {m['exposed_ms']:.0f} ms "
                  f"({seconds:.0f} s)", flush=True)
    result["summary"] = summarise(result["runs"])
    if "overlapped" in result["summary"]:
        result["tail_fraction"] = 1 - result["summary"]["overlapped"]["share_enqueued_before_last"]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["summary"], indent=1))


def summarise(runs):
    """Per variant: medians over all its timed steps (all rounds); then the ratios."""
    out = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        steps = [s for r in mine for s in r["per_step"]]
        out[name] = {"median_step_ms": statistics.median(t for r in mine for t in r["step_ms"]),
                     "median_step_ms_per_round": [r["median_step_ms"] for r in mine],
                     **{key: statistics.median(s[key] for s in steps) for key in steps[0]}}
    for slow, fast in (("grouped", "overlapped"), ("hierarchical_np4", "flat_np4")):
        if slow in out and fast in out:
            out[f"step_ratio_{slow}_over_{fast}"] = (out[slow]["median_step_ms"]
                                                     / out[fast]["median_step_ms"])
    return out


if __name__ == "__main__":
    main()
