"""Per-epoch checkpoints that resume exactly: weights, optimizer state, epoch, step.

`Checkpointer`: TensorFlow's `tf.train.Checkpoint` + `CheckpointManager` do the
writing (atomically, keeping the last few). `WeightsFileCheckpointer`: the same
with Keras's own `.weights.h5` files, for backends without TensorFlow. In both,
`run.json` beside the files records the numbers a resume must check (epoch,
global step, k, n, global batch).
"""

import glob
import json
import os
import re

import keras
from absl import logging


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used as asked."""


class Checkpointer:
    def __init__(self, directory, model, keep=3):
        import tensorflow as tf  # here, so WeightsFileCheckpointer works without TensorFlow

        self.directory = directory
        self.model = model
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)
        self.state_path = os.path.join(directory, "run.json")

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def save(self, epoch, run_facts):
        """Saves after `epoch` epochs are complete."""
        path = self.manager.save(checkpoint_number=epoch)
        write_state(self.state_path, self.model, epoch, run_facts, path)
        return path

    def restore(self):
        """Restores the latest checkpoint; returns its run.json contents."""
        import tensorflow as tf

        state = read_state(self.directory, self.latest, self.state_path)
        try:
            self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise mismatch(self.latest, err) from err
        logging.info("Resumed from %s (epoch %d, step %d).", self.latest, state["epoch"],
                     state["step"])
        return state


class WeightsFileCheckpointer:
    """`<directory>/ckpt-<epoch>.weights.h5` (model and optimizer variables, momentum buffers
    and step included), each written under a temporary name and renamed; the last `keep` kept."""

    def __init__(self, directory, model, keep=3):
        self.directory = directory
        self.model = model
        self.keep = keep
        self.state_path = os.path.join(directory, "run.json")

    def _by_epoch(self):
        found = {}
        for path in glob.glob(os.path.join(self.directory, "ckpt-*.weights.h5")):
            match = re.fullmatch(r"ckpt-(\d+)\.weights\.h5", os.path.basename(path))
            if match:
                found[int(match.group(1))] = path
        return [found[e] for e in sorted(found)]

    @property
    def latest(self):
        paths = self._by_epoch()
        return paths[-1] if paths else None

    def save(self, epoch, run_facts):
        """Saves after `epoch` epochs are complete."""
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"ckpt-{epoch}.weights.h5")
        tmp = os.path.join(self.directory, f"writing-ckpt-{epoch}.weights.h5")
        self.model.save_weights(tmp)
        os.replace(tmp, path)
        write_state(self.state_path, self.model, epoch, run_facts, path)
        for old in self._by_epoch()[:-self.keep]:
            os.remove(old)
        return path

    def restore(self):
        """Restores the latest checkpoint; returns its run.json contents."""
        state = read_state(self.directory, self.latest, self.state_path)
        try:
            self.model.load_weights(self.latest)
        except (ValueError, KeyError, OSError) as err:
            raise mismatch(self.latest, err) from err
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step != state["step"]:  # Keras only warns when the optimizer's variables differ
            raise mismatch(self.latest, f"optimizer step {step}, run.json says {state['step']}")
        logging.info("Resumed from %s (epoch %d, step %d).", self.latest, state["epoch"], step)
        return state


def write_state(state_path, model, epoch, run_facts, checkpoint_path):
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    state = dict(run_facts, epoch=epoch, step=step, checkpoint=os.path.basename(checkpoint_path))
    tmp = state_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, state_path)


def read_state(directory, latest, state_path):
    if latest is None:
        raise CheckpointError(
            f"--resume: no checkpoint in {directory}. Start without --resume, or "
            "point --checkpoint_dir at the directory of the run to continue."
        )
    try:
        with open(state_path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{state_path} is missing or unreadable ({err}); the checkpoint cannot "
            "be resumed without it. Restore the file or start a new run elsewhere."
        ) from err


def mismatch(path, err):
    return CheckpointError(
        f"{path} does not fit this model/optimizer ({str(err).splitlines()[0]}). "
        "Resume with the same --model, --optimizer and --mixed_precision as the run "
        "that wrote it."
    )


class SaveCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch (chief worker only)."""

    def __init__(self, checkpointer, run_facts):
        super().__init__()
        self.checkpointer = checkpointer
        self.run_facts = run_facts

    def on_epoch_end(self, epoch, logs=None):
        self.checkpointer.save(epoch + 1, self.run_facts)
