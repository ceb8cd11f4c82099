"""The TINY run that test_faults.py and test_saves.py kill, damage and resume: a CIFAR ResNet-8
on 64 synthetic images, k = 2 simulated workers of n = 8, 3 steps per epoch, launched as the
trainer's own process (`train` dumps its weights, `trainer` is the plain command line).
Their module fixtures `straight` and `two_epochs` are in conftest.py."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from helpers import ROOT

DUMP = ROOT / "tests/workers/train_and_dump.py"
TINY = ["--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=64",
        "--per_worker_batch=8", "--steps_per_epoch=3", "--eval_steps=1", "--seed=3",
        "--warmup=gradual", "--warmup_epochs=1", "--milestones=2", "--simulate_workers=2"]


def train(run_dir, *args, kill_at=None, check=True, saved_model=False):
    """The TINY run with its weights dumped; no SavedModel export unless `saved_model`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_LARGEBATCH_KILL_AT", None)
    if kill_at:
        env["TF_LARGEBATCH_KILL_AT"] = kill_at
    export = [] if saved_model else ["--nosaved_model"]
    result = subprocess.run([sys.executable, str(DUMP), *TINY, *export, f"--log_dir={run_dir}",
                             f"--dump={run_dir}", *map(str, args)], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-4000:])
    return result


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir):
    with np.load(run_dir / "rank0.npz") as f:
        return {k: f[k] for k in f.files}


def copy_of_two_epochs(two_epochs, tmp_path):
    """`tmp_path` holding the two-epoch run (the run's files name their folder nowhere)."""
    shutil.copytree(two_epochs, tmp_path, dirs_exist_ok=True)
    return tmp_path


def trainer(run_dir, *args):
    """The trainer's own command line (its error handling), on the TINY run."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_LARGEBATCH_KILL_AT", None)
    return subprocess.run([sys.executable, "-m", "tf_largebatch.train", *TINY,
                           f"--log_dir={run_dir}", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


def state_of(run_dir):
    return json.loads((run_dir / "checkpoints/run.json").read_text())
