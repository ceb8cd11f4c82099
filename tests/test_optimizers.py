"""Optimizers against independent NumPy transcriptions of the papers' update rules."""

import keras
import numpy as np
import pytest

from tf_largebatch import optimizers, schedules

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(0)
A = RNG.normal(size=(6, 4)).astype("float32")
Y = RNG.normal(size=(6,)).astype("float32")
W0 = {name: RNG.normal(size=(4,)) for name in ("kernel", "bias", "gamma")}


def gradients(w):
    """∇ of L = ½‖A(kernel + bias ⊙ gamma) − y‖², worked out by hand."""
    r = A @ (w["kernel"] + w["bias"] * w["gamma"]) - Y
    g = A.T @ r
    return {"kernel": g, "bias": g * w["gamma"], "gamma": g * w["bias"]}


def run_keras(optimizer, steps):
    """Applies `optimizer` for `steps` steps of the hand-derived gradients; returns the weights."""
    variables = {k: keras.Variable(v.astype("float32"), name=k) for k, v in W0.items()}
    names = list(variables)
    for _ in range(steps):
        w = {k: keras.ops.convert_to_numpy(v).astype("float64") for k, v in variables.items()}
        g = gradients(w)
        optimizer.apply([g[k].astype("float32") for k in names], [variables[k] for k in names])
    return {k: keras.ops.convert_to_numpy(v) for k, v in variables.items()}


def rates(step):
    """A rate that changes every step, up and down (warmup-like, then a drop)."""
    return [0.01, 0.02, 0.05, 0.1, 0.2, 0.02, 0.03, 0.003, 0.01, 0.05][step]


class ListSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        table = keras.ops.convert_to_tensor([rates(i) for i in range(10)], "float32")
        return keras.ops.take(table, keras.ops.cast(step, "int32"))


def reference_sgd(steps, weight_decay, nesterov, momentum=0.9):
    """PyTorch's form: u ← m·u + (g + λw), w ← w − η_t·u (Nesterov: w ← w − η_t·(g' + m·u))."""
    w = {k: v.astype("float64").copy() for k, v in W0.items()}
    u = {k: np.zeros(4) for k in w}
    for t in range(steps):
        g = gradients(w)
        for k in w:
            gk = g[k] + (weight_decay * w[k] if k == "kernel" else 0.0)
            u[k] = momentum * u[k] + gk
            w[k] = w[k] - rates(t) * (gk + momentum * u[k] if nesterov else u[k])
    return w


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_correction_follows_the_eta_outside_trajectory(nesterov):
    opt = optimizers.MomentumSGD(ListSchedule(), momentum=0.9, nesterov=nesterov,
                                 l2=0.01)
    got = run_keras(opt, 10)
    want = reference_sgd(10, 0.01, nesterov)
    for k in W0:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_without_correction_it_is_keras_sgd_and_leaves_the_trajectory():
    plain = run_keras(keras.optimizers.SGD(ListSchedule(), momentum=0.9), 10)
    uncorrected = run_keras(
        optimizers.MomentumSGD(ListSchedule(), l2=0.0, momentum_correction=False), 10
    )
    for k in W0:
        np.testing.assert_allclose(uncorrected[k], plain[k], rtol=1e-6, atol=1e-7)
    want = reference_sgd(10, 0.0, nesterov=False)
    assert not np.allclose(uncorrected["kernel"], want["kernel"], rtol=1e-3)


def test_weight_decay_skips_bn_and_bias_by_name_and_is_configurable():
    zero = {k: keras.Variable(np.ones(4, "float32"), name=k) for k in W0}
    opt = optimizers.MomentumSGD(0.5, momentum=0.0, l2=0.1)
    opt.apply([np.zeros(4, "float32")] * 3, list(zero.values()))
    values = {k: keras.ops.convert_to_numpy(v) for k, v in zero.items()}
    np.testing.assert_allclose(values["kernel"], 1 - 0.5 * 0.1)  # w ← w − η·λ·w
    np.testing.assert_allclose(values["bias"], 1.0)
    np.testing.assert_allclose(values["gamma"], 1.0)
    everything = optimizers.MomentumSGD(0.5, momentum=0.0, l2=0.1,
                                        exclude_from_weight_decay=())
    v = keras.Variable(np.ones(4, "float32"), name="gamma")
    everything.apply([np.zeros(4, "float32")], [v])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(v), 0.95)


