"""The chief's checks before training, as pure functions: whose folders a fresh run may use
(`run_folder.claim`) and whether a resume continues the same run
(`position.check_resume_facts`)."""

import fcntl
import json
import os
import shutil
import socket

import pytest

from tf_largebatch.experiment import position, run_folder, runner

pytestmark = pytest.mark.unit

# A run.json's facts as a CIFAR ResNet run of the trainer records them.
FACTS = dict(model="cifar_resnet8", image_size=32, optimizer="sgd", mixed_precision="none",
             seed=3, base_lr=0.1, base_batch=256, train_examples=64, num_classes=10)


def test_resume_refuses_another_image_size_naming_the_flag_and_the_runs_value():
    with pytest.raises(runner.TrainError) as refused:
        position.check_resume_facts(FACTS, dict(FACTS, image_size=40))
    assert "image_size = 32, this one 40" in str(refused.value)
    assert "Resume with the run's own --image_size" in str(refused.value)
    position.check_resume_facts(FACTS, dict(FACTS))  # the same size resumes


def test_a_run_json_from_before_image_size_was_recorded_still_resumes():
    old = {key: value for key, value in FACTS.items() if key != "image_size"}
    position.check_resume_facts(old, dict(FACTS, image_size=40))  # nothing to compare: no error


# --- run_folder.claim: whose checkpoints, and what a refused run leaves behind. -----------

def release_locks():
    """Each claim holds its locks for the life of the process: releases them, as the end of
    a run does."""
    while run_folder._held:
        run_folder._held.pop().close()


@pytest.fixture(autouse=True)
def released_after_each_test():
    yield
    release_locks()


