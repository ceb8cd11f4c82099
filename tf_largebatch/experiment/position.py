"""The run's position, as one object, and the one resume policy that finds it.

`resume_point(config, checkpointer, layout, optimizer, run_facts)` reads the checkpoint
folder and returns a `RunPosition`: where the run starts (after how many epochs, how many
steps into the next, that partial epoch's training means so far) and how the logs' step
relates to the optimizer's. `run_experiment` hands that one object to everything that needs
it: the checkpointer (`checkpointer.position`: run.json records the logs' step), the
`RunLogger` (which lines to drop, the step to log) and the preemption callbacks (the saved
means of a resumed epoch).
"""

import dataclasses
import json
import os

from absl import logging

from tf_largebatch.experiment.errors import TrainError


@dataclasses.dataclass(frozen=True)
class RunPosition:
    """Where a run starts: after `epoch` complete epochs and `steps_into_epoch` steps of the
    next (whose training metrics so far, averaged over the workers, are `means`; None: none
    saved). `log_step` is the number of updates the run had taken (the logs' step) and
    `log_step_offset` what to add to the optimizer's step to get it: 0 unless k·n changed,
    which restarts the optimizer's step count in the new units while the logs keep counting
    updates (so their steps stay unique and increasing). `finished`: the run had trained all
    its epochs; nothing is left to train. `RunPosition()` is a fresh run's start."""

    epoch: int = 0
    steps_into_epoch: int = 0
    means: dict | None = None
    log_step: int = 0
    log_step_offset: int = 0
    finished: bool = False

    @property
    def mid_epoch(self) -> bool:
        """The run starts inside epoch `epoch` (a mid-epoch checkpoint, or one whose epoch was
        trained whole but not validated: `steps_into_epoch` = the steps per epoch)."""
        return self.steps_into_epoch > 0

    @property
    def resumed_means(self) -> bool:
        """The epoch it starts in has saved training means, which its logged means combine
        with those of the steps still to train (`preemption.ResumedEpochMetrics`)."""
        return bool(self.means)


# Facts of a run that a resume must not change silently, and the flag that sets each. (k and
# n may change: a job restarted on another number of workers; the resume warns and rescales.)
RESUME_MUST_MATCH = {
    "model": "--model",
    "image_size": "--image_size",
    "optimizer": "--optimizer",
    "mixed_precision": "--mixed_precision",
    "seed": "--seed",
    "base_lr": "--base_lr",
    "base_batch": "--base_batch",
    "train_examples": "--dataset/--data_dir (the training set's size)",
    "num_classes": "--dataset/--data_dir (the class count)",
    "class_names": "--dataset/--data_dir (the class names)",
    "data_fingerprint": "--dataset/--data_dir (the training files: names, labels, sizes)",
}


def check_resume_facts(state, run_facts):
    """Refuses to resume when the model, the reference rate or the data set differ from the
    checkpoint's, naming the flag and the run's own value."""
    for key, flag in RESUME_MUST_MATCH.items():
        if key in state and key in run_facts and state[key] != run_facts[key]:
            raise TrainError(
                f"--resume: the checkpoint's run has {key} = {state[key]!r}, this one "
                f"{run_facts[key]!r}. Resume with the run's own {flag} (its flags.json has them "
                "all), or start a new run in another --log_dir; nothing was changed.")


def trained_to_its_end(log_dir: str, epoch: int) -> bool:
    """Whether the run in `log_dir` was started for the `epoch` epochs its checkpoint holds
    (its flags.json's --epochs): a killed 400-epoch run at epoch 2 was not."""
    try:
        with open(os.path.join(log_dir, "flags.json")) as f:
            return json.load(f).get("epochs") == epoch
    except (OSError, ValueError):
        return False