def reference_lars(steps, lr, trust, weight_decay, momentum=0.9, every_layer=False):
    """You et al. 2017, Algorithm 1, per layer l (by default BN γ/β and biases get plain
    momentum SGD and no decay; every_layer=True adapts and decays all, as Algorithm 1 does):
    g ← ∇L(w) + β·w;  λ_l = η·‖w‖ / (‖∇L(w)‖ + β‖w‖);  v ← m·v + γ_t·λ_l·g;  w ← w − v."""
    w = {k: v.astype("float64").copy() for k, v in W0.items()}
    v = {k: np.zeros(4) for k in w}
    for t in range(steps):
        grad = gradients(w)
        for k in w:
            if k == "kernel" or every_layer:
                local = trust * np.linalg.norm(w[k]) / (
                    np.linalg.norm(grad[k]) + weight_decay * np.linalg.norm(w[k]))
                update = lr(t) * local * (grad[k] + weight_decay * w[k])
            else:
                update = lr(t) * grad[k]
            v[k] = momentum * v[k] + update
            w[k] = w[k] - v[k]
    return w


def reference_model_garden_lars(steps, lr, trust, weight_decay, momentum=0.9):
    """TensorFlow Model Garden's official/modeling/optimization/lars.py, transcribed: decay
    and adaptation off for BN γ/β and biases;
    g ← ∇L + λw;  r = where(‖w‖>0, where(‖g‖>0, trust·‖w‖/‖g‖, 1), 1);
    v ← m·v + η_t·r·g;  w ← w − v."""
    w = {k: v.astype("float64").copy() for k, v in W0.items()}
    v = {k: np.zeros(4) for k in w}
    for t in range(steps):
        grad = gradients(w)
        for k in w:
            g = grad[k]
            ratio = 1.0
            if k == "kernel":
                g = g + weight_decay * w[k]
                w_norm, g_norm = np.linalg.norm(w[k]), np.linalg.norm(g)
                ratio = trust * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
            v[k] = momentum * v[k] + lr(t) * ratio * g
            w[k] = w[k] - v[k]
    return w


def test_lars_matches_the_paper_algorithm():
    opt = optimizers.LARS(0.05, trust_coefficient=0.5, l2=5e-4)
    got = run_keras(opt, 8)
    want = reference_lars(8, lambda t: 0.05, 0.5, 5e-4)
    assert np.abs(want["kernel"] - W0["kernel"]).max() > 0.01  # it moved, and stayed finite
    for k in W0:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_lars_with_a_changing_rate_does_not_rescale_the_velocity_by_default():
    # Neither You et al. nor Model Garden applies momentum correction.
    got = run_keras(optimizers.LARS(ListSchedule(), trust_coefficient=0.5, l2=5e-4), 10)
    want = reference_lars(10, rates, 0.5, 5e-4)
    for k in W0:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    corrected = run_keras(optimizers.LARS(ListSchedule(), trust_coefficient=0.5,
                                          l2=5e-4, momentum_correction=True), 10)
    assert np.abs(corrected["kernel"] - want["kernel"]).max() > 1e-3  # the option still differs