def earlier_run(log_dir, checkpoint_dir=None, recorded_log_dir=True, flags=None):
    """The files a finished run leaves: flags.json and metrics.jsonl in `log_dir`, a
    checkpoint and its run.json in `checkpoint_dir` (default <log_dir>/checkpoints); run.json
    names `log_dir` unless `recorded_log_dir` is False (as before it was recorded)."""
    checkpoint_dir = checkpoint_dir or log_dir / "checkpoints"
    log_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "flags.json").write_text(json.dumps(flags or {"log_dir": str(log_dir)}))
    (log_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    state = {"checkpoint": "ckpt-1", "epoch": 1, "step": 3}
    if recorded_log_dir:
        state["log_dir"] = str(log_dir)
    (checkpoint_dir / "run.json").write_text(json.dumps(state))
    (checkpoint_dir / "ckpt-1.index").write_text("index")
    return snapshot(log_dir.parent)


def snapshot(root):
    """Every file and folder under `root`, with each file's contents."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_fresh_run_with_another_runs_checkpoint_dir_is_refused_naming_that_run(tmp_path,
                                                                                 overwrite):
    before = earlier_run(tmp_path / "a")
    with pytest.raises(run_folder.FolderInUseError) as refused:
        run_folder.claim(str(tmp_path / "b"), str(tmp_path / "a/checkpoints"), resume=False,
                         overwrite=overwrite)
    message = str(refused.value)
    # Before: "<b> already holds checkpoints or logs ... --overwrite to start afresh", and
    # --overwrite moved a's checkpoints into b/replaced-*/.
    assert f"holds the checkpoints of another run (--log_dir={tmp_path / 'a'})" in message
    assert str(tmp_path / "b") not in message.split("--checkpoint_dir=")[0]
    assert snapshot(tmp_path) == before  # a's files in place, no folder b, no .lock


def test_a_checkpoint_dir_in_another_runs_folder_is_refused_with_an_old_run_json(tmp_path):
    # run.json from before the log_dir was recorded: the folder it lies in names the run.
    before = earlier_run(tmp_path / "a", recorded_log_dir=False)
    with pytest.raises(run_folder.FolderInUseError, match=f"another run \\(--log_dir="
                       f"{tmp_path / 'a'}\\)"):
        run_folder.claim(str(tmp_path / "b"), str(tmp_path / "a/checkpoints"), resume=False,
                         overwrite=True)
    assert snapshot(tmp_path) == before


def test_a_checkpoint_dir_outside_any_run_folder_is_known_by_its_run_json(tmp_path):
    before = earlier_run(tmp_path / "a", tmp_path / "ckpts")
    with pytest.raises(run_folder.FolderInUseError, match="another run"):
        run_folder.claim(str(tmp_path / "b"), str(tmp_path / "ckpts"), resume=False,
                         overwrite=True)
    assert snapshot(tmp_path) == before


def test_checkpoints_whose_run_cannot_be_told_are_not_moved(tmp_path):
    # An old run.json, in no run's folder, and no flags.json of this log_dir naming it.
    before = earlier_run(tmp_path / "a", tmp_path / "ckpts", recorded_log_dir=False)
    with pytest.raises(run_folder.FolderInUseError, match="a run that it does not name"):
        run_folder.claim(str(tmp_path / "b"), str(tmp_path / "ckpts"), resume=False,
                         overwrite=True)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("recorded", [True, False])
def test_overwrite_moves_this_runs_own_checkpoint_dir_aside(tmp_path, recorded):
    # Its run.json names this log_dir, or (an old run.json) this log_dir's flags.json names
    # the checkpoint folder.
    log_dir, checkpoints = tmp_path / "a", tmp_path / "ckpts"
    earlier_run(log_dir, checkpoints, recorded_log_dir=recorded,
                flags={"log_dir": str(log_dir), "checkpoint_dir": str(checkpoints)})
    with pytest.raises(run_folder.FolderInUseError, match="--overwrite to start afresh"):
        run_folder.claim(str(log_dir), str(checkpoints), resume=False, overwrite=False)
    release_locks()  # that run ended
    aside = run_folder.claim(str(log_dir), str(checkpoints), resume=False, overwrite=True)
    assert sorted(p.name for p in (tmp_path / aside / "checkpoints").iterdir()) == [
        "ckpt-1.index", "run.json"]
    assert (tmp_path / aside / "metrics.jsonl").exists() and not list(checkpoints.glob("ck*"))


def test_a_copied_run_folder_is_its_own_even_if_run_json_names_the_original(tmp_path):
    earlier_run(tmp_path / "original")
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    aside = run_folder.claim(str(tmp_path / "copy"), str(tmp_path / "copy/checkpoints"),
                             resume=False, overwrite=True)
    assert (tmp_path / aside / "checkpoints/run.json").exists()
    assert (tmp_path / "original/checkpoints/run.json").exists()


def test_a_run_refused_for_its_earlier_logs_leaves_the_folder_as_it_was(tmp_path):
    before = earlier_run(tmp_path / "a")  # a run from before the lock files: no .lock
    with pytest.raises(run_folder.FolderInUseError, match="nothing was changed"):
        run_folder.claim(str(tmp_path / "a"), str(tmp_path / "a/checkpoints"), resume=False,
                         overwrite=False)
    assert snapshot(tmp_path) == before  # before: a/.lock and a/checkpoints/.lock were left


def test_a_run_refused_by_a_live_run_leaves_no_folder_of_its_own(tmp_path):
    (tmp_path / "a").mkdir()
    holder = open(tmp_path / "a/.lock", "w")  # noqa: SIM115  (a live run's lock)
    holder.write("host h, pid 1, started then\n")
    holder.flush()
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(run_folder.FolderInUseError, match=r"in use by a live run \(host h"):
            run_folder.claim(str(tmp_path / "new/b"), str(tmp_path / "a"), resume=False,
                             overwrite=False)
    finally:
        holder.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # before: new/b/.lock too
    assert (tmp_path / "a/.lock").read_text() == "host h, pid 1, started then\n"


def test_an_accepted_claim_locks_the_folder_and_names_its_run(tmp_path):
    earlier_run(tmp_path / "a")
    log_dir = tmp_path / "b"
    with pytest.raises(run_folder.FolderInUseError):  # refused: the .lock it made is removed
        run_folder.claim(str(log_dir), str(tmp_path / "a/checkpoints"), resume=False,
                         overwrite=False)
    run_folder.claim(str(log_dir), str(log_dir / "checkpoints"), resume=False,
                     overwrite=False)
    assert (log_dir / ".lock").read_text().startswith(
        f"host {socket.gethostname()}, pid {os.getpid()}, started ")
    with pytest.raises(run_folder.FolderInUseError, match=f"pid {os.getpid()}"):
        run_folder.claim(str(log_dir), str(log_dir / "checkpoints"), resume=True,
                         overwrite=False)


def test_the_writability_check_leaves_no_folder_behind(tmp_path):
    runner.check_writable("--log_dir", str(tmp_path / "new/run"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(runner.TrainError, match="--log_dir=.* cannot be written"):
        (tmp_path / "file").write_text("not a folder")
        runner.check_writable("--log_dir", str(tmp_path / "file/run"))
