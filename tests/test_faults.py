"""Faults and recovery: kills during a save, unreadable checkpoints, divergence, changed
flags on resume, unwritable folders. Each test fails on the trainer before these fixes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

from tf_largebatch import callbacks

DUMP = ROOT / "tests/workers/train_and_dump.py"
# A CIFAR ResNet-8 on 64 synthetic images; k = 2 simulated workers of n = 8, 3 steps per epoch.
TINY = ["--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=64",
        "--per_worker_batch=8", "--steps_per_epoch=3", "--eval_steps=1", "--seed=3",
        "--warmup=gradual", "--warmup_epochs=1", "--milestones=2", "--simulate_workers=2"]


def train(run_dir, *args, kill_at=None, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_LARGEBATCH_KILL_AT", None)
    if kill_at:
        env["TF_LARGEBATCH_KILL_AT"] = kill_at
    result = subprocess.run([sys.executable, str(DUMP), *TINY, f"--log_dir={run_dir}",
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


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run of 3 epochs that every recovered run must equal."""
    run_dir = tmp_path_factory.mktemp("straight")
    train(run_dir, "--epochs=3")
    return run_dir


# checkpoint-saved@2: ckpt-2 is written, run.json still names ckpt-1 (before: resumed ckpt-2's
# weights at epoch 1 and trained epoch 2 twice). state-written@2: the new run.json is written
# but not renamed. checkpoint-saved@1: the run never committed a checkpoint.
@pytest.mark.parametrize("kill_at", ["checkpoint-saved@2", "state-written@2",
                                     "checkpoint-saved@1"])
def test_a_kill_during_a_save_then_resume_equals_the_uninterrupted_run(straight, tmp_path,
                                                                       kill_at):
    killed = train(tmp_path, "--epochs=3", kill_at=kill_at, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = train(tmp_path, "--epochs=3", "--resume")
    if kill_at.endswith("@1"):
        assert "holds no committed checkpoint" in resumed.stderr
    want, got = metrics(straight), metrics(tmp_path)
    assert [r["epoch"] for r in got] == [1, 2, 3]  # every epoch logged exactly once
    assert [r["step"] for r in got] == [3, 6, 9]
    for a, b in zip(got, want, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for name, value in weights(straight).items():
        np.testing.assert_allclose(weights(tmp_path)[name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(straight, tmp_path):
    train(tmp_path, "--epochs=2")
    (data,) = (tmp_path / "checkpoints").glob("ckpt-2.data-*")
    data.write_bytes(data.read_bytes()[:100])  # truncated, as by a full disk
    resumed = train(tmp_path, "--epochs=3", "--resume")
    assert "Skipped checkpoints that could not be read" in resumed.stderr
    assert "ckpt-2" in resumed.stderr and "Resumed from" in resumed.stderr
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2, 3]
    for name, value in weights(straight).items():
        np.testing.assert_allclose(weights(tmp_path)[name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_resume_with_shorter_epochs_keeps_the_checkpointed_epochs_log_line(tmp_path):
    train(tmp_path, "--epochs=2")
    resumed = train(tmp_path, "--epochs=3", "--resume", "--steps_per_epoch=2")
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2, 3]
    assert "with 3 steps per epoch as k·n = 2×8 with 2" in resumed.stderr


def test_an_exploding_finite_loss_stops_without_saving_the_diverged_epoch(tmp_path):
    # Epoch 1 trains normally; at epoch 2 the rate grows ×1e4: the loss reaches ~1e3, finite.
    result = train(tmp_path, "--epochs=3", "--warmup=none", "--milestones=1",
                   "--decay_factor=1e4", check=False)
    assert result.returncode == 1
    assert "training diverged in epoch 2" in result.stderr and "more than 10×" in result.stderr
    state = json.loads((tmp_path / "checkpoints/run.json").read_text())
    assert (state["epoch"], [e["checkpoint"] for e in state["history"]]) == (1, ["ckpt-1"])
    assert not list((tmp_path / "checkpoints").glob("ckpt-2*"))


def test_divergence_callback_on_hand_made_logs():
    guard = callbacks.StopOnDivergence(factor=10)
    guard.on_epoch_end(0, {"loss": 2.3, "val_loss": 2.2})  # sets the reference
    guard.on_epoch_end(1, {"loss": 22.9, "val_loss": 3.0})  # 9.96× : still fine
    with pytest.raises(callbacks.DivergenceError, match="more than 10× the first epoch's 2.3"):
        guard.on_epoch_end(2, {"loss": 23.1})
    with pytest.raises(callbacks.DivergenceError, match="validation loss is nan"):
        callbacks.StopOnDivergence().on_epoch_end(0, {"loss": 2.0, "val_loss": float("nan")})
    callbacks.StopOnDivergence(factor=0, reference_loss=1.0).on_epoch_end(0, {"loss": 1e9})


@pytest.mark.parametrize("flag, named", [("--synthetic_examples=128", "train_examples = 64"),
                                         ("--base_lr=0.2", "Resume with the run's own --base_lr"),
                                         ("--model=cifar_resnet14", "model = 'cifar_resnet8'")])
def test_resume_refuses_another_data_set_rate_or_model(tmp_path, flag, named):
    train(tmp_path, "--epochs=2")
    before = (tmp_path / "checkpoints/run.json").read_text()
    result = train(tmp_path, "--epochs=3", "--resume", flag, check=False)
    assert result.returncode == 1 and named in result.stderr, result.stderr[-2000:]
    assert (tmp_path / "checkpoints/run.json").read_text() == before


def test_an_unwritable_checkpoint_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = train(tmp_path / "run", "--epochs=2", f"--checkpoint_dir={blocker}/ckpt",
                   check=False)
    assert result.returncode != 0
    assert f"--checkpoint_dir={blocker}/ckpt cannot be written" in result.stderr
    assert "Epoch 1/2" not in result.stdout  # nothing was trained


def test_a_second_live_run_into_the_same_folder_is_refused(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    first = subprocess.Popen([sys.executable, str(DUMP), *TINY, "--epochs=400",
                              f"--log_dir={tmp_path}", f"--dump={tmp_path}"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (tmp_path / "metrics.jsonl").exists():  # the first run is training
            assert first.poll() is None, "the first run ended early"
            subprocess.run(["sleep", "0.5"])
        second = train(tmp_path, "--epochs=2", "--overwrite", check=False)
        assert second.returncode == 1
        assert f"is in use by a live run (host {os.uname().nodename}, pid {first.pid}" in (
            second.stderr)
    finally:
        first.kill()
        first.wait()
    # Once the first run is gone its lock is too: a resume gets past it (to the epoch check).
    again = train(tmp_path, "--epochs=2", "--resume", check=False)
    assert "raise --epochs to train further" in again.stderr and "in use" not in again.stderr


def test_a_fresh_run_over_an_earlier_runs_logs_is_refused_unless_overwrite(tmp_path):
    train(tmp_path, "--epochs=2", f"--checkpoint_dir={tmp_path}/ckpt_a")
    logged = (tmp_path / "metrics.jsonl").read_text()
    result = train(tmp_path, "--epochs=2", f"--checkpoint_dir={tmp_path}/ckpt_b", check=False)
    assert result.returncode == 1 and "already holds checkpoints or logs" in result.stderr
    assert (tmp_path / "metrics.jsonl").read_text() == logged
    result = train(tmp_path, "--epochs=2", f"--checkpoint_dir={tmp_path}/ckpt_b", "--overwrite")
    (aside,) = tmp_path.glob("replaced-*")
    assert (aside / "metrics.jsonl").read_text() == logged  # moved, not lost
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2]
