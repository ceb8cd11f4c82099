"""Keras callbacks of the large-minibatch recipe, for any `model.fit`.

The schedule callbacks set a value before every batch from the global step
(`optimizer.iterations`, which checkpoints carry), never from state read back
from the optimizer, so a resumed run gets the same values as an uninterrupted
one. Momentum correction is the optimizer's job (`optimizers.MomentumSGD`),
so it applies whether the rate comes from a schedule or from these callbacks.

Which one to use in your own `fit`:
- the rate: pass a schedule (`schedules.goyal_schedule`) as the optimizer's
  `learning_rate`; `StepLearningRateScheduler` only when the rate must stay a float;
- weight decay: a `schedules.WeightDecaySchedule` as the optimizer's `l2` (coupled L2),
  or `WeightDecayScheduler` with a float λ;
- augmentation off at the end: with the package's pipelines, pass
  `augment_off_epoch=schedules.augmentation_off_epoch(T, E)` to `data.train_dataset`;
  with your own pipeline, read `AugmentationSwitch(T, E).enabled` in it;
- divergence: `StopOnNonFiniteLoss` (in the batch) and `StopOnDivergence` (at the epoch's
  end: exploding or non-finite training or validation loss), before any checkpoint callback.
"""

import math
import os
import warnings

import keras
from keras import ops

from tf_largebatch.schedules import augmentation_off_epoch


def _base_optimizer(model):
    """The model's optimizer, unwrapped from Keras's LossScaleOptimizer if needed."""
    return getattr(model.optimizer, "inner_optimizer", model.optimizer)


def _global_step(model):
    return int(ops.convert_to_numpy(model.optimizer.iterations))


class StepLearningRateScheduler(keras.callbacks.Callback):
    """Sets η = schedule(t) before each batch, t the global step.

    Unlike `keras.callbacks.LearningRateScheduler`, which calls `schedule(epoch, lr)` once
    an epoch, this follows the step, as gradual warmup needs (the paper updates the rate
    every iteration). For an optimizer built with a float rate; an optimizer whose
    `learning_rate` is already a schedule needs no callback. Adds `learning_rate` to the
    epoch logs, as Keras's scheduler does.

    Args:
        schedule: a function of the global step, e.g. `schedules.goyal_schedule(...)`.

    Example:
        >>> schedule = schedules.goyal_schedule(32, 8, steps_per_epoch=5004)
        >>> model.compile(optimizer=optimizers.MomentumSGD(0.1), loss=...)
        >>> model.fit(ds, epochs=90, callbacks=[StepLearningRateScheduler(schedule)])
    """

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_train_batch_begin(self, batch, logs=None):
        rate = float(ops.convert_to_numpy(self.schedule(_global_step(self.model))))
        self.model.optimizer.learning_rate = rate

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


class LearningRateScheduler(StepLearningRateScheduler):
    """Deprecated alias of `StepLearningRateScheduler`, this callback's name before it was
    renamed (Keras has its own, per-epoch `LearningRateScheduler`); warns with a
    DeprecationWarning and does the same (the rate is logged as `learning_rate`)."""

    def __init__(self, schedule):
        warnings.warn("tf_largebatch.callbacks.LearningRateScheduler is deprecated: it was "
                      "renamed StepLearningRateScheduler (the same callback; Keras's "
                      "LearningRateScheduler is another, per-epoch one).", DeprecationWarning,
                      stacklevel=2)
        super().__init__(schedule)


