"""Owned run folders: one live run per folder, and no fresh run over another run's logs.

`claim(log_dir, checkpoint_dir, resume, overwrite)` runs on the chief before training:
- it takes an exclusive `flock` on `<log_dir>/.lock` and on `<checkpoint_dir>/.lock` (also
  when that is inside log_dir: a second run may name it as its own --checkpoint_dir), held
  until the process ends (the kernel releases it even after SIGKILL), so a second live run
  into the same folders is refused with the first one's host, pid and start time;
- a fresh run (no --resume) whose --checkpoint_dir holds the checkpoints of another run (its
  run.json names another --log_dir, or it lies in another run's log folder) is refused,
  naming that run, with or without --overwrite;
- a fresh run into folders that already hold this --log_dir's earlier run (its logs, or
  checkpoints in its own checkpoint folder) is refused; with --overwrite those are moved
  aside into `<log_dir>/replaced-<time>/`, so nothing already written is lost. --overwrite
  moves only files inside this run's --log_dir or in a --checkpoint_dir that is this run's
  own (its run.json names this --log_dir, or this --log_dir's flags.json names it).

A refused run leaves the folders as it found them: the folders and `.lock` files it created
are removed again (a folder that did not exist held no run; the lock was still needed while
checking, against a second run starting at the same moment).

Why our own: Keras's `BackupAndRestore` and TensorFlow's checkpoint manager neither lock a
folder nor protect another run's logs.
"""

import datetime
import fcntl
import json
import os
import shutil
import socket

LOG_FILES = ("metrics.jsonl", "steps.jsonl", "flags.json", "tensorboard", "model.keras",
             "saved_model")
RUN_MARKS = ("flags.json", "metrics.jsonl")  # what makes a folder a run's log folder
_held = []  # open lock files: kept for the life of the process


class FolderInUseError(RuntimeError):
    """Another live run holds the folder, or a fresh run would replace another run's files."""


def absent_folders(*directories):
    """The folders (each of `directories` and its ancestors) that do not exist yet, deepest
    first: what a run that creates `directories` must remove to leave no trace."""
    absent = []
    for directory in directories:
        folder = os.path.abspath(directory)
        while not os.path.exists(folder) and folder not in absent:
            absent.append(folder)
            folder = os.path.dirname(folder)
    return sorted(absent, key=lambda path: path.count(os.sep), reverse=True)


def remove_folders(folders):
    """Removes `folders` (from `absent_folders`) where they are still empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:  # gone, or something else was put there meanwhile: kept
            pass


def _lock(directory):
    """Locks `<directory>/.lock` (creating the folder); returns (the open lock file, whether
    this call created the file)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ".lock")
    while True:
        try:
            handle, created = open(path, "x+"), True  # noqa: SIM115  (held open until the end)
        except FileExistsError:
            handle, created = open(path, "a+"), False  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise FolderInUseError(
                f"{directory} is in use by a live run ({owner}). Wait for it to end, or give "
                "this run another --log_dir/--checkpoint_dir.") from None
        # A refused run removes the .lock it created: a lock taken on that removed file
        # guards nothing, so lock the file now at the path.
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return handle, created
        handle.close()


