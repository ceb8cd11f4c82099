"""Faults and recovery: kills during a save, unreadable checkpoints, divergence, changed
flags on resume, unwritable folders. Each test fails on the trainer before these fixes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, horovodrun
from tiny_run import DUMP, TINY, copy_of_two_epochs, metrics, state_of, train, trainer, weights

pytestmark = pytest.mark.integration


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
    assert_equals_straight(tmp_path, straight)


def assert_equals_straight(run_dir, straight):
    want, got = metrics(straight), metrics(run_dir)
    assert [r["epoch"] for r in got] == [1, 2, 3]  # every epoch logged exactly once
    assert [r["step"] for r in got] == [3, 6, 9]
    for a, b in zip(got, want, strict=True):  # the resumed epoch's mean over all its steps
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["train_top1_error"] == pytest.approx(b["train_top1_error"], abs=1e-6)
    for name, value in weights(straight).items():
        np.testing.assert_allclose(weights(run_dir)[name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_sigterm_mid_epoch_saves_that_step_and_resume_equals_the_uninterrupted_run(straight,
                                                                                  tmp_path):
    # SIGTERM arrives as step 5 (the 2nd of 3 in epoch 2) ends.
    stopped = train(tmp_path, "--epochs=3", kill_at="step-done@5:TERM", check=False)
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert ("SIGTERM received: stopped after step 2 of 3 in epoch 2 (global step 5), "
            "checkpoint saved. Run the same command with --resume") in stopped.stderr
    state = json.loads((tmp_path / "checkpoints/run.json").read_text())
    assert (state["checkpoint"], state["epoch"], state["step"]) == ("ckpt-1-2", 1, 5)
    assert [r["epoch"] for r in metrics(tmp_path)] == [1]  # epoch 2 is not logged as done
    resumed = train(tmp_path, "--epochs=3", "--resume")
    assert "Resumed from" in resumed.stderr and "ckpt-1-2 (epoch 1, step 5)" in resumed.stderr
    assert_equals_straight(tmp_path, straight)


def test_a_kill_between_periodic_mid_epoch_checkpoints_loses_only_the_steps_since(straight,
                                                                                 tmp_path):
    # Saves every 2 steps: at steps 2 and 4 (mid-epoch) and 3 (epoch end); SIGKILL as step 6
    # ends, before epoch 2's end-of-epoch save: the newest commit is step 4 (1 into epoch 2).
    killed = train(tmp_path, "--epochs=3", "--checkpoint_every_steps=2",
                   kill_at="step-done@6", check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = json.loads((tmp_path / "checkpoints/run.json").read_text())
    assert [e["checkpoint"] for e in state["history"]] == ["ckpt-0-2", "ckpt-1", "ckpt-1-1"]
    assert (state["epoch"], state["step"]) == (1, 4)
    train(tmp_path, "--epochs=3", "--resume")
    assert_equals_straight(tmp_path, straight)


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(straight, two_epochs,
                                                                      tmp_path):
    copy_of_two_epochs(two_epochs, tmp_path)
    (data,) = (tmp_path / "checkpoints").glob("ckpt-2.data-*")
    data.write_bytes(data.read_bytes()[:100])  # truncated, as by a full disk
    resumed = train(tmp_path, "--epochs=3", "--resume")
    assert "Skipped checkpoints that could not be read" in resumed.stderr
    assert "ckpt-2" in resumed.stderr and "Resumed from" in resumed.stderr
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2, 3]
    for name, value in weights(straight).items():
        np.testing.assert_allclose(weights(tmp_path)[name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_resume_with_shorter_epochs_keeps_the_checkpointed_epochs_log_line(two_epochs, tmp_path):
    copy_of_two_epochs(two_epochs, tmp_path)
    resumed = train(tmp_path, "--epochs=3", "--resume", "--steps_per_epoch=2")
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2, 3]
    assert "with 3 steps per epoch as k·n = 2×8 with 2" in resumed.stderr
    # Every value of the checkpoint was restored: TensorFlow reports none as left over
    # (before: "Value in checkpoint could not be found ...: (root).save_counter").
    assert "could not be found" not in resumed.stderr and "unrestored" not in resumed.stderr


def test_an_exploding_finite_loss_stops_without_saving_the_diverged_epoch(tmp_path):
    # Epoch 1 trains normally; at epoch 2 the rate grows ×1e4: the loss reaches ~1e3, finite.
    result = train(tmp_path, "--epochs=3", "--warmup=none", "--milestones=1",
                   "--decay_factor=1e4", check=False)
    assert result.returncode == 1
    assert "training diverged in epoch 2" in result.stderr and "more than 10×" in result.stderr
    state = json.loads((tmp_path / "checkpoints/run.json").read_text())
    assert (state["epoch"], [e["checkpoint"] for e in state["history"]]) == (1, ["ckpt-1"])
    assert not list((tmp_path / "checkpoints").glob("ckpt-2*"))


def test_resume_with_another_data_set_is_refused_and_changes_nothing(two_epochs, tmp_path):
    # The whole path in the trainer, once; each fact a resume must keep (model, rate,
    # optimizer, seed, precision, image size, data): test_resume_facts.py, in-process.
    copy_of_two_epochs(two_epochs, tmp_path)
    before = state_of(tmp_path)
    result = train(tmp_path, "--epochs=3", "--resume", "--dataset=shapes", check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Resume with the run's own --dataset/--data_dir (the training files" in result.stderr
    assert state_of(tmp_path) == before
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2]


def test_an_unwritable_checkpoint_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = train(tmp_path / "run", "--epochs=2", f"--checkpoint_dir={blocker}/ckpt",
                   check=False)
    assert result.returncode != 0
    assert f"--checkpoint_dir={blocker}/ckpt cannot be written" in result.stderr
    assert "Epoch 1/2" not in result.stdout  # nothing was trained


def test_a_live_runs_folders_are_refused_to_a_second_run_until_it_is_gone(tmp_path):
    # One live trainer (400 epochs: it is still training when killed) holds both locks.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    run_a = tmp_path / "a"
    first = subprocess.Popen([sys.executable, str(DUMP), *TINY, "--epochs=400",
                              f"--log_dir={run_a}", f"--dump={run_a}"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (run_a / "metrics.jsonl").exists():  # the first run is training
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.5)
        # Into the same folder, even with --overwrite.
        second = train(run_a, "--epochs=2", "--overwrite", check=False)
        assert second.returncode == 1
        assert f"is in use by a live run (host {os.uname().nodename}, pid {first.pid}" in (
            second.stderr)
        # A checkpoint folder inside the live run's log folder.
        third = train(tmp_path / "b", "--epochs=2", f"--checkpoint_dir={run_a}/checkpoints",
                      check=False)
        assert third.returncode == 1
        assert f"{run_a}/checkpoints is in use by a live run" in third.stderr, third.stderr
        assert not (tmp_path / "b/metrics.jsonl").exists()
        while len(metrics(run_a)) < 2:  # past epoch 2, so that --epochs=2 below is finished
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.5)
    finally:
        first.kill()
        first.wait()
    # Once the first run is gone its lock is too: a resume gets past it (to the epoch check).
    again = train(run_a, "--epochs=2", "--resume", check=False)
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
    assert (aside / "model.keras").is_file()  # the earlier run's trained model too
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2]
    assert (tmp_path / "model.keras").is_file()


def test_a_fresh_run_with_another_runs_checkpoint_dir_is_refused_and_changes_nothing(tmp_path):
    # Run a keeps its checkpoints outside its log folder: only its run.json names the run.
    run_a, checkpoints, run_b = tmp_path / "a", tmp_path / "ckpts", tmp_path / "b"
    result = trainer(run_a, "--epochs=2", f"--checkpoint_dir={checkpoints}")
    assert result.returncode == 0, result.stderr[-3000:]
    kept = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    for overwrite in ([], ["--overwrite"]):
        result = trainer(run_b, "--epochs=2", f"--checkpoint_dir={checkpoints}", *overwrite)
        # Before: "<b> already holds checkpoints or logs ... --overwrite to start afresh",
        # and --overwrite moved a's checkpoints into b/replaced-*/checkpoints.
        assert result.returncode == 1, result.stderr[-3000:]
        assert (f"--checkpoint_dir={checkpoints} holds the checkpoints of another run "
                f"(--log_dir={run_a})") in result.stderr
        assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == kept
        assert not run_b.exists()  # before: b/.lock was left behind


def test_sigterm_to_horovodrun_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path):
    """As a scheduler preempts a job: SIGTERM to horovodrun, which passes it to each worker."""
    args = [DUMP, "--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=512",
            "--per_worker_batch=8", "--eval_steps=1", "--seed=3", "--warmup_epochs=1",
            "--milestones=2", "--log_every_step", "--epochs=3"]  # kn = 16, 32 steps per epoch
    straight, run_dir = tmp_path / "straight", tmp_path / "preempted"
    horovodrun([*args, f"--log_dir={straight}", f"--dump={straight}"])

    cmd = [str(Path(sys.executable).with_name("horovodrun")), "-np", "2", "-H", "localhost:2",
           "--gloo", sys.executable, *map(str, args), f"--log_dir={run_dir}", f"--dump={run_dir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    steps = run_dir / "steps.jsonl"
    while not (steps.exists() and len(steps.read_text().splitlines()) >= 40):  # in epoch 2
        assert job.poll() is None, job.stdout.read()[-4000:]
        time.sleep(0.05)
    done = json.loads(steps.read_text().splitlines()[-1])["step"] + 1  # steps finished
    job.send_signal(signal.SIGTERM)
    output = job.communicate(timeout=300)[0]
    assert job.returncode != 0
    assert "preempted: SIGTERM received: stopped after step" in output, output[-4000:]
    state = json.loads((run_dir / "checkpoints/run.json").read_text())
    assert state["step"] >= done  # no finished step lost
    assert state["partial_epoch"]["steps"] == state["step"] - 32 * state["epoch"] > 0

    horovodrun([*args, f"--log_dir={run_dir}", f"--dump={run_dir}", "--resume"])
    got, want = metrics(run_dir), metrics(straight)
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for a, b in zip(got, want, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    for rank in (0, 1):
        with np.load(straight / f"rank{rank}.npz") as a, np.load(run_dir / f"rank{rank}.npz") as b:
            for name in a.files:  # BN statistics averaged at the save: equal to float rounding
                np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_under_horovodrun_an_error_every_worker_hits_is_printed_once(tmp_path):
    result = horovodrun(["-m", "tf_largebatch.train", *TINY, "--simulate_workers=1",
                         "--epochs=2", f"--log_dir={tmp_path}", "--resume"], check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert output.count("--resume: no checkpoint in") == 1, output[-4000:]


# --- Issue 19: the cases a cluster job meets first. -----------------------------------------

def test_a_sigterm_in_the_first_epoch_then_resume_equals_the_uninterrupted_run(straight,
                                                                                tmp_path):
    # Before: ckpt-0-2 was written before any save() and had no save_counter; the resume
    # failed with "unmatched objects: save_counter", and a fresh run was refused.
    stopped = train(tmp_path, "--epochs=3", kill_at="step-done@2:TERM", check=False)
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert (state_of(tmp_path)["checkpoint"], state_of(tmp_path)["step"]) == ("ckpt-0-2", 2)
    train(tmp_path, "--epochs=3", "--resume")
    assert_equals_straight(tmp_path, straight)


def test_a_kill_after_periodic_saves_of_the_first_epoch_resumes_from_them(straight, tmp_path):
    killed = train(tmp_path, "--epochs=3", "--checkpoint_every_steps=1", kill_at="step-done@3",
                   check=False)  # SIGKILL as step 3 ends, before the end-of-epoch save
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [e["checkpoint"] for e in state_of(tmp_path)["history"]] == ["ckpt-0-1", "ckpt-0-2"]
    train(tmp_path, "--epochs=3", "--resume=auto")
    assert_equals_straight(tmp_path, straight)


def test_sigterm_during_validation_under_horovodrun_saves_the_trained_epoch(tmp_path):
    """The signal arrives at the 5th of 32 validation batches of epoch 2 (n = 4: 128 images
    on 2 workers): the run stops there, saves epoch 2's 3 trained steps, and the resumed run
    evaluates epoch 2 before training epoch 3; everything equals the uninterrupted run."""
    args = [DUMP, "--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=64",
            "--per_worker_batch=4", "--steps_per_epoch=3", "--seed=3", "--warmup_epochs=1",
            "--milestones=2", "--epochs=3", "--log_every_step"]
    straight, run_dir = tmp_path / "straight", tmp_path / "preempted"
    horovodrun([*args, f"--log_dir={straight}", f"--dump={straight}"])
    env = dict(os.environ, TF_LARGEBATCH_KILL_AT="eval-batch@37:TERM")  # 32 in epoch 1, +5
    cmd = [str(Path(sys.executable).with_name("horovodrun")), "-np", "2", "-H", "localhost:2",
           "--gloo", sys.executable, *map(str, args), f"--log_dir={run_dir}", f"--dump={run_dir}"]
    stopped = subprocess.run(cmd, cwd=ROOT, env=dict(env, TF_CPP_MIN_LOG_LEVEL="2",
                                                     PYTHONPATH=str(ROOT)),
                             capture_output=True, text=True, timeout=600)
    output = stopped.stdout + stopped.stderr
    assert "stopped during the validation of epoch 2 (all its 3 steps trained" in output, (
        output[-4000:])
    state = state_of(run_dir)
    assert (state["checkpoint"], state["epoch"], state["step"]) == ("ckpt-1-3", 1, 6)
    assert [r["epoch"] for r in metrics(run_dir)] == [1]  # epoch 2 not logged: no validation

    horovodrun([*args, f"--log_dir={run_dir}", f"--dump={run_dir}", "--resume=auto"])
    got, want = metrics(run_dir), metrics(straight)
    assert [r["epoch"] for r in got] == [1, 2, 3] and [r["step"] for r in got] == [3, 6, 9]
    for a, b in zip(got, want, strict=True):
        for key in ("train_loss", "train_top1_error", "val_loss", "val_top1_error"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    steps = [json.loads(r)["step"] for r in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(9))
    for rank in (0, 1):
        with np.load(straight / f"rank{rank}.npz") as a, np.load(run_dir / f"rank{rank}.npz") as b:
            for name in a.files:
                np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_resume_with_a_larger_global_batch_logs_every_step_once(tmp_path):
    # kn = 16 (3 steps an epoch), SIGTERM as step 5 ends (2 into epoch 2); resumed at kn = 32
    # with 2 steps an epoch: 2·16 images = 1 new step into epoch 2. The logs count updates:
    # 0..4 before, then 5 (the rest of epoch 2) and 6, 7 (epoch 3). Before: 3, 4 twice.
    train(tmp_path, "--epochs=3", "--log_every_step", kill_at="step-done@5:TERM", check=False)
    resumed = train(tmp_path, "--epochs=3", "--log_every_step", "--resume",
                    "--simulate_workers=4", "--steps_per_epoch=2")
    assert "with 3 steps per epoch as k·n = 4×8 with 2" in resumed.stderr
    steps = [json.loads(r)["step"] for r in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(8))
    assert [(r["epoch"], r["step"]) for r in metrics(tmp_path)] == [(1, 3), (2, 6), (3, 8)]


def test_a_garbage_line_in_metrics_jsonl_is_one_error_naming_the_file_and_line(two_epochs,
                                                                               tmp_path):
    copy_of_two_epochs(two_epochs, tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text(lines[0] + "\n{garbage\n" + lines[1] + "\n")
    result = trainer(tmp_path, "--epochs=3", "--resume")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"error: {tmp_path}/metrics.jsonl, line 2, is not a JSON record" in result.stderr


def test_an_unreadable_run_json_falls_back_to_the_checkpoint_files(straight, two_epochs, tmp_path):
    copy_of_two_epochs(two_epochs, tmp_path)
    (tmp_path / "checkpoints/run.json").write_text('{"checkpoint": "ckpt-2", "ep')
    resumed = train(tmp_path, "--epochs=3", "--resume")
    assert "is unreadable" in resumed.stderr and "Resumed from" in resumed.stderr
    assert (tmp_path / "checkpoints/run.json.unreadable").read_text().startswith('{"checkp')
    assert_equals_straight(tmp_path, straight)


def test_a_full_disk_under_the_log_dir_is_one_error_line_and_keeps_the_checkpoints(tmp_path):
    # strace makes every write to steps.jsonl fail with ENOSPC, as a full disk does.
    (tmp_path / "steps.jsonl").touch()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(tmp_path / "steps.jsonl"),
         "-e", "trace=write", "-e", "inject=write:error=ENOSPC:when=4",
         sys.executable, "-m", "tf_largebatch.train", *TINY, "--epochs=2", "--log_every_step",
         f"--log_dir={tmp_path}", "--resume=auto"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (f"error: {tmp_path}/steps.jsonl: No space left on device. To continue: free space "
            "on that disk") in result.stderr
    assert state_of(tmp_path)["checkpoint"] == "ckpt-1"  # epoch 1's checkpoint is kept


def test_a_nan_before_any_checkpoint_says_none_was_saved_and_fits_the_warmup(tmp_path):
    result = trainer(tmp_path, "--epochs=3", "--base_lr=1e12")  # gradual warmup on
    assert result.returncode == 1 and "loss became nan" in result.stderr, result.stderr[-3000:]
    assert "No checkpoint was saved before it." in result.stderr
    assert "kept in" not in result.stderr
    assert "Gradual warmup is already on" in result.stderr


def test_a_data_file_deleted_mid_run_is_one_error_line_naming_it(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "val"):
        for label in ("a", "b"):
            (data / split / label).mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (32, 32), (40 * i, 100, 200)).save(
                    data / split / label / f"{i}.png")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    run_dir = tmp_path / "run"
    job = subprocess.Popen(
        [sys.executable, "-m", "tf_largebatch.train", "--model=cifar_resnet8", "--dataset=folder",
         f"--data_dir={data}", "--per_worker_batch=4", "--epochs=400", "--warmup=none",
         f"--log_dir={run_dir}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        while not (run_dir / "metrics.jsonl").exists():
            assert job.poll() is None, job.stderr.read()[-3000:]
            time.sleep(0.2)
        (data / "train/b/5.png").unlink()
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert f"error: a data file cannot be read: {data}/train/b/5.png" in stderr, stderr[-3000:]


