"""launchers/slurm.sbatch under a real SLURM: a job preempted three times (mid-epoch, during
validation, and ahead of its time limit) finishes by itself, logs every epoch once and ends
where an uninterrupted run ends.

The module's fixture starts a one-node cluster of its own (munged, slurmctld, slurmd on this
host, with its own key, socket, ports and state in a temporary folder; SLURM_CONF points
the commands at it) and stops it at the end. It needs SLURM and munge installed
(launchers/install_test_tools.sh, which `make test` runs) and root (slurmd starts the jobs).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, horovodrun, slurm_conf

pytestmark = pytest.mark.integration

SBATCH = ROOT / "launchers/slurm.sbatch"
PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"  # Debian puts the daemons in sbin
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "squeue", "scancel", "sinfo")
# The demo (configs/demo.cfg: 2 processes of 32 images, CIFAR ResNet-20 on generated discs)
# shortened to 2 epochs of 8 steps. At 96 pixels (10 classes, as at 32) the 256 validation
# images take a few seconds here, long enough for a requeue to land inside the validation.
# Two epochs, not more: two uninterrupted runs of these flags already differ after a third
# epoch by about 1e-6 (relative) in the validation loss (measured here, in one process too:
# CPU kernels are not bit-reproducible run to run), after two by about 1e-7.
FLAGS = ["--flagfile=configs/demo.cfg", "--epochs=2", "--steps_per_epoch=8",
         "--image_size=96", "--num_classes=10", "--nosaved_model"]
STEPS = 8
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE", "PREEMPTED")
GIVE_UP = 900  # seconds any one wait may take before the test gives up (not a speed check)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A one-node SLURM cluster in `base`; `run` runs a client command against it."""

    def __init__(self, base, host):
        self.base, self.host = base, host
        self.conf = base / "slurm.conf"
        self.env = dict(os.environ, PATH=PATH, SLURM_CONF=str(self.conf))
        self.daemons = []

    def run(self, *args, check=True, env=None):
        result = subprocess.run(list(map(str, args)), capture_output=True, text=True,
                                env=env or self.env, cwd=ROOT, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}\n{self.logs()}")
        return result.stdout

    def job(self, job_id):
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, Reason, ...)."""
        return dict(re.findall(r"(\w+)=(\S*)", self.run("scontrol", "-o", "show", "job",
                                                        job_id)))

    def logs(self):
        tails = []
        for name in ("slurmctld.log", f"slurmd-{self.host}.log"):
            path = self.base / name
            if path.exists():
                tails.append(f"--- {name}:\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(tails)

    def start(self, *command, log):
        self.daemons.append(subprocess.Popen(list(map(str, command)), env=self.env, cwd=self.base,
                                             stdout=log, stderr=subprocess.STDOUT))

    def stop(self):
        # Jobs first: cancel, then wait for their processes to end (KillWait: 120 s).
        jobs = self.run("squeue", "-h", "-o", "%i", check=False).split()
        if jobs:
            self.run("scancel", *jobs, check=False)
            deadline = time.monotonic() + 180
            while self.run("squeue", "-h", "-o", "%i", check=False).split() and (
                    time.monotonic() < deadline):
                time.sleep(1)
        for daemon in reversed(self.daemons):  # slurmd, slurmctld, munged
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


@pytest.fixture(scope="module")
def slurm():
    missing = [tool for tool in DAEMONS + CLIENTS if shutil.which(tool, path=PATH) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run launchers/install_test_tools.sh "
                    "(make test does)")
    if os.geteuid() != 0:
        pytest.skip("a one-node SLURM cluster needs root here (slurmd starts the jobs)")
    # Not under pytest's tmp_path: munged wants every folder above its socket searchable.
    base = Path(tempfile.mkdtemp(prefix="tf_largebatch-slurm-", dir="/tmp"))
    base.chmod(0o755)
    host = socket.gethostname().split(".")[0]
    for name, mode in (("munge", 0o700), ("socket", 0o755), ("state", 0o700),
                       (f"spool-{host}", 0o755)):
        (base / name).mkdir(mode=mode)
    key = base / "munge/munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    cluster = Cluster(base, host)
    cluster.conf.write_text(slurm_conf(
        base, [(host, "127.0.0.1", len(os.sched_getaffinity(0)), min(8000, memory_mb - 512))],
        "tflargebatchtest", ports=(free_port(), free_port())))
    log = open(base / "daemons.out", "w")  # noqa: SIM115  (closed at the end)
    try:
        cluster.start("munged", "--foreground", f"--key-file={key}",
                      f"--socket={base}/socket/munge.socket", f"--pid-file={base}/munge/pid",
                      f"--log-file={base}/munge/log", f"--seed-file={base}/munge/seed", log=log)
        wait_for(lambda: (base / "socket/munge.socket").exists(), "munged's socket", timeout=60)
        cluster.start("slurmctld", "-D", "-i", "-f", cluster.conf, log=log)
        cluster.start("slurmd", "-D", "-N", host, "-f", cluster.conf, log=log)
        wait_for(lambda: cluster.run("sinfo", "-h", "-N", "-o", "%t", check=False).strip()
                 == "idle", "the node to be idle", timeout=120,
                 diagnostics=lambda: (base / "daemons.out").read_text() + cluster.logs())
        yield cluster
    finally:
        cluster.stop()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def wait_for(condition, what, timeout=GIVE_UP, interval=0.05, diagnostics=lambda: ""):
    """Polls `condition` until it returns something true; gives up after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}\n"
                                 f"{diagnostics()}")
        time.sleep(interval)