class WeightDecayScheduler(keras.callbacks.Callback):
    """Sets the optimizer's L2 weight decay λ = schedule(t) before each batch.

    For `optimizers.MomentumSGD`/`LARS` built with a float λ (Codreanu et al.:
    `schedules.WeightDecaySchedule`, 5e-5 doubled for the last 5–7%). Passing the
    schedule as the optimizer's `l2` does the same inside the graph.
    Adds `weight_decay` to the epoch logs.

    Args:
        schedule: a function of the global step, e.g. `schedules.WeightDecaySchedule(...)`.

    Example:
        >>> decay = schedules.WeightDecaySchedule(5e-5, steps_per_epoch=100, total_epochs=90)
        >>> model.fit(ds, epochs=90, callbacks=[WeightDecayScheduler(decay)])
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

    `enabled` is a boolean `keras.Variable` that your own preprocessing can read; it is
    True in epoch e iff e < `schedules.augmentation_off_epoch(total_epochs, final_epochs)`,
    the rule the package's pipelines take as `augment_off_epoch` (they need no callback,
    so prefetching cannot race with the switch).

    Args:
        total_epochs: T, the epochs of the run.
        final_epochs: E, the last epochs without augmentation (0: never off).

    Example:
        >>> switch = AugmentationSwitch(total_epochs=90, final_epochs=2)
        >>> ds = ds.map(lambda x, y: (tf.cond(switch.enabled, lambda: augment(x),
        ...                                   lambda: x), y))
        >>> model.fit(ds, epochs=90, callbacks=[switch])
    """

    def __init__(self, total_epochs: int, final_epochs: int):
        super().__init__()
        self.off_from_epoch = augmentation_off_epoch(total_epochs, final_epochs)
        self.enabled = keras.Variable(True, dtype="bool", trainable=False, name="augment")

    def augment_at(self, epoch):
        """Whether epoch `epoch` (0-based) is augmented."""
        return self.off_from_epoch is None or epoch < self.off_from_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.enabled.assign(self.augment_at(epoch))


class DivergenceError(RuntimeError):
    """Training diverged; nothing of the diverged state was saved."""


class NonFiniteLossError(DivergenceError):
    """Training produced a NaN or infinite loss."""


_ADVICE = ("Large minibatches diverge without warmup: use gradual warmup "
           "(schedules.WarmupDecay(warmup=\"gradual\"); the trainer's --warmup=gradual), more "
           "warmup epochs (warmup_epochs; --warmup_epochs), or a lower reference rate (base_lr; "
           "--base_lr).")
_ADVICE_WITH_GRADUAL_WARMUP = (
    "Gradual warmup is already on: warm up for more epochs (warmup_epochs; --warmup_epochs), "
    "lower the reference rate (base_lr; --base_lr), or, past kn ≈ 8k, use LARS "
    "(optimizers.LARS; --optimizer=lars).")


def _advice(model):
    """What to change after a divergence, given the model's learning-rate schedule."""
    optimizer = getattr(model, "optimizer", None)
    schedule = getattr(getattr(optimizer, "inner_optimizer", optimizer), "_learning_rate", None)
    if getattr(schedule, "warmup", None) == "gradual" and getattr(schedule, "warmup_epochs", 0):
        return _ADVICE_WITH_GRADUAL_WARMUP
    return _ADVICE


