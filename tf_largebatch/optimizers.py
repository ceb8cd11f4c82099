"""SGD with momentum correction and coupled L2 weight decay (`l2`), and LARS.

Keras's SGD keeps the rate inside the velocity (v ← m·v + η·g, w ← w − v), so
when η changes the old velocity carries the old rate. Goyal et al. §2.3
correct it:

    g ← ∇L(w) + λ·w                      (λ = 1e-4; not on BN γ/β or biases)
    v ← m · (η_t / η_{t−1}) · v + η_t · g
    w ← w − v                            (Nesterov: w ← w − (m·v + η_t·g))

which follows exactly the trajectory of v ← m·v + g, w ← w − η_t·v (the form
PyTorch uses). The decay is coupled: λ·w joins the gradient before the momentum, the
gradient of the L2 penalty (λ/2)·‖w‖² — hence its name here, `l2`. Keras's optimizers'
`weight_decay` (and AdamW's) is decoupled, w ← w − η·λ·w apart from the gradient and the
momentum: other math, so these optimizers do not take that name (`weight_decay=` is a
deprecated alias of `l2=`, kept for old code and saved configs).
"""

import re
import warnings

import keras
from keras import ops

# Matched with re.search against variable names: BN γ/β and every bias.
DEFAULT_EXCLUDE = ("gamma", "beta", "bias")
DEFAULT_L2 = 1e-4  # the paper's λ


def _l2_from_alias(l2, weight_decay, stacklevel):
    """λ from `l2=` or from its deprecated alias `weight_decay=` (which warns)."""
    if weight_decay is None:
        return DEFAULT_L2 if l2 is None else l2
    if l2 is not None:
        raise ValueError("pass l2= only: weight_decay= is its deprecated alias (both were given)")
    warnings.warn("MomentumSGD/LARS(weight_decay=...) is deprecated: it is coupled L2 "
                  "(g ← g + λ·w before the momentum), not Keras's decoupled weight_decay; "
                  "pass l2=... instead.", DeprecationWarning, stacklevel=stacklevel + 1)
    return weight_decay