def test_lars_adapts_every_layer_when_asked_as_algorithm_1_does():
    opt = optimizers.LARS(0.05, trust_coefficient=0.5, l2=5e-4,
                          exclude_from_weight_decay=(), exclude_from_layer_adaptation=())
    got = run_keras(opt, 8)
    want = reference_lars(8, lambda t: 0.05, 0.5, 5e-4, every_layer=True)
    for k in W0:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_lars_model_garden_denominator_matches_its_transcription():
    opt = optimizers.LARS(ListSchedule(), trust_coefficient=0.5, l2=5e-2,
                          denominator="model_garden")
    got = run_keras(opt, 10)
    want = reference_model_garden_lars(10, rates, 0.5, 5e-2)
    paper = reference_lars(10, rates, 0.5, 5e-2)
    assert np.abs(want["kernel"] - paper["kernel"]).max() > 1e-4  # the two forms differ here
    for k in W0:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_lars_with_zero_gradient_takes_a_pure_weight_decay_step_of_trust_over_lambda():
    # Both references: η_l = trust·‖w‖ / (λ‖w‖) = 1e-3 / 1e-4 = 10, so
    # w ← w − 1.0 · 10 · 1e-4 · w = 0.999 · w: [3, 4] → [2.997, 3.996].
    for denominator in ("paper", "model_garden"):
        opt = optimizers.LARS(1.0, trust_coefficient=1e-3, l2=1e-4,
                              denominator=denominator)
        w = keras.Variable(np.array([3.0, 4.0], "float32"))
        opt.apply([np.zeros(2, "float32")], [w])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(w), [2.997, 3.996], rtol=1e-6)
    with pytest.raises(ValueError, match="denominator must be one of"):
        optimizers.LARS(denominator="norm")


def test_weight_decay_schedule_and_serialisation():

    wd = schedules.WeightDecaySchedule(1e-4, steps_per_epoch=1, total_epochs=10,
                                       final_fraction=0.5, final_weight_decay=1.0)
    opt = optimizers.MomentumSGD(0.1, momentum=0.0, l2=wd)
    v = keras.Variable(np.ones(1, "float32"), name="kernel")
    for _ in range(6):  # λ = 1e-4 for steps 0..4, then 1.0 at step 5
        opt.apply([np.zeros(1, "float32")], [v])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(v), (1 - 1e-5) ** 5 * 0.9, rtol=1e-6)
    restored = optimizers.MomentumSGD.from_config(opt.get_config())
    assert isinstance(restored.l2, schedules.WeightDecaySchedule)
    assert restored.get_config()["l2"] == opt.get_config()["l2"]
    lars = optimizers.LARS.from_config(optimizers.LARS(
        0.3, trust_coefficient=0.01, denominator="model_garden",
        exclude_from_layer_adaptation=["bn"]).get_config())
    assert (lars.trust_coefficient, lars.momentum, lars.nesterov) == (0.01, 0.9, False)
    assert (lars.denominator, lars.exclude_from_layer_adaptation) == ("model_garden", ("bn",))
    assert lars.momentum_correction is False


# Coupled L2 under its own name. One scalar weight w₀ = 2, gradient g = 0.5 at both steps,
# η = 0.1, m = 0.9, λ = 0.01, worked out by hand:
#   coupled (l2):        v₁ = 0.1·(0.5 + 0.01·2) = 0.052,          w₁ = 1.948
#                        v₂ = 0.9·0.052 + 0.1·(0.5 + 0.01·1.948),  w₂ = 1.948 − 0.098748
#   decoupled (Keras):   w₂ = 1.948 − 0.1·0.01·1.948 − (0.9·0.05 + 0.05) = 1.851052
COUPLED_W2, DECOUPLED_W2 = 1.849252, 1.851052


def two_scalar_steps(optimizer):
    w = keras.Variable(np.array([2.0], "float32"), name="w")
    for _ in range(2):
        optimizer.apply([np.array([0.5], "float32")], [w])
    return float(keras.ops.convert_to_numpy(w)[0])


def test_l2_is_coupled_weight_decay_by_hand():
    got = two_scalar_steps(optimizers.MomentumSGD(0.1, momentum=0.9, l2=0.01))
    assert got == pytest.approx(COUPLED_W2, abs=1e-6)
    keras_decoupled = two_scalar_steps(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01))
    assert keras_decoupled == pytest.approx(DECOUPLED_W2, abs=1e-6)  # other math, other name


