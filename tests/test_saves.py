"""Saves that fail: a run killed at any rename of its final save completes with --resume
(and one resumed for more epochs replaces its old model); a full disk during a checkpoint save
is one error line and leaves no partial files; a dead writer's temporaries are removed."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT
from tiny_run import TINY, copy_of_two_epochs, metrics, state_of, train, trainer, weights

pytestmark = pytest.mark.integration


# --- A finished run is idempotent; its final save survives a kill at any rename. ------------

@pytest.fixture(scope="module")
def killed_in_its_final_save(tmp_path_factory):
    """The 3-epoch run killed as its final save began: every epoch trained and checkpointed,
    model.keras written under its temporary name, not renamed; no saved_model/."""
    run_dir = tmp_path_factory.mktemp("killed_in_its_final_save")
    killed = train(run_dir, "--epochs=3", kill_at="model-written", check=False,
                   saved_model=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    return run_dir


# The final save's renames (strace counts them; all on the main thread): 1 .tmp-model.keras →
# model.keras; 2-6 TensorFlow's inside model.export (the variables' data and index from their
# temporary names, the data out of variables_temp/, saved_model.pb, fingerprint.pb); 7
# saved_model.tmp → saved_model. SIGKILL on entering rename N: the state just before it.
FINAL_SAVE_RENAMES = 7


@pytest.mark.parametrize("kill_at_rename", [None, *range(1, FINAL_SAVE_RENAMES + 1)])
def test_a_run_killed_at_any_rename_of_its_final_save_completes_with_resume(
        straight, killed_in_its_final_save, tmp_path, kill_at_rename):
    # Before: --resume wrote model.keras only, and a run whose model.keras was written but
    # not its saved_model/ was refused ('raise --epochs') for good; so was a finished one.
    run_dir = tmp_path / "run"
    shutil.copytree(killed_in_its_final_save, run_dir)
    renames = ["rename,renameat,renameat2"]
    inject = [f"inject={renames[0]}:signal=KILL:when={kill_at_rename}"] if kill_at_rename else []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    first = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(tmp_path / "renames.txt"), "-e", f"trace={renames[0]}",
         *[arg for spec in inject for arg in ("-e", spec)], sys.executable, "-m",
         "tf_largebatch.train", *TINY, "--epochs=3", f"--log_dir={run_dir}", "--resume"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    if kill_at_rename:
        assert first.returncode == -9, first.stderr[-2000:]
    else:  # every rename of the final save is one of the kill points above
        assert first.returncode == 0, first.stderr[-2000:]
        assert (tmp_path / "renames.txt").read_text().count("rename") == FINAL_SAVE_RENAMES
    model_file = run_dir / "model.keras"
    before = model_file.stat().st_mtime_ns if model_file.exists() else None

    # A scheduler's requeue of the job: the same command, --resume=auto.
    again = trainer(run_dir, "--epochs=3", "--resume=auto")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().count("\n") == 0  # one line, saying where the model is
    assert f"Its model is {run_dir}/model.keras" in again.stdout
    assert (run_dir / "saved_model/saved_model.pb").is_file()
    assert not {".tmp-model.keras", "saved_model.tmp", "saved_model.old"} & set(
        os.listdir(run_dir))
    assert [r["epoch"] for r in metrics(run_dir)] == [1, 2, 3]  # nothing trained again
    if kill_at_rename is None:  # the outputs were complete: nothing was written
        assert "outputs were complete" in again.stdout
        assert model_file.stat().st_mtime_ns == before
    assert_model_file_equals_straight(model_file, straight)


def test_a_run_resumed_for_more_epochs_and_killed_in_its_final_save_replaces_the_old_model(
        straight, two_epochs, tmp_path):
    # The 2-epoch run resumed with --epochs=3, killed as it writes its model: model.keras and
    # saved_model/ are still epoch 2's. Before: resume refused ('raise --epochs'), for good.
    copy_of_two_epochs(two_epochs, tmp_path)
    killed = train(tmp_path, "--epochs=3", "--resume", kill_at="model-written", check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    again = trainer(tmp_path, "--epochs=3", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "wrote model.keras and saved_model" in again.stdout
    variables = "saved_model/variables/variables.data-00000-of-00001"
    assert (tmp_path / variables).read_bytes() != (two_epochs / variables).read_bytes()
    assert_model_file_equals_straight(tmp_path / "model.keras", straight)


def assert_model_file_equals_straight(model_file, straight):
    """model.keras holds the uninterrupted run's weights after epoch 3 (= its ckpt-3's)."""
    import keras

    from tf_largebatch import layers, losses, optimizers, schedules  # noqa: F401  (registers)

    loaded = keras.models.load_model(model_file, compile=False)
    want = weights(straight)
    assert sorted(v.path for v in loaded.variables) == sorted(want)
    for v in loaded.variables:
        np.testing.assert_allclose(np.asarray(v), want[v.path], rtol=1e-5, atol=1e-6,
                                   err_msg=v.path)


# --- Issue: a full disk during a checkpoint save. --------------------------------------------

def strace_trainer(run_dir, path, inject, *args, kill_at=None):
    """The trainer's command line under strace, `inject` applied to the writes to `path`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("TF_LARGEBATCH_KILL_AT", None)
    if kill_at:
        env["TF_LARGEBATCH_KILL_AT"] = kill_at
    return subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(path), "-e", "trace=write",
         "-e", f"inject=write:{inject}", sys.executable, "-m", "tf_largebatch.train", *TINY,
         f"--log_dir={run_dir}", *args], capture_output=True, text=True, cwd=ROOT, env=env,
        timeout=600)


