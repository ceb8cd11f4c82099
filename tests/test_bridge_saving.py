"""A model compiled with the Horovod bridge saves and loads as plain Keras, and
`distributed.load_model` resumes it bridged (in one process; under `horovodrun -np 2`:
tests/test_horovod.py)."""

import keras
import numpy as np
import pytest

from tf_largebatch import distributed, optimizers

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 3)).astype("float32")
Y = RNG.normal(size=(8, 2)).astype("float32")


def small_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                             keras.layers.Dense(2)])


def two_steps(model):
    model.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)


def values(variables):
    return [np.asarray(v) for v in variables]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_bridged_model_round_trips_through_plain_keras_load_model(tmp_path):
    distributed.init()
    optimizer = optimizers.MomentumSGD(0.1, l2=1e-2)
    config = optimizer.get_config()
    bridged = distributed.distributed_optimizer(optimizer)
    # Documented: the caller's object is the bridged one, its class and config unchanged.
    assert bridged is optimizer and type(bridged) is optimizers.MomentumSGD
    assert distributed.is_distributed(bridged) and bridged.get_config() == config
    model = small_model()
    model.compile(bridged, "mse")
    two_steps(model)
    model.save(tmp_path / "m.keras")

    plain = keras.models.load_model(tmp_path / "m.keras")
    assert type(plain.optimizer) is optimizers.MomentumSGD
    assert not distributed.is_distributed(plain.optimizer)
    assert plain.optimizer.get_config() == config
    assert int(plain.optimizer.iterations) == 2
    assert_same(values(plain.weights), values(model.weights))
    assert_same(values(plain.optimizer.variables), values(model.optimizer.variables))

    resumed = distributed.load_model(tmp_path / "m.keras")
    assert type(resumed.optimizer) is optimizers.MomentumSGD
    assert distributed.is_distributed(resumed.optimizer)
    assert_same(values(resumed.optimizer.variables), values(model.optimizer.variables))
    before = values(resumed.weights)
    for m in (model, plain, resumed):  # the same two further steps, from the same state
        two_steps(m)
    assert int(resumed.optimizer.iterations) == 4
    assert not np.array_equal(values(resumed.weights)[0], before[0])
    assert_same(values(resumed.weights), values(model.weights))
    assert_same(values(plain.weights), values(model.weights))


def test_load_model_needs_a_compiled_model(tmp_path):
    distributed.init()
    model = small_model()
    model.save(tmp_path / "uncompiled.keras")
    with pytest.raises(ValueError, match="holds no compiled optimizer"):
        distributed.load_model(tmp_path / "uncompiled.keras")
