"""Learning-rate rules and schedules of the large-minibatch recipe.

Every schedule is a pure function of the global step t (the optimizer's
`iterations`), so a resumed run gets exactly the rates of an uninterrupted one;
nothing is read back from the optimizer (Horovod's Keras callbacks once did, and
compounded the decay after a restart, horovod#1921; its fix made `initial_lr` a
required argument). Keras's own schedules cannot be composed with warmup and
switch one step late at `PiecewiseConstantDecay` boundaries, hence these.

Notation: S steps per epoch, e = t / S the fractional epoch, W warmup epochs,
T total epochs, η̂ the peak (scaled) rate.
"""

import math

import keras
from keras import ops

WARMUPS = ("gradual", "constant", "none")
DECAYS = ("step", "poly", "linear", "cosine", "constant")


def scaled_learning_rate(batch_size: int, base_lr: float = 0.1, base_batch: int = 256,
                         rule: str = "linear") -> float:
    """The rate for a minibatch of `batch_size` = kn (Goyal et al. §2.1).

    linear: η̂ = η_ref · kn / B_ref    (the paper's rule)
    sqrt:   η̂ = η_ref · sqrt(kn / B_ref)  (Krizhevsky 2014; the paper reports it works poorly)
    """
    if batch_size <= 0 or base_batch <= 0 or base_lr <= 0:
        raise ValueError(
            f"batch_size, base_batch and base_lr must be positive, got {batch_size}, "
            f"{base_batch}, {base_lr}"
        )
    ratio = batch_size / base_batch
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    raise ValueError(f"scaling rule must be 'linear' or 'sqrt', got {rule!r}")