def _write_owner(handle):
    handle.seek(0)
    handle.truncate()
    handle.write(f"host {socket.gethostname()}, pid {os.getpid()}, started "
                 f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
    handle.flush()


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def checkpoint_files(checkpoint_dir):
    """The checkpoint files a run left in `checkpoint_dir`, as paths."""
    if not os.path.isdir(checkpoint_dir):
        return []
    return [os.path.join(checkpoint_dir, name) for name in sorted(os.listdir(checkpoint_dir))
            if name.startswith(("ckpt-", "run.json", "checkpoint", "writing-ckpt-"))]


def previous_run_files(log_dir, checkpoint_dir):
    """What an earlier run left in these folders (logs, checkpoints), as paths."""
    found = [os.path.join(log_dir, name) for name in LOG_FILES
             if os.path.exists(os.path.join(log_dir, name))]
    return found + checkpoint_files(checkpoint_dir)


def checkpoint_owner(checkpoint_dir):
    """The log folder of the run whose checkpoints `checkpoint_dir` holds: the --log_dir its
    run.json records, else the run folder it lies in (itself or the nearest folder above
    with a run's flags.json or metrics.jsonl); None when neither tells."""
    try:
        with open(os.path.join(checkpoint_dir, "run.json")) as f:
            recorded = json.load(f).get("log_dir")
    except (OSError, ValueError, AttributeError):  # absent, unreadable, not a dict
        recorded = None
    if isinstance(recorded, str) and recorded:
        return recorded
    folder = os.path.abspath(checkpoint_dir)
    while True:
        if any(os.path.exists(os.path.join(folder, name)) for name in RUN_MARKS):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _named_by_flags(log_dir, checkpoint_dir):
    """Whether this --log_dir's earlier run (its flags.json) used `checkpoint_dir`."""
    try:
        with open(os.path.join(log_dir, "flags.json")) as f:
            used = json.load(f).get("checkpoint_dir")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(used, str) and bool(used) and os.path.realpath(used) == os.path.realpath(
        checkpoint_dir)


def _refuse_another_runs_checkpoints(log_dir, checkpoint_dir):
    """Raises when `checkpoint_dir` holds checkpoints that are not this --log_dir's run's."""
    found = checkpoint_files(checkpoint_dir)
    if not found or _inside(checkpoint_dir, log_dir):
        return
    owner = checkpoint_owner(checkpoint_dir)
    if owner is not None and os.path.realpath(owner) == os.path.realpath(log_dir):
        return
    if owner is None and _named_by_flags(log_dir, checkpoint_dir):
        return
    whose = (f"another run (--log_dir={owner})" if owner is not None else
             "a run that it does not name (its run.json records no --log_dir and it lies in no "
             "run's folder)")
    raise FolderInUseError(
        f"--checkpoint_dir={checkpoint_dir} holds the checkpoints of {whose}. Give this run "
        "its own --checkpoint_dir (by default <log_dir>/checkpoints), or continue that run "
        "with its own --log_dir and --resume; --overwrite moves only this run's own files, "
        "never another run's. Nothing was changed.")


def _refuse_or_move_aside(log_dir, checkpoint_dir, overwrite):
    _refuse_another_runs_checkpoints(log_dir, checkpoint_dir)
    earlier = previous_run_files(log_dir, checkpoint_dir)
    if not earlier:
        return None
    if not overwrite:
        folders = []
        for path in earlier:
            if os.path.dirname(path) not in folders:
                folders.append(os.path.dirname(path))
        shown = ", ".join(os.path.basename(p) for p in earlier[:4]) + (
            ", ..." if len(earlier) > 4 else "")
        raise FolderInUseError(
            f"{' and '.join(folders)} already holds checkpoints or logs of an earlier run of "
            f"this --log_dir ({shown}). Pass --resume to continue it, --overwrite to start "
            "afresh (its files are moved aside, not deleted), or choose another --log_dir; "
            "nothing was changed.")
    aside = os.path.join(log_dir, "replaced-" + datetime.datetime.now().strftime(
        "%Y%m%d-%H%M%S"))
    for path in earlier:
        target = os.path.join(aside, os.path.relpath(path, log_dir)) if os.path.abspath(
            path).startswith(os.path.abspath(log_dir) + os.sep) else os.path.join(
            aside, "checkpoints", os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(path, target)
    return aside


def claim(log_dir, checkpoint_dir, resume, overwrite):
    """Locks the folders and checks that a fresh run replaces nothing (see the module doc);
    returns the folder the earlier files were moved to with `overwrite`, else None. A refusal
    (FolderInUseError) leaves the folders as they were."""
    created_folders = absent_folders(log_dir, checkpoint_dir)
    folders = [log_dir]
    if os.path.abspath(checkpoint_dir) != os.path.abspath(log_dir):
        # Locked even inside log_dir: another run may name it as its own --checkpoint_dir.
        folders.append(checkpoint_dir)
    locks = []
    try:
        for folder in folders:
            locks.append(_lock(folder))
        aside = None if resume else _refuse_or_move_aside(log_dir, checkpoint_dir, overwrite)
    except FolderInUseError:
        for handle, created in reversed(locks):
            if created:  # removed while still locked (see _lock)
                os.remove(handle.name)
            handle.close()
        remove_folders(created_folders)
        raise
    for handle, _ in locks:
        _write_owner(handle)
        _held.append(handle)
    return aside
