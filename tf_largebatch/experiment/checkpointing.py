"""Per-epoch checkpoints that resume exactly, with one commit point: `run.json`.

A save writes the checkpoint files first (TensorFlow's `tf.train.Checkpoint` +
`CheckpointManager` in `Checkpointer`; Keras `.weights.h5` files in
`WeightsFileCheckpointer`, for backends without TensorFlow), then `run.json`, written to a
temporary name, fsynced and renamed. `run.json` names the checkpoint it belongs to with its
epoch, global step and the run's facts (k, n, kn, data fingerprint, ...), and lists the
older checkpoints still kept. A resume reads `run.json` and restores the checkpoint it
names, never "the newest file": a kill at any point of a save leaves either the previous
commit or the new one, never a checkpoint of epoch N with the state of epoch N − 1. A
checkpoint that cannot be read (truncated, a full disk) is skipped for the next older one,
with a warning naming it.

`TF_LARGEBATCH_KILL_AT=<point>[@N]` kills the process with SIGKILL when a save reaches
`<point>` (`checkpoint-saved`: the checkpoint files are written, run.json is not;
`state-written`: the new run.json is written under its temporary name, not renamed) for
the N-th time: the fault-injection hook of the crash tests.
"""

import glob
import json
import os
import re
import signal

import keras
from absl import logging

STATE = "run.json"


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used as asked."""


_reached = {}


def fault_point(name):
    """Kills this process (SIGKILL, as the OOM killer or a node failure would) when
    TF_LARGEBATCH_KILL_AT is `name` or `name@N` and this is the N-th time (default 1st) the
    save reaches it: the crash tests' hook; a no-op otherwise."""
    target = os.environ.get("TF_LARGEBATCH_KILL_AT", "")
    point, _, count = target.partition("@")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def write_json_atomically(path, value):
    """Writes `value` to `path` through a temporary file, fsynced, then renamed over it."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    fault_point("state-written")
    os.replace(tmp, path)
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class _Checkpoints:
    """The commit protocol shared by both formats; subclasses write and read the files."""

    def __init__(self, directory, model, keep=3):
        self.directory = directory
        self.model = model
        self.keep = keep
        self.state_path = os.path.join(directory, STATE)

    # Format-specific parts.
    def _write(self, epoch):
        """Writes the checkpoint of `epoch`; returns its path."""
        raise NotImplementedError

    def _read(self, path, step):
        """Restores model and optimizer from `path`, the checkpoint of global step `step`."""
        raise NotImplementedError

    def _files(self):
        """Paths of the checkpoints on disk, committed or not."""
        raise NotImplementedError

    def _remove_all_but(self, kept):
        """Deletes the checkpoints whose path is not in `kept`."""

    # The protocol.
    def committed(self):
        """run.json's contents, or None when no checkpoint was ever committed here."""
        if not os.path.exists(self.state_path):
            return None
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"{self.state_path} is unreadable ({err}); the checkpoints cannot be resumed "
                "without it. Restore the file or start a new run elsewhere.") from err

    @property
    def latest(self):
        """The newest checkpoint file here, committed or not (None if there is none)."""
        files = self._files()
        return files[-1] if files else None

    def save(self, epoch, run_facts):
        """Saves after `epoch` epochs are complete; returns the checkpoint's path."""
        os.makedirs(self.directory, exist_ok=True)
        path = self._write(epoch)
        fault_point("checkpoint-saved")
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        entry = dict(checkpoint=os.path.basename(path), epoch=epoch, step=step)
        previous = self.committed() or {}
        history = [e for e in previous.get("history", []) if e["checkpoint"] != entry["checkpoint"]]
        history = (history + [entry])[-self.keep:]
        write_json_atomically(self.state_path, dict(run_facts, **entry, history=history))
        self._remove_all_but({os.path.join(self.directory, e["checkpoint"]) for e in history})
        return path

    def restore(self):
        """Restores the newest committed checkpoint that can be read; returns run.json's
        contents with that checkpoint's epoch and step."""
        state = self.committed()
        if state is None:
            raise CheckpointError(
                f"--resume: no checkpoint in {self.directory}. Start without --resume, or "
                "point --checkpoint_dir at the directory of the run to continue.")
        entries = state.get("history") or [
            {key: state[key] for key in ("checkpoint", "epoch", "step")}]
        failures = []
        for entry in reversed(entries):
            path = os.path.join(self.directory, entry["checkpoint"])
            try:
                self._read(path, entry["step"])
            except Exception as err:  # noqa: BLE001  (TF and h5py raise many kinds)
                failures.append((path, err))
                continue
            if failures:
                logging.warning("Skipped checkpoints that could not be read: %s.", "; ".join(
                    f"{p} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                    for p, e in failures))
            logging.info("Resumed from %s (epoch %d, step %d).", path, entry["epoch"],
                         entry["step"])
            return dict(state, **entry)
        raise mismatch(*failures[0])


class Checkpointer(_Checkpoints):
    """TensorFlow checkpoints `ckpt-<epoch>` (model, optimizer with its momentum buffers and
    previous rate, step), written by `tf.train.CheckpointManager`."""

    def __init__(self, directory, model, keep=3):
        import tensorflow as tf  # here, so WeightsFileCheckpointer works without TensorFlow

        super().__init__(directory, model, keep)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        # One more than kept: the manager must not delete what run.json still names.
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                  max_to_keep=keep + 1)

    def _write(self, epoch):
        return self.manager.save(checkpoint_number=epoch)

    def _read(self, path, step):
        self.checkpoint.restore(path).assert_existing_objects_matched()

    def _files(self):
        found = {}
        for index in glob.glob(os.path.join(self.directory, "ckpt-*.index")):
            match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
            if match:
                found[int(match.group(1))] = index[: -len(".index")]
        return [found[e] for e in sorted(found)]

    def _remove_all_but(self, kept):
        for path in self._files():
            if path not in kept:
                for part in glob.glob(glob.escape(path) + ".*"):
                    os.remove(part)


class WeightsFileCheckpointer(_Checkpoints):
    """`<directory>/ckpt-<epoch>.weights.h5` (model and optimizer variables, momentum buffers
    and step included), each written under a temporary name, fsynced and renamed."""

    def _files(self):
        found = {}
        for path in glob.glob(os.path.join(self.directory, "ckpt-*.weights.h5")):
            match = re.fullmatch(r"ckpt-(\d+)\.weights\.h5", os.path.basename(path))
            if match:
                found[int(match.group(1))] = path
        return [found[e] for e in sorted(found)]

    def _write(self, epoch):
        path = os.path.join(self.directory, f"ckpt-{epoch}.weights.h5")
        tmp = os.path.join(self.directory, f"writing-ckpt-{epoch}.weights.h5")
        self.model.save_weights(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def _read(self, path, step):
        self.model.load_weights(path)
        restored = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if restored != step:  # Keras only warns when the optimizer's variables differ
            raise ValueError(f"optimizer step {restored}, run.json says {step}")

    def _remove_all_but(self, kept):
        for path in self._files():
            if path not in kept:
                os.remove(path)


def mismatch(path, err):
    return CheckpointError(
        f"{path} does not fit this model/optimizer or cannot be read "
        f"({str(err).splitlines()[0] if str(err) else type(err).__name__}). Resume with the "
        "same --model, --optimizer and --mixed_precision as the run that wrote it.")


class SaveCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch (chief worker only)."""

    def __init__(self, checkpointer, run_facts):
        super().__init__()
        self.checkpointer = checkpointer
        self.run_facts = run_facts

    def on_epoch_end(self, epoch, logs=None):
        self.checkpointer.save(epoch + 1, self.run_facts)