@keras.saving.register_keras_serializable(package="tf_largebatch")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Warmup followed by a decay, as a function of the global step t.

    Warmup, for t < W·S (Goyal et al. §2.2):
      gradual:  η(t) = η₀ + (η̂ − η₀) · t / (W·S)   (η₀ = `warmup_start_lr`, usually η̂/k)
      constant: η(t) = η₀
      none:     no warmup; the decay rule applies from t = 0.
    Decay, for t ≥ W·S (p = (e − W) / (T − W) ∈ [0, 1] is the progress after warmup):
      step:     η = η̂ · factor^(number of milestones m with t ≥ m·S)   (×0.1 at 30, 60, 80)
      poly:     η = η_end + (η̂ − η_end) · (1 − p)^power              (Codreanu et al.)
      linear:   η = η̂ until `decay_start_epoch`, then linearly to η_end at T
      cosine:   η = η_end + (η̂ − η_end) · (1 + cos(π p)) / 2
      constant: η = η̂

    Args:
        peak_lr: η̂, the rate after warmup (`scaled_learning_rate(kn)`).
        steps_per_epoch: S, global steps per epoch (N // kn).
        total_epochs: T.
        warmup: "gradual", "constant" or "none".
        warmup_epochs: W (fractional allowed); ignored with warmup="none".
        warmup_start_lr: η₀, required with warmup (Goyal et al.: η̂/k).
        decay: "step", "poly", "linear", "cosine" or "constant".
        milestones: epochs of the step decay.
        decay_factor: multiplier at each milestone.
        power: exponent of the poly decay.
        end_lr: η_end of the poly, linear and cosine decays.
        decay_start_epoch: start of the linear decay (default: W).

    Returns, when called with the global step t: η(t), a float32 scalar.

    Example:
        >>> rate = WarmupDecay(3.2, steps_per_epoch=156, warmup_start_lr=0.1)
        >>> [float(rate(t)) for t in (0, 5 * 156, 30 * 156)]  # ≈ [0.1, 3.2, 0.32]
    """

    def __init__(
        self,
        peak_lr,
        steps_per_epoch,
        total_epochs=90,
        warmup="gradual",
        warmup_epochs=5,
        warmup_start_lr=None,
        decay="step",
        milestones=(30, 60, 80),
        decay_factor=0.1,
        power=1.0,
        end_lr=0.0,
        decay_start_epoch=None,
    ):
        if warmup not in WARMUPS:
            raise ValueError(f"warmup must be one of {WARMUPS}, got {warmup!r}")
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        if steps_per_epoch <= 0 or peak_lr <= 0:
            raise ValueError("steps_per_epoch and peak_lr must be positive")
        if warmup == "none":
            warmup_epochs = 0
        if warmup != "none" and warmup_start_lr is None:
            raise ValueError(
                "warmup_start_lr is required with warmup; Goyal et al. start at η̂/k "
                "(use goyal_schedule() to get it from k)"
            )
        if not 0 <= warmup_epochs < total_epochs:
            raise ValueError(f"warmup_epochs={warmup_epochs} must be in [0, total_epochs)")
        if decay == "linear" and decay_start_epoch is None:
            decay_start_epoch = warmup_epochs
        self.peak_lr = float(peak_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_epochs = float(total_epochs)
        self.warmup = warmup
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_start_lr = None if warmup_start_lr is None else float(warmup_start_lr)
        self.decay = decay
        self.milestones = tuple(float(m) for m in milestones)
        self.decay_factor = float(decay_factor)
        self.power = float(power)
        self.end_lr = float(end_lr)
        self.decay_start_epoch = None if decay_start_epoch is None else float(decay_start_epoch)

    def _decayed(self, t):
        peak, end, S = self.peak_lr, self.end_lr, self.steps_per_epoch
        if self.decay == "constant":
            return ops.full_like(t, peak)
        if self.decay == "step":
            drops = sum(ops.cast(t >= m * S, "float32") for m in self.milestones)
            return peak * ops.power(self.decay_factor, drops)
        start = self.decay_start_epoch if self.decay == "linear" else self.warmup_epochs
        progress = ops.clip((t / S - start) / (self.total_epochs - start), 0.0, 1.0)
        if self.decay == "cosine":
            return end + (peak - end) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        power = 1.0 if self.decay == "linear" else self.power
        return end + (peak - end) * ops.power(1.0 - progress, power)

    def __call__(self, step):
        t = ops.cast(step, "float32")
        lr = self._decayed(t)
        if self.warmup == "none":
            return lr
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        start = self.warmup_start_lr
        if self.warmup == "gradual":
            warm = start + (self.peak_lr - start) * t / warmup_steps
        else:
            warm = ops.full_like(t, start)
        return ops.where(t < warmup_steps, warm, lr)

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_epochs,
            "warmup": self.warmup,
            "warmup_epochs": self.warmup_epochs,
            "warmup_start_lr": self.warmup_start_lr,
            "decay": self.decay,
            "milestones": self.milestones,
            "decay_factor": self.decay_factor,
            "power": self.power,
            "end_lr": self.end_lr,
            "decay_start_epoch": self.decay_start_epoch,
        }


def goyal_schedule(
    per_worker_batch: int,
    workers: int,
    steps_per_epoch: int,
    base_lr: float = 0.1,
    base_batch: int = 256,
    rule: str = "linear",
    **kwargs,
) -> WarmupDecay:
    """The paper's schedule for k = `workers` workers of n = `per_worker_batch` images.

    η̂ = scaled_learning_rate(kn); warmup starts at the single-worker rate
    scaled_learning_rate(n) (= η̂/k under the linear rule).

    Args:
        per_worker_batch: n, images per worker per step.
        workers: k.
        steps_per_epoch: S, global steps per epoch (N // kn).
        base_lr: η_ref, the rate for `base_batch` images (0.1 for ImageNet ResNet-50).
        base_batch: B_ref (256).
        rule: "linear" (the paper's) or "sqrt".
        **kwargs: passed to `WarmupDecay` (total_epochs, warmup, warmup_epochs, decay,
            milestones, ...).

    Returns:
        A `WarmupDecay`.

    Example:
        >>> schedule = goyal_schedule(32, 256, steps_per_epoch=156)  # kn = 8k on ImageNet
        >>> schedule.peak_lr, schedule.warmup_start_lr  # ≈ (3.2, 0.0125)
    """
    peak = scaled_learning_rate(per_worker_batch * workers, base_lr, base_batch, rule)
    single_worker = scaled_learning_rate(per_worker_batch, base_lr, base_batch, rule)
    kwargs.setdefault("warmup_start_lr", single_worker)
    return WarmupDecay(peak, steps_per_epoch, **kwargs)


def augmentation_off_epoch(total_epochs: int, final_epochs: int) -> int | None:
    """The first (0-based) epoch without augmentation when the last `final_epochs` of
    `total_epochs` epochs go without it (Codreanu et al.); None when `final_epochs` is 0.
    Epoch e is augmented iff the result is None or e < it.

    Example:
        >>> augmentation_off_epoch(90, 2)
        88
    """
    if not 0 <= final_epochs <= total_epochs:
        raise ValueError(f"final_epochs={final_epochs} must be in [0, {total_epochs}]")
    return total_epochs - final_epochs if final_epochs else None


@keras.saving.register_keras_serializable(package="tf_largebatch")
class WeightDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Codreanu et al.'s weight decay: λ for most of training, λ_final for the last part.

    λ(t) = λ        if t < (1 − f) · T · S
           λ_final  otherwise          (f = `final_fraction`, 5–7%; λ_final = 2λ by default)
    """

    def __init__(
        self,
        weight_decay,
        steps_per_epoch,
        total_epochs,
        final_fraction=0.06,
        final_weight_decay=None,
    ):
        if not 0 <= final_fraction <= 1:
            raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction}")
        self.weight_decay = float(weight_decay)
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_epochs = float(total_epochs)
        self.final_fraction = float(final_fraction)
        self.final_weight_decay = float(
            2 * weight_decay if final_weight_decay is None else final_weight_decay
        )

    def __call__(self, step):
        t = ops.cast(step, "float32")
        switch = (1.0 - self.final_fraction) * self.total_epochs * self.steps_per_epoch
        return ops.where(t < switch, self.weight_decay, self.final_weight_decay)

    def get_config(self):
        return {
            "weight_decay": self.weight_decay,
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_epochs,
            "final_fraction": self.final_fraction,
            "final_weight_decay": self.final_weight_decay,
        }
