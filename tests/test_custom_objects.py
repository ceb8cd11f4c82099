"""A saved model that uses the package's Keras objects loads in any import order with
`custom_objects=tf_largebatch.custom_objects()`; without it, importing the package before
Keras leaves them unregistered (what the function is for). Fresh interpreters, since
registration is a process's state."""

import os
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration

SAVE = """
import keras, numpy as np, tf_largebatch
from tf_largebatch import layers, losses, optimizers, schedules
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                          layers.GhostBatchNormalization(virtual_batch_size=2),
                          keras.layers.Dense(2)])
rate = schedules.WarmupDecay(0.1, steps_per_epoch=2, total_epochs=3, warmup_epochs=1,
                            warmup_start_lr=0.05)
model.compile(optimizers.LARS(rate, momentum=0.9, l2=schedules.WeightDecaySchedule(
    1e-4, steps_per_epoch=2, total_epochs=3)), losses.SparseSmoothedCrossentropy(0.1))
x, y = np.ones((4, 3), "float32"), np.array([0, 1, 0, 1])
model.fit(x, y, batch_size=2, epochs=1, verbose=0)
model.save(r"{path}")
np.save(r"{path}.npy", np.concatenate([np.ravel(w) for w in model.get_weights()]))
"""

LOAD = """
import tf_largebatch  # before Keras: the package cannot register its objects yet
import keras, numpy as np
{load}
assert type(model.optimizer).__name__ == "LARS", type(model.optimizer)
assert int(model.optimizer.iterations) == 2
np.testing.assert_array_equal(np.concatenate([np.ravel(w) for w in model.get_weights()]),
                              np.load(r"{path}.npy"))
print("loaded")
"""


def python(code):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2",
               KERAS_BACKEND="tensorflow")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model.keras"
    result = python(SAVE.format(path=path))
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def test_custom_objects_loads_the_packages_objects_in_any_import_order(saved):
    load = (f'model = keras.models.load_model(r"{saved}", '
            "custom_objects=tf_largebatch.custom_objects())")
    result = python(LOAD.format(load=load, path=saved))
    assert result.returncode == 0 and "loaded" in result.stdout, result.stderr[-3000:]


def test_without_it_that_import_order_cannot_load_them(saved):
    load = f'model = keras.models.load_model(r"{saved}")'
    result = python(LOAD.format(load=load, path=saved))
    assert result.returncode != 0 and "loaded" not in result.stdout
    assert "GhostBatchNormalization" in result.stderr or "LARS" in result.stderr