def updates_done(run_dir):
    """How many steps the run has finished, by its steps.jsonl (whose "step" counts from 0)."""
    try:
        lines = (run_dir / "steps.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return json.loads(line)["step"] + 1
        except ValueError:  # a line being written
            continue
    return 0


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def committed(run_dir):
    return json.loads((run_dir / "checkpoints/run.json").read_text())


def model_weights(run_dir):
    """The model's variables (weights, BN statistics) in the run's final checkpoint."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / committed(run_dir)[
        "checkpoint"]))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/")}


def test_a_job_requeued_mid_epoch_in_validation_and_before_its_time_limit_resumes_exactly(
        slurm, tmp_path):
    straight, run_dir, output = tmp_path / "straight", tmp_path / "requeued", tmp_path / "job.out"
    horovodrun(["-m", "tf_largebatch.train", *FLAGS, "--log_every_step",
                f"--log_dir={straight}"])

    env = dict(slurm.env, RUN_DIR=str(run_dir), TF_CPP_MIN_LOG_LEVEL="2")
    started = time.monotonic()
    job = slurm.run("sbatch", "--parsable", "--job-name=demo-requeue", "--nodes=1",
                    "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1",
                    "--gpus-per-node=0", f"--output={output}", f"--chdir={ROOT}", SBATCH,
                    *FLAGS, "--log_every_step", env=env).strip().split(";")[0]
    times = {}

    def diagnostics():
        text = output.read_text() if output.exists() else "(no job output yet)"
        return f"job {job}: {slurm.job(job)}\n--- job output:\n{text[-6000:]}\n{slurm.logs()}"

    checked = [0.0]

    def reached(after_step):
        if updates_done(run_dir) >= after_step:
            return True
        if time.monotonic() - checked[0] > 1:  # fail at once if the job ended instead
            checked[0] = time.monotonic()
            assert slurm.job(job)["JobState"] not in ENDED, diagnostics()
        return False

    def requeued():
        state = slurm.job(job)["JobState"]
        assert state not in ENDED, diagnostics()
        return state == "PENDING"

    def interrupt(after_step, how, name):
        """Once `after_step` is logged, interrupts the job with `how`; waits until SLURM
        has put it back in the queue, then lets it start again at once."""
        wait_for(lambda: reached(after_step), f"step {after_step}", diagnostics=diagnostics)
        slurm.run(*how, job)
        signalled = time.monotonic()
        wait_for(requeued, f"requeue ({name})", interval=0.5, diagnostics=diagnostics)
        times[name] = time.monotonic() - signalled
        state = committed(run_dir)
        # slurmd counts a credential made in the same second as the job's revocation as
        # revoked ("Job credential revoked": the job fails), so let a second pass first.
        time.sleep(2)
        # A requeued job waits about 2 minutes (Reason=BeginTime) unless told otherwise.
        slurm.run("scontrol", "update", f"jobid={job}", "StartTime=now")
        return state

    # 1. Mid-epoch 1: scontrol requeue, as an administrator or a preemption would.
    state = interrupt(2, ["scontrol", "requeue"], "requeue mid-epoch 1")
    assert 2 < state["step"] < STEPS and state["epoch"] == 0, state  # saved mid-epoch
    # 2. During epoch 1's validation: right after its last step.
    state = interrupt(STEPS, ["scontrol", "requeue"], "requeue in validation")
    assert state["step"] == STEPS, state  # trained, not yet evaluated ...
    assert not (run_dir / "metrics.jsonl").exists() or not read_jsonl(
        run_dir / "metrics.jsonl")  # ... nor logged
    # 3. Mid-epoch 2: SIGTERM to the batch script alone, as --signal=B:TERM@... sends it ahead
    # of the time limit; the job is still RUNNING, so the script requeues itself.
    state = interrupt(STEPS + 2, ["scancel", "--batch", "--signal=TERM"],
                      "script's own requeue mid-epoch 2")
    assert STEPS + 2 < state["step"] < 2 * STEPS, state

    info = wait_for(lambda: (lambda i: i if i["JobState"] in ENDED else None)(slurm.job(job)),
                    "the job to end", interval=0.5, diagnostics=diagnostics)
    times["total"] = time.monotonic() - started
    print(f"\nslurm job {job}: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))

    # The job finished by itself, after three requeues, with status 0.
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "3", "0:0"), (
        diagnostics())
    completions = (slurm.base / "jobcomp.log").read_text()
    assert re.search(rf"JobId={job} .*JobState=COMPLETED", completions), completions
    text = output.read_text()
    assert text.count(": starting in ") == 4, text[-6000:]
    assert text.count("preempted: SIGTERM received") == 3, text[-6000:]
    assert text.count("SLURM is ending the job") == 2 and text.count("requeueing the job") == 1

    # Every epoch and every step logged once; the result is the uninterrupted run's.
    got, want = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(straight / "metrics.jsonl")
    assert [(r["epoch"], r["step"]) for r in got] == [(1, STEPS), (2, 2 * STEPS)]
    assert [r["step"] for r in read_jsonl(run_dir / "steps.jsonl")] == list(range(2 * STEPS))
    for a, b in zip(got, want, strict=True):
        for key in ("lr", "train_loss", "train_top1_error", "val_loss", "val_top1_error",
                    "val_top5_error"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["epoch"], key)
    values, reference = model_weights(run_dir), model_weights(straight)
    assert values.keys() == reference.keys()
    for name, value in reference.items():  # to rounding (see FLAGS)
        np.testing.assert_allclose(values[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