@pytest.mark.parametrize("cls", [optimizers.MomentumSGD, optimizers.LARS])
def test_weight_decay_is_a_deprecated_alias_of_l2(cls):
    extra = {"trust_coefficient": 1.0} if cls is optimizers.LARS else {}
    with pytest.warns(DeprecationWarning, match="l2=") as caught:
        old = cls(0.1, momentum=0.9, weight_decay=0.01, **extra)
    assert caught[0].filename == __file__  # points at the caller's line
    assert old.l2 == 0.01 and old.get_config()["l2"] == 0.01
    assert "weight_decay" not in old.get_config()
    if cls is optimizers.MomentumSGD:
        assert two_scalar_steps(old) == pytest.approx(COUPLED_W2, abs=1e-6)
    with pytest.raises(ValueError, match="pass l2= only"):
        cls(0.1, l2=0.01, weight_decay=0.01)


def test_a_config_saved_with_the_old_name_loads_as_l2():
    # MomentumSGD(0.1, weight_decay=0.01).get_config() as the package saved it before l2=.
    old_config = {
        "name": "MomentumSGD", "learning_rate": 0.1, "weight_decay": 0.01, "clipnorm": None,
        "global_clipnorm": None, "clipvalue": None, "use_ema": False, "ema_momentum": 0.99,
        "ema_overwrite_frequency": None, "loss_scale_factor": None,
        "gradient_accumulation_steps": None, "momentum": 0.9, "nesterov": False,
        "momentum_correction": True, "exclude_from_weight_decay": ["gamma", "beta", "bias"]}
    saved = {"module": "tf_largebatch.optimizers", "class_name": "MomentumSGD",
             "config": old_config, "registered_name": "tf_largebatch>MomentumSGD"}
    restored = keras.saving.deserialize_keras_object(saved)
    assert type(restored) is optimizers.MomentumSGD and restored.l2 == 0.01
    assert restored.get_config()["l2"] == 0.01  # saved again under the new name
    assert two_scalar_steps(restored) == pytest.approx(COUPLED_W2, abs=1e-6)
    schedule = {"module": "tf_largebatch.schedules", "class_name": "WeightDecaySchedule",
                "config": {"weight_decay": 1e-4, "steps_per_epoch": 1, "total_epochs": 10,
                           "final_fraction": 0.5, "final_weight_decay": 1.0},
                "registered_name": "tf_largebatch>WeightDecaySchedule"}
    lars = optimizers.LARS.from_config(dict(old_config, name="LARS", weight_decay=schedule,
                                            trust_coefficient=0.01))
    assert isinstance(lars.l2, schedules.WeightDecaySchedule) and lars.l2.final_weight_decay == 1.0


def ops_per_variable(make_optimizer, name):
    """Graph ops that one more variable (`name`0, `name`1, ...) adds to a compiled apply."""
    import tensorflow as tf

    counts = []
    for n in (2, 12):
        optimizer = make_optimizer()
        variables = [keras.Variable(np.ones(3, "float32"), name=f"{name}{i}") for i in range(n)]
        optimizer.build(variables)
        grads = [tf.ones(3) for _ in variables]
        step = tf.function(lambda: optimizer.apply(grads, variables))  # noqa: B023 (traced here)
        counts.append(len(step.get_concrete_function().graph.get_operations()))
    return (counts[1] - counts[0]) / 10


def test_the_step_scalars_are_computed_once_per_step_not_per_variable():
    """η_t, λ and m·η_t/η_{t−1} are shared: per variable the corrected update costs what
    Keras's SGD costs, plus reading w, λ·w and g + λw where weight decay applies."""
    keras_sgd = ops_per_variable(lambda: keras.optimizers.SGD(0.1, momentum=0.9), "bias")
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    for rate in (0.1, schedule):
        assert ops_per_variable(lambda r=rate: optimizers.MomentumSGD(r), "bias") <= keras_sgd
        assert ops_per_variable(lambda r=rate: optimizers.MomentumSGD(r), "kernel") <= \
            keras_sgd + 3
