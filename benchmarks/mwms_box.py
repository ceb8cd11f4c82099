"""The peer a TensorFlow user would pick: `tf.distribute.MultiWorkerMirroredStrategy` on the
same two hosts as benchmarks/hierarchical_box.py, the same allreduce and the same step.

    nice -n -10 .venv/bin/python benchmarks/mwms_box.py \\
        --out=benchmarks/results/mwms_box.json                  (as root; about 5 min)

The driver builds the box of 2 hosts (`launchers/cluster_box.sh up 2`, BOX=tlbbench) and
for each rate of `--rates` sets the rate between the hosts and starts 4 workers, 2 on each
host, each with its TF_CONFIG (RING collectives over gRPC, the communication MWMS uses on
CPUs). Each worker times, in alternating rounds after a barrier:

- the fused ResNet-50 gradient (one float32 tensor of 25,557,032 values) summed over the 4
  workers (`ReplicaContext.all_reduce`, in a `tf.function`, as a training step does);
- a ResNet-50 training step (Keras, 32×32 images, n = `--batch` per worker, SGD with
  momentum 0.9): `strategy.run` of forward, backward and `optimizer.apply_gradients`,
  which sums the gradients over the workers (Keras 3's TensorFlow optimizer does the
  all-reduce under a strategy).

Keras 3's `fit` is not used: under MWMS it does not run on TF 2.18 without patches
(keras-team/keras#20585); a custom loop is what such a user writes instead.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOX_SH = os.path.join(ROOT, "launchers", "cluster_box.sh")
RESNET50_VALUES = 25_557_032
PORT = 23456


def worker(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    with strategy.scope():
        model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        reduction="sum_over_batch_size")
    x = tf.random.stateless_uniform([args.batch, 32, 32, 3], [index, 0])
    y = tf.random.stateless_uniform([args.batch], [index, 1], maxval=10, dtype=tf.int32)
    with strategy.scope():  # mirrored: a plain tensor has no device to reduce to
        fused = tf.Variable(tf.ones([RESNET50_VALUES], tf.float32), trainable=False)
        token = tf.Variable(tf.zeros([1]), trainable=False)
    workers = strategy.num_replicas_in_sync

    @tf.function
    def all_reduce(t):
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, t.read_value()))

    @tf.function
    def step():
        def replica():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True)) / workers
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss
        return strategy.run(replica)

    def barrier():
        all_reduce(token).numpy()

    step()  # traced
    all_reduce(fused)
    records = []
    for rate in args.rates.split(","):
        barrier()
        times = {"mwms_allreduce": [], "mwms_step": []}
        for _ in range(args.rounds):
            for name, run in (("mwms_allreduce", lambda: all_reduce(fused).numpy()),
                              ("mwms_step", lambda: step().numpy())):
                barrier()
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        if index == 0:
            summary = {"rate": rate, **{f"{name}_ms": statistics.median(t) * 1e3
                                        for name, t in times.items()}}
            records.append({"summary": summary, "times_s": times})
            print(json.dumps(summary), flush=True)
    if index == 0:
        with open(args.out, "w") as f:
            json.dump({"workers": workers, "batch": args.batch, "rounds": args.rounds,
                       "communication": "RING", "tensorflow": tf.__version__,
                       "keras": keras.__version__, "records": records}, f, indent=1)


def box(env, *args, check=True, **kw):
    return subprocess.run([BOX_SH, *map(str, args)], env=env, check=check, cwd=ROOT,
                          capture_output=True, text=True, **kw)


def driver(args):
    if os.geteuid() != 0:
        sys.exit("mwms_box.py: needs root (network namespaces)")
    name = "tlbbench"
    env = dict(os.environ, BOX=name, BOX_DIR=f"/tmp/{name}", TF_CPP_MIN_LOG_LEVEL="2")
    out = os.path.abspath(args.out)
    box(env, "up", 2)
    hosts = ["198.18.0.1", "198.18.0.2"]
    cluster = [f"{h}:{PORT + i}" for h in hosts for i in range(2)]
    merged, jobs = None, []
    try:
        for rate in args.rates.split(","):
            box(env, "shape", rate)  # before the workers connect (see hierarchical_box.py)
            print(f"link between the hosts: {rate}", flush=True)
            part = f"{out}.{rate}.part"
            jobs = [subprocess.Popen(
                [BOX_SH, "exec", str(1 + index // 2), "env", "TF_CONFIG=" + json.dumps(
                    {"cluster": {"worker": cluster}, "task": {"type": "worker",
                                                              "index": index}}),
                 os.path.join(ROOT, ".venv/bin/python"), os.path.abspath(__file__),
                 "--worker", f"--out={part}", f"--rates={rate}",
                 f"--rounds={args.rounds}", f"--batch={args.batch}"], env=env, cwd=ROOT)
                for index in range(len(cluster))]
            for job in jobs:
                job.wait(timeout=3600)
            if any(job.returncode for job in jobs):
                sys.exit(f"a worker failed: {[job.returncode for job in jobs]}")
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
        for job in jobs:
            if job.poll() is None:
                job.kill()
        box(env, "down", check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rates", default="off,2500mbit,1gbit,500mbit")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    (worker if args.worker else driver)(args)


if __name__ == "__main__":
    main()
