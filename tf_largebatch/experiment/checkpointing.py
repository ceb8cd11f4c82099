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

A save that fails (a full disk: TensorFlow's `ResourceExhaustedError`) removes its partial
files (TensorFlow's `ckpt-<N>_temp/` folder, the uncommitted `ckpt-<N>.*`) and raises a
`CheckpointError` naming the folder and the space a checkpoint needs; a writer killed
mid-save leaves such temporaries, which the next run holding the folder's lock removes
(`remove_temporaries`).

Checkpoints are named `ckpt-<epoch>` after `<epoch>` complete epochs, and
`ckpt-<epoch>-<s>` mid-epoch, `s` steps into the next epoch (on a signal or every
`--checkpoint_every_steps`, see `preemption`); those also keep the epoch's training metrics
so far (`partial_epoch` in run.json).

`TF_LARGEBATCH_KILL_AT=<point>[@N][:SIGNAL]` sends SIGKILL (or SIGNAL, e.g. `TERM`) to the
process the N-th time (default 1st) it reaches `<point>` (`checkpoint-saved`: the
checkpoint files are written, run.json is not; `state-written`: the new run.json is written
under its temporary name, not renamed; `step-done`: a training step ended; `eval-batch`: a
validation batch ended): the
fault-injection hook of the crash tests.
"""

import errno
import glob
import json
import os
import re
import shutil

import keras
from absl import logging

from tf_largebatch.experiment.position import RunPosition
from tf_largebatch.faults import fault_point

STATE = "run.json"
# What a save in progress writes besides the checkpoint: TensorFlow's `ckpt-<N>_temp/` folder
# and `checkpoint.tmp<id>` file, the `writing-ckpt-<N>` files of `WeightsFileCheckpointer`.
TEMPORARIES = ("ckpt-*_temp*", "checkpoint.tmp*", "writing-ckpt-*")


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used as asked."""


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
        # The run's position (`position.RunPosition`), set once by the run after its resume
        # point is known: each save records the logs' step, the optimizer's plus its
        # `log_step_offset`.
        self.position = RunPosition()
        # The run's --log_dir (absolute), recorded in run.json: whose checkpoints these are
        # (run_folder.claim refuses another run's). None: not recorded.
        self.log_dir = None

    # Format-specific parts.
    def _write(self, name):
        """Writes the checkpoint `name` (`ckpt-<epoch>` or `ckpt-<epoch>-<s>`); returns its
        path."""
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
            return self._state_from_files(err)

    def _state_from_files(self, err):
        """run.json is unreadable: the commit point is lost, the checkpoints may not be. Their
        names give each one's epoch (and steps into the next); restore() reads the step from
        the checkpoint itself. The unreadable file is kept as run.json.unreadable."""
        found = [(path, re.fullmatch(r"ckpt-(\d+)(?:-(\d+))?", os.path.basename(path).split(
            ".")[0])) for path in self._files()]
        history = [dict(checkpoint=os.path.basename(path), epoch=int(m.group(1)), step=None,
                        **({"partial_epoch": {"steps": int(m.group(2))}} if m.group(2) else {}))
                   for path, m in found if m]
        if not history:
            raise CheckpointError(
                f"{self.state_path} is unreadable ({err}) and {self.directory} holds no "
                "checkpoint files. Restore run.json or start a new run elsewhere.") from err
        if not os.path.exists(self.state_path + ".unreadable"):
            try:
                shutil.copyfile(self.state_path, self.state_path + ".unreadable")
            except OSError:
                pass
        logging.warning("%s is unreadable (%s): resuming from the checkpoint files themselves "
                        "(newest %s); the facts run.json kept (k·n, training means of a partial "
                        "epoch) are taken from this run's flags. The unreadable file is kept as "
                        "%s.unreadable.", self.state_path, err, history[-1]["checkpoint"],
                        STATE)
        return dict(history[-1], history=history)

    @property
    def latest(self):
        """The newest checkpoint file here, committed or not (None if there is none)."""
        files = self._files()
        return files[-1] if files else None

    def save(self, epoch, run_facts, partial_epoch=None):
        """Saves after `epoch` complete epochs (and `partial_epoch["steps"]` steps of the next,
        with its training metrics so far `partial_epoch["means"]`); returns the path."""
        os.makedirs(self.directory, exist_ok=True)
        name = f"ckpt-{epoch}" + (f"-{partial_epoch['steps']}" if partial_epoch else "")
        try:
            path = self._write(name)
        except Exception as err:
            # Its partial files, unless run.json names a checkpoint of that name (then whole).
            named = {e["checkpoint"].split(".")[0]
                     for e in (self.committed() or {}).get("history", [])}
            self.remove_temporaries(() if name in named else (glob.escape(name) + ".*",))
            if not out_of_space(err):
                raise
            raise CheckpointError(
                f"{self.directory}: checkpoint {name} could not be written, no space left on "
                f"that disk (a checkpoint of this run needs about {self.size() / 2**20:.1f} "
                "MiB; its partial files were removed). To continue: free space there, or move "
                f"{self.directory} to a disk with room and pass that as --checkpoint_dir; "
                "then run the same command with --resume (the checkpoints committed in "
                "run.json are kept).") from err
        fault_point("checkpoint-saved")
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        entry = dict(checkpoint=os.path.basename(path), epoch=epoch, step=step,
                     log_step=step + self.position.log_step_offset)
        if partial_epoch:
            entry["partial_epoch"] = partial_epoch
        previous = self.committed() or {}
        history = [e for e in previous.get("history", []) if e["checkpoint"] != entry["checkpoint"]]
        history = (history + [entry])[-self.keep:]
        owner = {"log_dir": self.log_dir} if self.log_dir else {}
        write_json_atomically(self.state_path, dict(run_facts, **owner, **entry, history=history))
        self._remove_all_but({os.path.join(self.directory, e["checkpoint"]) for e in history})
        return path

    def remove_temporaries(self, extra=()):
        """Deletes what saves in progress write here (`TEMPORARIES`) and the `extra` patterns:
        left by a failed save, or by a writer killed mid-save. Only for the holder of the
        folder's lock (after `run_folder.claim`): no save of another process is in flight."""
        for pattern in (*TEMPORARIES, *extra):
            for path in glob.glob(os.path.join(glob.escape(self.directory), pattern)):
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)

    def size(self):
        """Bytes of the variables a checkpoint holds (model and optimizer): about its size."""
        variables = [*self.model.variables, *self.model.optimizer.variables]
        return sum(keras.ops.convert_to_numpy(v).nbytes for v in variables)

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
            if entry["step"] is None:  # rebuilt without run.json: the checkpoint's own step
                entry = dict(entry, step=int(keras.ops.convert_to_numpy(
                    self.model.optimizer.iterations)))
            if failures:
                logging.warning("Skipped checkpoints that could not be read: %s.", "; ".join(
                    f"{p} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                    for p, e in failures))
            logging.info("Resumed from %s (epoch %d, step %d).", path, entry["epoch"],
                         entry["step"])
            state.pop("partial_epoch", None)  # the newest entry's, maybe not this one's
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

    def _write(self, name):
        epoch = re.fullmatch(r"ckpt-(\d+)", name)
        if epoch:
            return self.manager.save(checkpoint_number=int(epoch.group(1)))
        # Mid-epoch: outside the manager, whose rotation counts only its own saves.
        return self.checkpoint.write(os.path.join(self.directory, name))

    def _read(self, path, step):
        # `read` through a fresh object: `restore` would create `save_counter` first, which a
        # mid-epoch `write()` (made before any `save()`) never stored, and the match failed.
        import tensorflow as tf

        reader = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
        reader.read(path).assert_existing_objects_matched()
        if tf.train.load_checkpoint(path).has_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE"):
            # A `save()` stored it: creating it now restores it, else TensorFlow would warn
            # "Value in checkpoint could not be found ... save_counter", as for a failed
            # restore. (Values missing from the model are still refused by the assert.)
            reader.save_counter  # noqa: B018  (the property creates and restores it)

    def _files(self):
        return checkpoint_files(self.directory, ".index")

    def _remove_all_but(self, kept):
        for path in self._files():
            if path not in kept:
                for part in glob.glob(glob.escape(path) + ".*"):
                    os.remove(part)


class WeightsFileCheckpointer(_Checkpoints):
    """`<directory>/ckpt-<epoch>.weights.h5` (model and optimizer variables, momentum buffers
    and step included), each written under a temporary name, fsynced and renamed."""

    def _files(self):
        return [path + ".weights.h5" for path in checkpoint_files(self.directory, ".weights.h5")]

    def _write(self, name):
        path = os.path.join(self.directory, f"{name}.weights.h5")
        tmp = os.path.join(self.directory, f"writing-{name}.weights.h5")
        self.model.save_weights(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def _read(self, path, step):
        self.model.load_weights(path)
        restored = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        # Keras only warns when the optimizer's variables differ.
        if step is not None and restored != step:
            raise ValueError(f"optimizer step {restored}, run.json says {step}")

    def _remove_all_but(self, kept):
        for path in self._files():
            if path not in kept:
                os.remove(path)


def checkpoint_files(directory, suffix):
    """Paths (without `suffix`) of the `ckpt-<epoch>[-<s>]<suffix>` files in `directory`,
    oldest first."""
    found = {}
    for path in glob.glob(os.path.join(directory, "ckpt-*" + suffix)):
        match = re.fullmatch(r"ckpt-(\d+)(?:-(\d+))?" + re.escape(suffix),
                             os.path.basename(path))
        if match:
            found[(int(match.group(1)), int(match.group(2) or 0))] = path[: -len(suffix)]
    return [found[key] for key in sorted(found)]


def out_of_space(err):
    """Whether `err` (TensorFlow's, h5py's or an OSError) says the disk or quota is full."""
    return (type(err).__name__ == "ResourceExhaustedError"
            or getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
            or "No space left on device" in str(err))


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
