"""Keras callbacks of the large-minibatch recipe, for any `model.fit`.

The schedule callbacks set a value before every batch from the global step
(`optimizer.iterations`, which checkpoints carry), never from state read back
from the optimizer, so a resumed run gets the same values as an uninterrupted
one. Momentum correction is the optimizer's job (`optimizers.MomentumSGD`),
so it applies whether the rate comes from a schedule or from these callbacks.
"""

import math

import keras
from keras import ops


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
