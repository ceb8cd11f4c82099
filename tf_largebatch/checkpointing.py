"""Per-epoch checkpoints that resume exactly: weights, optimizer state, epoch, step.

TensorFlow's `tf.train.Checkpoint` + `CheckpointManager` do the writing
(atomically, keeping the last few); `run.json` beside them records the
numbers a resume must check (epoch, global step, k, n, global batch).
"""

import json
import os

import keras
import tensorflow as tf
from absl import logging


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used as asked."""


class Checkpointer:
    def __init__(self, directory, model, keep=3):
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
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        path = self.manager.save(checkpoint_number=epoch)
        state = dict(run_facts, epoch=epoch, step=step, checkpoint=os.path.basename(path))
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, self.state_path)
        return path

    def restore(self):
        """Restores the latest checkpoint; returns its run.json contents."""
        if self.latest is None:
            raise CheckpointError(
                f"--resume: no checkpoint in {self.directory}. Start without --resume, or "
                "point --checkpoint_dir at the directory of the run to continue."
            )
        try:
            with open(self.state_path) as f:
                state = json.load(f)
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"{self.state_path} is missing or unreadable ({err}); the checkpoint cannot "
                "be resumed without it. Restore the file or start a new run elsewhere."
            ) from err
        try:
            self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise CheckpointError(
                f"{self.latest} does not fit this model/optimizer ({str(err).splitlines()[0]}). "
                "Resume with the same --model, --optimizer and --mixed_precision as the run "
                "that wrote it."
            ) from err
        logging.info("Resumed from %s (epoch %d, step %d).", self.latest, state["epoch"],
                     state["step"])
        return state


class SaveCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch (chief worker only)."""

    def __init__(self, checkpointer, run_facts):
        super().__init__()
        self.checkpointer = checkpointer
        self.run_facts = run_facts

    def on_epoch_end(self, epoch, logs=None):
        self.checkpointer.save(epoch + 1, self.run_facts)