def resume_point(config, checkpointer, layout, optimizer, run_facts) -> RunPosition:
    """Where to start from, by one policy for every trainer; restores the checkpoint into the
    model and `optimizer` when there is one to resume.

    A fresh run refuses a --checkpoint_dir that already holds checkpoints. A resumed run
    (--resume, or --resume=auto when the folders hold a run) continues after the newest
    committed checkpoint (run.json), skipping unreadable ones; a folder whose run was killed
    before its first commit starts from the beginning, with a warning; a run that trained
    every epoch it was started for (`trained_to_its_end`) is `finished`: nothing to train,
    the caller writes what its final save lacks.
    If k·n or the steps per epoch changed (a job restarted on another number of workers),
    the rate follows the linear rule for the new global batch and the global step restarts
    at epoch × the new steps per epoch (a mid-epoch checkpoint continues at the same place
    in the epoch's order, rounded down to a whole new global batch), with a warning saying
    so. The model, the reference rate and the data set must not change.

    Args:
      config: the run's `experiment.config.ExperimentConfig`.
      checkpointer: the run's `checkpointing` object.
      layout: the run's `data.layout.BatchLayout`.
      optimizer: the compiled model's optimizer (its step is set here when k·n changed).
      run_facts: the facts run.json keeps beside each checkpoint (`RESUME_MUST_MATCH`).

    Returns:
      the `RunPosition` the run starts from.
    """
    checkpoint_dir, log_dir = config.output.checkpoint_folder, config.output.log_dir
    committed = checkpointer.committed()
    if not config.output.resume:
        if committed is not None or checkpointer.latest is not None:
            raise TrainError(f"{checkpoint_dir} already holds checkpoints "
                             f"({checkpointer.latest or checkpointer.state_path}). Pass --resume "
                             "to continue that run, or choose another --checkpoint_dir/--log_dir;"
                             " nothing was overwritten.")
        return RunPosition()
    if committed is None:
        return _no_committed_checkpoint(config, checkpointer)
    check_resume_facts(committed, run_facts)
    state = checkpointer.restore()
    epoch = state["epoch"]
    log_step = state.get("log_step", state["step"])
    if epoch >= config.schedule.epochs:
        if epoch > config.schedule.epochs or not trained_to_its_end(log_dir, epoch):
            raise TrainError(f"the checkpoint is at epoch {epoch}, not before --epochs="
                             f"{config.schedule.epochs}: raise --epochs to train further.")
        return RunPosition(epoch, log_step=log_step, finished=True)
    partial = state.get("partial_epoch") or {}
    steps_into_epoch = _steps_into_epoch(state, epoch, partial.get("steps", 0), layout,
                                         optimizer)
    step = _optimizer_step(optimizer)
    return RunPosition(epoch, steps_into_epoch,
                       partial.get("means") if steps_into_epoch else None, log_step,
                       log_step - step)


def _no_committed_checkpoint(config, checkpointer) -> RunPosition:
    """A resume where no checkpoint was ever committed: a fresh start (with a warning when the
    run left traces: its run was killed before its first commit); a plain --resume with no
    trace at all raises (`restore`: "--resume: no checkpoint in ...")."""
    checkpoint_dir, log_dir = config.output.checkpoint_folder, config.output.log_dir
    traces = checkpointer.latest or next((p for p in (
        os.path.join(log_dir, "metrics.jsonl"), os.path.join(log_dir, "flags.json"))
        if os.path.exists(p)), None)
    if traces is None:
        if config.output.resume == "auto":  # nothing here yet: the first attempt of a job
            return RunPosition()
        checkpointer.restore()  # raises: "--resume: no checkpoint in ..."
    logging.warning("--resume: %s holds no committed checkpoint (the run stopped before its "
                    "first one was complete): starting from the beginning.", checkpoint_dir)
    return RunPosition()


def _steps_into_epoch(state, epoch, steps_into_epoch, layout, optimizer) -> int:
    """The steps of epoch `epoch` already trained, in this run's global batches: the saved
    count, or when k·n or the steps per epoch changed, that place in the epoch's order
    rounded down to a whole new global batch (an epoch trained whole stays whole), with the
    optimizer's step restarted at epoch × the new steps per epoch plus those steps."""
    before = (state.get("global_batch", layout.global_batch),  # absent: run.json was lost
              state.get("steps_per_epoch", layout.steps_per_epoch))
    if before == (layout.global_batch, layout.steps_per_epoch):
        return steps_into_epoch
    if steps_into_epoch < state["steps_per_epoch"]:  # else: trained, not yet evaluated
        steps_into_epoch = min(steps_into_epoch * state["global_batch"]
                               // layout.global_batch, layout.steps_per_epoch - 1)
    else:
        steps_into_epoch = layout.steps_per_epoch
    logging.warning(
        "Resuming a run of k·n = %d×%d with %d steps per epoch as k·n = %d×%d with %d: the "
        "rate follows the linear rule for the new global batch and the step count restarts "
        "at epoch %d, step %d of it.", state["workers"], state["per_worker_batch"],
        state["steps_per_epoch"], layout.workers, layout.per_worker_batch,
        layout.steps_per_epoch, epoch, steps_into_epoch)
    optimizer.iterations.assign(epoch * layout.steps_per_epoch + steps_into_epoch)
    return steps_into_epoch


def _optimizer_step(optimizer) -> int:
    import keras

    return int(keras.ops.convert_to_numpy(optimizer.iterations))
