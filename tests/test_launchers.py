"""The launchers resume: the Kubernetes MPIJob's own command, run twice into one folder as
its restart policy would (a first attempt stopped by SIGTERM, then the retry), ends where an
uninterrupted run ends; every launcher runs the trainer with --resume=auto."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT
from test_k8s_manifest import launcher_command

pytestmark = pytest.mark.integration

# The manifest trains ResNet-50 on ImageNet; here its command gets these flags appended (the
# later value of a flag wins): a CIFAR ResNet-8 on 256 generated images, k = 2 processes of
# n = 8, 16 steps per epoch.
SMALL = ["--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=256",
         "--per_worker_batch=8", "--epochs=3", "--warmup_epochs=1", "--milestones=2",
         "--eval_steps=1", "--seed=3", "--log_every_step", "--nosaved_model"]


def local_command(command, runs, data):
    """The manifest's command without Kubernetes: mpirun and its options become
    `horovodrun -np 2 --gloo`, the image's /app the repository, /runs and /data folders here."""
    python = next(i for i, arg in enumerate(command) if arg.endswith("/bin/python"))
    horovodrun = Path(sys.executable).with_name("horovodrun")
    local = [str(horovodrun), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable]
    for arg in command[python + 1:]:
        arg = arg.replace("/app/", f"{ROOT}/").replace("/runs/", f"{runs}/")
        local.append(arg.replace("/data/", f"{data}/"))
    return local + SMALL


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_mpijob_command_stopped_by_sigterm_then_retried_equals_an_uninterrupted_run(
        tmp_path):
    command = launcher_command()
    straight = local_command(command, tmp_path / "straight", tmp_path / "data")
    retried = local_command(command, tmp_path / "runs", tmp_path / "data")
    log_dir = Path(next(arg for arg in retried if arg.startswith("--log_dir="))[10:])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))

    def run(cmd):
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                                timeout=900)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    run(straight)

    # Attempt 1: SIGTERM mid-epoch 2 (to horovodrun, as Kubernetes sends it to mpirun).
    first = subprocess.Popen(retried, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    steps = log_dir / "steps.jsonl"
    deadline = time.monotonic() + 900  # a give-up time, not a speed check
    while not (steps.exists() and len(steps.read_text().splitlines()) >= 20):
        assert first.poll() is None, first.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "gave up waiting for epoch 2"
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=300)[0]
    assert first.returncode != 0, output[-4000:]  # non-zero: restartPolicy OnFailure retries
    assert "preempted: SIGTERM received" in output, output[-4000:]
    assert [r["epoch"] for r in metrics(log_dir)] == [1]

    # Attempt 2: the very same command.
    run(retried)
    got, want = metrics(log_dir), metrics(tmp_path / "straight" / log_dir.name)
    assert [r["epoch"] for r in got] == [1, 2, 3]  # every epoch once
    for a, b in zip(got, want, strict=True):
        for key in ("train_loss", "train_top1_error", "val_loss", "val_top1_error"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["epoch"], key)


@pytest.mark.parametrize("launcher", ["slurm.sbatch", "mpirun.sh", "horovodrun_hosts.sh",
                                      "cifar10_experiments.sh"])
def test_every_launcher_resumes_automatically(launcher):
    text = (ROOT / "launchers" / launcher).read_text()
    assert "--resume=auto" in text
    assert not re.search(r"--resume(?![=\w])", text)  # no bare --resume decided by the script
