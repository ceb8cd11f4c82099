"""Keras callbacks of the large-minibatch recipe, for any `model.fit`.

The schedule callbacks set a value before every batch from the global step
(`optimizer.iterations`, which checkpoints carry), never from state read back
from the optimizer, so a resumed run gets the same values as an uninterrupted
one. Momentum correction is the optimizer's job (`optimizers.MomentumSGD`),
so it applies whether the rate comes from a schedule or from these callbacks.
"""

import logging
import math

import keras
from keras import ops

from tf_largebatch import curves

logger = logging.getLogger(__name__)


def _base_optimizer(model):
    """The model's optimizer, unwrapped from Keras's LossScaleOptimizer if needed."""
    return getattr(model.optimizer, "inner_optimizer", model.optimizer)


def _global_step(model):
    return int(ops.convert_to_numpy(model.optimizer.iterations))


class LearningRateScheduler(keras.callbacks.Callback):
    """Sets η = schedule(t) before each batch, for an optimizer built with a float rate.

    Use it for warmup and decay (e.g. `schedules.WarmupDecay`) when the optimizer's
    rate must stay a plain variable; adds `lr` to the epoch logs.
    """

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_train_batch_begin(self, batch, logs=None):
        rate = float(ops.convert_to_numpy(self.schedule(_global_step(self.model))))
        self.model.optimizer.learning_rate = rate

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))


class WeightDecayScheduler(keras.callbacks.Callback):
    """Sets the optimizer's L2 weight decay λ = schedule(t) before each batch.

    For `optimizers.MomentumSGD`/`LARS` built with a float λ (Codreanu et al.:
    `schedules.WeightDecaySchedule`, 5e-5 doubled for the last 5–7%). Passing the
    schedule as the optimizer's `weight_decay` does the same inside the graph.
    """

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_train_begin(self, logs=None):
        if not self.model.optimizer.built:  # Keras may build it only in the first step
            self.model.optimizer.build(self.model.trainable_variables)

    def on_train_batch_begin(self, batch, logs=None):
        value = float(ops.convert_to_numpy(self.schedule(_global_step(self.model))))
        _base_optimizer(self.model).l2_variable.assign(value)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            value = _base_optimizer(self.model).l2_variable
            logs["weight_decay"] = float(ops.convert_to_numpy(value))


class AugmentationSwitch(keras.callbacks.Callback):
    """Turns data augmentation off for the last `final_epochs` epochs (Codreanu et al.).

    `enabled` is a boolean `keras.Variable` that a preprocessing function can read;
    `augment_at(epoch)` is the same rule as a pure function, for pipelines that are
    built per epoch (the package's own pipelines use it, so prefetching cannot race
    with the switch).
    """

    def __init__(self, total_epochs, final_epochs):
        super().__init__()
        if not 0 <= final_epochs <= total_epochs:
            raise ValueError(f"final_epochs={final_epochs} must be in [0, {total_epochs}]")
        self.off_from_epoch = total_epochs - final_epochs
        self.enabled = keras.Variable(True, dtype="bool", trainable=False, name="augment")

    def augment_at(self, epoch):
        return epoch < self.off_from_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.enabled.assign(self.augment_at(epoch))


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, before anything is saved.

    Unlike `keras.callbacks.TerminateOnNaN`, which lets the epoch end (and a
    checkpoint callback then save the diverged weights), this raises
    `NonFiniteLossError`, so the last checkpoint written stays the last good one.
    """

    def __init__(self, checkpoint_hint=None):
        super().__init__()
        self.checkpoint_hint = checkpoint_hint

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        rate = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
        where = f" The last good checkpoint is kept in {self.checkpoint_hint}." if (
            self.checkpoint_hint) else ""
        raise NonFiniteLossError(
            f"loss became {loss} at global step {_global_step(self.model)} (learning rate "
            f"{rate:.6g}); training stopped.{where} Large minibatches diverge without "
            "warmup: use gradual warmup (--warmup=gradual), more warmup epochs, or a "
            "lower base rate."
        )


class EarlyCurveCheck(keras.callbacks.Callback):
    """Stops training when the training error leaves the reference's curve early on.

    At each epoch end compares logs["top1_error"] (the train top-1 error, as
    named by run_log.GlobalMetrics, which must come before this callback so
    every worker sees the same averaged value and stops at the same epoch)
    with the reference run's train_top1_error at that epoch, over the epochs
    after warmup (max of the reference's and `warmup_epochs`, this run's) up
    to `fraction` × the reference's logged epochs. Once any epoch differs by
    more than `tolerance` the check has failed (the verdict cannot change):
    it logs why and, with stop=True, sets model.stop_training. After the last
    checked epoch with no such difference it logs that the check passed.
    `result` holds the CheckResult once decided.
    """

    def __init__(self, reference_dir, fraction, tolerance, stop=True, warmup_epochs=0.0):
        super().__init__()
        reference = curves.load_run(reference_dir)
        self.reference_dir = reference_dir
        self.reference_curve = reference.curve("train_top1_error")
        self.first, self.last = curves.check_window(
            reference.epochs, fraction, max(reference.warmup_epochs, warmup_epochs))
        self.tolerance = tolerance
        self.stop = stop
        self.curve = {}
        self.result = None

    def on_epoch_end(self, epoch, logs=None):
        if self.result is not None or logs is None:
            return
        completed = epoch + 1
        if "top1_error" in logs:
            error = float(logs["top1_error"])
        elif "top1" in logs:
            error = 1.0 - float(logs["top1"])
        else:
            raise ValueError("EarlyCurveCheck needs the training top-1 error in the epoch "
                             f"logs ('top1_error'); got keys {sorted(logs)}. Put it after "
                             "run_log.GlobalMetrics.")
        if self.first <= completed <= self.last:
            self.curve[completed] = error
        result = curves.compare_curves(self.reference_curve, self.curve, self.first,
                                       min(completed, self.last), self.tolerance)
        if result.verdict == "FAIL":
            self.result = result
            message = (f"early curve check against {self.reference_dir} failed at epoch "
                       f"{completed}: train top-1 error {100 * error:.2f}% vs the "
                       f"reference's {100 * self.reference_curve[completed]:.2f}%. "
                       f"{result.describe()}")
            if self.stop:
                logger.error("%s. Stopping training.", message)
                self.model.stop_training = True
            else:
                logger.warning("%s (stop=False: training continues).", message)
        elif completed >= self.last:
            self.result = curves.compare_curves(self.reference_curve, self.curve, self.first,
                                                self.last, self.tolerance)
            if self.result.verdict == "INCOMPLETE":
                logger.warning(
                    "early curve check against %s not decided: epochs %s were not seen "
                    "(training resumed after them?) and the rest were within tolerance",
                    self.reference_dir, ", ".join(map(str, self.result.missing)))
            else:
                logger.info("early curve check against %s: %s", self.reference_dir,
                             self.result.describe())