def _kept_checkpoint(hint):
    """" The last good checkpoint is kept in <hint>." when `hint` names a file or a folder
    holding one (a folder with nothing but hidden files, e.g. a lock, holds none)."""
    if not hint or not os.path.exists(hint) or (
            os.path.isdir(hint) and not [n for n in os.listdir(hint) if not n.startswith(".")]):
        return " No checkpoint was saved before it."
    return f" The last good checkpoint is kept in {hint}."


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Keras's `TerminateOnNaN(raise_error=True)`, with a message that says what to change.

    Raises `NonFiniteLossError` (a `RuntimeError`) at the first non-finite batch loss, in
    the batch, so no later callback of the epoch runs: a checkpoint callback never saves
    the diverged weights, and the last checkpoint written stays the last good one
    (`TerminateOnNaN()` without `raise_error` lets the epoch end and the checkpoint be
    written).

    Args:
        checkpoint_hint: where the last good checkpoint is, for the message (optional).

    Example:
        >>> model.fit(ds, epochs=90, callbacks=[StopOnNonFiniteLoss("ckpt/"),
        ...                                     keras.callbacks.ModelCheckpoint(...)])
    """

    def __init__(self, checkpoint_hint: str | None = None):
        super().__init__()
        self.raise_error = True
        self.checkpoint_hint = checkpoint_hint

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        rate = float(ops.convert_to_numpy(_base_optimizer(self.model).learning_rate))
        where = _kept_checkpoint(self.checkpoint_hint) if self.checkpoint_hint else ""
        raise NonFiniteLossError(
            f"loss became {loss} at global step {_global_step(self.model)} (learning rate "
            f"{rate:.6g}); training stopped.{where} {_advice(self.model)}"
        )


class StopOnDivergence(keras.callbacks.Callback):
    """Stops at the end of an epoch whose losses show divergence, before it is saved.

    Raises `DivergenceError` in `on_epoch_end` when the epoch's training loss is not finite or
    exceeds `factor` × the first epoch's, or its validation loss is not finite. Put it before
    the checkpoint callback (and, under Horovod, after the metrics are averaged, so every
    worker stops at the same epoch): the diverged weights are then never written, and the last
    good checkpoint is never rotated away by a diverged one. A finite but exploding loss
    (8.8e15 with a rate 1e5 too high) passes `StopOnNonFiniteLoss`; it does not pass this.

    Args:
        factor: the largest allowed ratio of an epoch's training loss to the first epoch's;
            0 checks for non-finite losses only.
        reference_loss: the first epoch's training loss when resuming (None: taken from the
            first epoch this callback sees).
        checkpoint_hint: where the last good checkpoint is, for the message (optional).

    Example:
        >>> model.fit(ds, epochs=90, validation_data=val,
        ...           callbacks=[StopOnDivergence(), keras.callbacks.ModelCheckpoint(...)])
    """

    def __init__(self, factor: float = 10.0, reference_loss: float | None = None,
                 checkpoint_hint: str | None = None):
        super().__init__()
        self.factor = factor
        self.reference_loss = reference_loss
        self.checkpoint_hint = checkpoint_hint

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss, val_loss = logs.get("loss"), logs.get("val_loss")
        problem = None
        if loss is not None and not math.isfinite(float(loss)):
            problem = f"the training loss is {loss}"
        elif val_loss is not None and not math.isfinite(float(val_loss)):
            problem = f"the validation loss is {val_loss}"
        elif loss is not None and self.reference_loss is not None and self.factor and (
                float(loss) > self.factor * self.reference_loss):
            problem = (f"the training loss {float(loss):.4g} is more than {self.factor:g}× the "
                       f"first epoch's {self.reference_loss:.4g}")
        if problem is None:
            if self.reference_loss is None and loss is not None:
                self.reference_loss = float(loss)
            return
        where = _kept_checkpoint(self.checkpoint_hint) if self.checkpoint_hint else ""
        raise DivergenceError(f"training diverged in epoch {epoch + 1}: {problem}; stopped "
                              f"before saving it.{where} {_advice(self.model)}")


class MetricAverage(keras.callbacks.Callback):
    """Replaces the epoch's metrics by their average over the Horovod workers, weighted by
    the number of examples each worker saw:

        m = Σ_r c_r · m_r / Σ_r c_r          (m_r, c_r: worker r's metric and count)

    which is the metric over all the workers' examples together. Horovod's
    `MetricAverageCallback` takes the plain mean of the workers' means instead (wrong when
    the workers' validation shards differ in size), and does not run on Keras 3. Keys keep
    Keras's names (`loss`, `val_loss`, `val_top1`, ...): the `val_*` ones are weighted by
    `val_examples`, the others by `train_examples`.

    For your own `model.fit` under horovodrun: give it to `fit` on every worker (each epoch
    end is a collective), before the callbacks that read the logs (checkpoints, early
    stopping; Keras's History comes after it by itself). With the package's padded
    evaluation (weight-0 copies), `val_examples` is `data.eval_examples_on_worker(...)` and
    the metrics to read are the weighted ones: Keras's own `val_loss` also divides by the
    padding, a weighted cross-entropy metric does not.

    Args:
        train_examples: examples this worker trains on per epoch (steps × its batch).
        val_examples: real (weight-1) validation examples on this worker; None without
            validation.
        average: `average(value, count)`, the cross-worker weighted mean; default
            `distributed.weighted_mean` (Horovod).

    Example:
        >>> val_count = data.eval_examples_on_worker(val_info.num_examples, val_info.steps,
        ...                                          val_info.batch_size, k, context.rank)
        >>> model.fit(..., callbacks=[callbacks.MetricAverage(
        ...     info.steps_per_epoch * info.batch_size, val_count)])
    """

    def __init__(self, train_examples, val_examples=None, average=None):
        super().__init__()
        self.train_examples = train_examples
        self.val_examples = val_examples
        self.average = average

    def on_epoch_end(self, epoch, logs=None):
        if not logs:
            return
        average = self.average
        if average is None:  # imported here: the module stays free of TensorFlow and Horovod
            from tf_largebatch.distributed import weighted_mean as average
        for key in sorted(logs):  # one order on every worker: each average is a collective
            count = self.val_examples if key.startswith("val_") else self.train_examples
            if count is None:
                raise ValueError(f"MetricAverage got {key!r} but no val_examples: pass this "
                                 "worker's count of real validation examples "
                                 "(data.eval_examples_on_worker)")
            logs[key] = average(logs[key], count)
