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

From each timeline (read by `tf_largebatch.timeline`), per training step (the k-th
collective of every gradient tensor is step k; the first --skip_steps are left out):
- step time: the time between the first gradient seen in one step and in the next;
- share enqueued before the end of backprop: bytes of the gradients that Horovod saw
  enqueued in an earlier cycle than the last gradient of the step (more than half a cycle,
  0.5 ms, before it), over all gradient bytes; 1 - this is the measured tail fraction f;
- share reduced before the end of backprop: bytes whose allreduce had finished by then;
- exposed communication: from the last gradient seen to the end of the step's last allreduce.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from tf_largebatch.timeline import analyse, cumulative_deciles

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