def test_a_full_disk_during_a_checkpoint_save_is_one_error_line_and_leaves_no_partial_files(
        tmp_path):
    # strace fails the write of ckpt-2.index with ENOSPC, as a full disk does; TensorFlow has
    # written ckpt-2_temp/ and moved the data file to ckpt-2.data-00000-of-00001 by then.
    # Before: a 40-line ResourceExhaustedError traceback, and those 600 kB stayed.
    ckpt = tmp_path.resolve() / "checkpoints"
    result = strace_trainer(tmp_path, ckpt / "ckpt-2.index", "error=ENOSPC", "--epochs=3")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {ckpt}: checkpoint ckpt-2 could not be written, no space")
    assert "--checkpoint_dir" in line and "same command with --resume" in line
    # The space it names is that of a checkpoint: ckpt-1's files, to 10%.
    written = sum(p.stat().st_size for p in ckpt.glob("ckpt-1.*"))
    needed = float(line.split("needs about ")[1].split(" MiB")[0]) * 2**20
    assert needed == pytest.approx(written, rel=0.1)
    assert sorted(os.listdir(ckpt)) == [".lock", "checkpoint", "ckpt-1.data-00000-of-00001",
                                        "ckpt-1.index", "run.json"]
    assert state_of(tmp_path)["checkpoint"] == "ckpt-1"  # the committed one is kept


def test_a_writer_killed_mid_save_leaves_temporaries_that_the_next_start_removes(tmp_path):
    # SIGKILL as TensorFlow writes ckpt-2.index: ckpt-2_temp/ stays. Before: it stayed for good
    # (a resume writes ckpt-2 again through it, but a run that never saves ckpt-2 again,
    # e.g. on another --steps_per_epoch, or that stops first, kept it).
    ckpt = tmp_path.resolve() / "checkpoints"
    killed = strace_trainer(tmp_path, ckpt / "ckpt-2.index", "signal=KILL", "--epochs=3")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list(ckpt.glob("ckpt-2_temp*"))
    # The resumed run, stopped after its first step (long before its ckpt-2 save).
    resumed = train(tmp_path, "--epochs=3", "--resume", kill_at="step-done@1", check=False)
    assert resumed.returncode == -9, resumed.stderr[-2000:]
    assert "Resumed from" in resumed.stderr
    assert not list(ckpt.glob("*_temp*"))
