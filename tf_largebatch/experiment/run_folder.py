"""Owned run folders: one live run per folder, and no fresh run over another run's logs.

`claim(log_dir, checkpoint_dir, resume, overwrite)` runs on the chief before training:
- it takes an exclusive `flock` on `<log_dir>/.lock` and on `<checkpoint_dir>/.lock` (also
  when that is inside log_dir: a second run may name it as its own --checkpoint_dir), held
  until the process ends (the kernel releases it even after SIGKILL), so a second live run
  into the same folders is refused with the first one's host, pid and start time;
- a fresh run (no --resume) into a folder that already holds a run's logs or checkpoints is
  refused; with --overwrite those are moved aside into `<log_dir>/replaced-<time>/`, so
  nothing already written is lost.

Why our own: Keras's `BackupAndRestore` and TensorFlow's checkpoint manager neither lock a
folder nor protect another run's logs.
"""

import datetime
import fcntl
import os
import shutil
import socket

LOG_FILES = ("metrics.jsonl", "steps.jsonl", "flags.json", "tensorboard", "model.keras",
             "saved_model")
_held = []  # open lock files: kept for the life of the process


class FolderInUseError(RuntimeError):
    """Another live run holds the folder, or a fresh run would replace another run's files."""


def _lock(directory):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ".lock")
    handle = open(path, "a+")  # noqa: SIM115  (held open until the process ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise FolderInUseError(
            f"{directory} is in use by a live run ({owner}). Wait for it to end, or give this "
            "run another --log_dir/--checkpoint_dir.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"host {socket.gethostname()}, pid {os.getpid()}, started "
                 f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
    handle.flush()
    _held.append(handle)


def previous_run_files(log_dir, checkpoint_dir):
    """What an earlier run left in these folders (logs, checkpoints), as paths."""
    found = [os.path.join(log_dir, name) for name in LOG_FILES
             if os.path.exists(os.path.join(log_dir, name))]
    if os.path.isdir(checkpoint_dir):
        found += [os.path.join(checkpoint_dir, name) for name in sorted(os.listdir(checkpoint_dir))
                  if name.startswith(("ckpt-", "run.json", "checkpoint", "writing-ckpt-"))]
    return found


def claim(log_dir, checkpoint_dir, resume, overwrite):
    """Locks the folders and checks that a fresh run replaces nothing (see the module doc);
    returns the folder the earlier files were moved to with `overwrite`, else None."""
    _lock(log_dir)
    if os.path.abspath(checkpoint_dir) != os.path.abspath(log_dir):
        # Locked even inside log_dir: another run may name it as its own --checkpoint_dir.
        _lock(checkpoint_dir)
    if resume:
        return None
    earlier = previous_run_files(log_dir, checkpoint_dir)
    if not earlier:
        return None
    if not overwrite:
        shown = ", ".join(os.path.basename(p) for p in earlier[:4]) + (
            ", ..." if len(earlier) > 4 else "")
        raise FolderInUseError(
            f"{log_dir} already holds checkpoints or logs of a run ({shown}). Pass --resume to "
            "continue it, "
            "--overwrite to start afresh (its files are moved aside, not deleted), or choose "
            "another --log_dir; nothing was changed.")
    aside = os.path.join(log_dir, "replaced-" + datetime.datetime.now().strftime(
        "%Y%m%d-%H%M%S"))
    for path in earlier:
        target = os.path.join(aside, os.path.relpath(path, log_dir)) if os.path.abspath(
            path).startswith(os.path.abspath(log_dir) + os.sep) else os.path.join(
            aside, "checkpoints", os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(path, target)
    return aside