@keras.saving.register_keras_serializable(package="tf_largebatch")
class MomentumSGD(keras.optimizers.SGD):
    """Momentum SGD with momentum correction and L2 weight decay (Goyal et al.).

    Args:
        learning_rate: float or a Keras `LearningRateSchedule` of the global step.
        momentum: m (0.9).
        nesterov: Nesterov momentum.
        l2: λ of the coupled L2 weight decay g ← g + λ·w (before the momentum), a float
            or a schedule of the global step (e.g. `schedules.WeightDecaySchedule`);
            None: 1e-4, the paper's. Not Keras's decoupled `weight_decay`.
        momentum_correction: scale v by η_t/η_{t−1} when the rate changes.
        exclude_from_weight_decay: variable-name regexes that get no weight
            decay (and, in LARS by default, no trust-ratio adaptation).
        weight_decay: deprecated alias of `l2` (warns with a DeprecationWarning).

    Example:
        >>> schedule = schedules.goyal_schedule(32, 256, steps_per_epoch=156)
        >>> model.compile(optimizer=MomentumSGD(schedule), loss=...)
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        nesterov=False,
        l2=None,
        momentum_correction=True,
        exclude_from_weight_decay=DEFAULT_EXCLUDE,
        name=None,
        weight_decay=None,
        **kwargs,
    ):
        l2 = _l2_from_alias(l2, weight_decay, stacklevel=2)
        super().__init__(
            learning_rate=learning_rate, momentum=float(momentum), nesterov=nesterov,
            name=name or type(self).__name__, **kwargs,
        )
        if isinstance(l2, dict):
            l2 = keras.saving.deserialize_keras_object(l2)
        self.l2 = l2
        self.momentum_correction = momentum_correction
        self.exclude_patterns = tuple(exclude_from_weight_decay or ())
        self.exclude_from_weight_decay(var_names=list(self.exclude_patterns))

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # The rate of the previous step, for the correction η_t/η_{t−1} (0 before the first).
        self.previous_lr = self.add_variable((), initializer="zeros", name="previous_lr")
        # A float λ lives in a variable so that callbacks can change it inside a compiled step.
        self.l2_variable = None if callable(self.l2) else self.add_variable(
            (), initializer=keras.initializers.Constant(self.l2), name="l2"
        )

    def apply(self, grads, trainable_variables=None):
        lr = ops.cast(self.learning_rate, "float32")
        self._step_scalars = {}  # filled by the first variable's update of each dtype
        try:
            super().apply(grads, trainable_variables)
        finally:
            self._step_scalars = None
        self.previous_lr.assign(lr)

    def _per_step(self, name, dtype, compute):
        """`compute()`, a scalar of the step in `dtype`, computed once per step (and dtype)
        inside `apply` rather than once per variable: η_t, λ and m·η_t/η_{t−1} are the same
        for every variable, and recomputing them for each of ResNet-20's 65 variables made
        the step run 500 more small ops than Keras's SGD (profile in docs/performance.md)."""
        cache = getattr(self, "_step_scalars", None)
        if cache is None:
            return compute()
        key = (name, str(dtype))
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    def current_weight_decay(self):
        """λ at the current step."""
        if self.l2_variable is None:
            return ops.cast(self.l2(self.iterations), "float32")
        return self.l2_variable

    def _local_rate(self, gradient, variable, weight_decay):
        """Per-variable multiplier of η: None (none) for SGD, the trust ratio for LARS.
        `weight_decay` is λ for this variable, None when it gets no decay."""
        return None

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = self._per_step("lr", dtype, lambda: ops.cast(learning_rate, dtype))
        gradient = ops.cast(gradient, dtype)
        weight_decay = None
        if self._use_weight_decay(variable):
            weight_decay = self._per_step(
                "weight_decay", dtype, lambda: ops.cast(self.current_weight_decay(), dtype))
            update = gradient + weight_decay * variable
        else:
            update = gradient
        scale = self._local_rate(gradient, variable, weight_decay)
        step = lr * update if scale is None else lr * ops.cast(scale, dtype) * update
        if self.momentum == 0:
            self.assign_sub(variable, step)
            return
        # Keras's SGD stores the velocity as −v; keep its variable and sign.
        velocity = self.momentums[self._get_variable_index(variable)]
        m = self._per_step("momentum", dtype, lambda: self._corrected_momentum(lr, dtype))
        self.assign(velocity, m * velocity - step)
        if self.nesterov:
            self.assign_add(variable, ops.cast(self.momentum, dtype) * velocity - step)
        else:
            self.assign_add(variable, velocity)

    def _corrected_momentum(self, lr, dtype):
        """m·η_t/η_{t−1} (m before the first step and without correction)."""
        m = ops.cast(self.momentum, dtype)
        if not self.momentum_correction:
            return m
        previous = ops.cast(self.previous_lr, dtype)
        return m * ops.where(previous > 0, lr / ops.where(previous > 0, previous, 1.0), 1.0)

    def get_config(self):
        config = super().get_config()
        l2 = self.l2
        if isinstance(l2, keras.optimizers.schedules.LearningRateSchedule):
            l2 = keras.saving.serialize_keras_object(l2)
        config.pop("weight_decay", None)  # Keras's decoupled one: never set here
        config.update(
            l2=l2,
            momentum_correction=self.momentum_correction,
            exclude_from_weight_decay=list(self.exclude_patterns),
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "l2" not in config and config.get("weight_decay") is not None:
            config["l2"] = config.pop("weight_decay")  # saved before the rename to l2
        return super().from_config(config, custom_objects)


@keras.saving.register_keras_serializable(package="tf_largebatch")
class LARS(MomentumSGD):
    """Layer-wise adaptive rate scaling (You et al. 2017) on top of `MomentumSGD`.

    For each variable w (λ = 0 where weight decay is excluded):

        η_l = trust · ‖w‖ / (‖g‖ + λ‖w‖)     (denominator="paper": You et al., Algorithm 1)
        η_l = trust · ‖w‖ / ‖g + λw‖          (denominator="model_garden": TF Model Garden)
        η_l = 1                               where ‖w‖ = 0 or the denominator is 0
        v ← m·v + η_t · η_l · (g + λw)
        w ← w − v

    With ‖g‖ = 0 and ‖w‖ > 0 both forms give η_l = trust/λ: the step is pure weight decay.
    Variables matching `exclude_from_layer_adaptation` (default: the weight-decay exclusions,
    BN γ/β and biases, as Model Garden does) get η_l = 1; pass () with
    `exclude_from_weight_decay=()` to adapt and decay every layer, as Algorithm 1 does.
    Momentum correction is off by default: neither reference rescales v when η_t changes.

    Args:
        learning_rate: η_t, a float or a schedule of the global step.
        trust_coefficient: the trust coefficient (You et al.'s η; 0.001).
        epsilon: added to the denominator.
        denominator: "paper" (‖g‖ + λ‖w‖) or "model_garden" (‖g + λw‖).
        exclude_from_layer_adaptation: variable-name regexes with η_l = 1; None: the same as
            `exclude_from_weight_decay`.
        momentum_correction: scale v by η_t/η_{t−1} (default False, as the references).
        **kwargs: `MomentumSGD`'s (momentum, nesterov, l2, ...).

    Example:
        >>> opt = LARS(schedules.goyal_schedule(32, 512, steps_per_epoch=78), l2=1e-4)
    """

    DENOMINATORS = ("paper", "model_garden")

    def __init__(self, learning_rate=0.1, trust_coefficient=0.001, epsilon=0.0,
                 denominator="paper", exclude_from_layer_adaptation=None,
                 momentum_correction=False, **kwargs):
        if kwargs.get("weight_decay") is not None:  # warn at the caller's line, not ours
            kwargs["l2"] = _l2_from_alias(kwargs.get("l2"), kwargs.pop("weight_decay"), 2)
        super().__init__(learning_rate=learning_rate, momentum_correction=momentum_correction,
                         **kwargs)
        if denominator not in self.DENOMINATORS:
            raise ValueError(f"denominator must be one of {self.DENOMINATORS}, "
                             f"got {denominator!r}")
        self.trust_coefficient = trust_coefficient
        self.epsilon = epsilon
        self.denominator = denominator
        self.exclude_from_layer_adaptation = None if exclude_from_layer_adaptation is None \
            else tuple(exclude_from_layer_adaptation)

    def _adapts(self, variable):
        patterns = self.exclude_patterns if self.exclude_from_layer_adaptation is None \
            else self.exclude_from_layer_adaptation
        return not any(re.search(p, variable.name) for p in patterns)

    def _local_rate(self, gradient, variable, weight_decay):
        if not self._adapts(variable):
            return None
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        if self.denominator == "paper":
            g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            denominator = g_norm if weight_decay is None else g_norm + weight_decay * w_norm
        else:
            update = gradient if weight_decay is None else gradient + weight_decay * variable
            denominator = ops.sqrt(ops.sum(ops.square(update)))
        denominator = denominator + self.epsilon
        ratio = self.trust_coefficient * w_norm / ops.where(denominator > 0, denominator, 1.0)
        return ops.where((w_norm > 0) & (denominator > 0), ratio, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(trust_coefficient=self.trust_coefficient, epsilon=self.epsilon,
                      denominator=self.denominator,
                      exclude_from_layer_adaptation=None
                      if self.exclude_from_layer_adaptation is None
                      else list(self.exclude_from_layer_adaptation))
        return config
