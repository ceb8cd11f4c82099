"""Label-smoothed cross-entropy on integer labels: its value, and a model compiled with it
saves and loads (before, the trainer's loss was a closure that `load_model` could not find)."""

import keras
import numpy as np
import pytest

from tf_largebatch.losses import SparseSmoothedCrossentropy

pytestmark = pytest.mark.unit

LOGITS = np.array([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 0.3, -3.0]], np.float32)
LABELS = np.array([0, 3], np.int32)


def test_the_loss_is_the_cross_entropy_against_the_smoothed_target():
    # q_c = (1 − ε)·[c = y] + ε/C with ε = 0.2, C = 4; loss = mean over images of −Σ q·log p.
    log_p = LOGITS - np.log(np.exp(LOGITS).sum(1, keepdims=True))
    q = 0.8 * np.eye(4)[LABELS] + 0.2 / 4
    want = float(np.mean(-(q * log_p).sum(1)))
    got = float(SparseSmoothedCrossentropy(label_smoothing=0.2)(LABELS, LOGITS))
    assert got == pytest.approx(want, rel=1e-6)


def test_a_model_compiled_with_it_saves_and_loads(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    model.compile("sgd", loss=SparseSmoothedCrossentropy(label_smoothing=0.2))
    model.fit(LOGITS, LABELS, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, SparseSmoothedCrossentropy)
    assert loaded.loss.label_smoothing == 0.2
    assert float(loaded.evaluate(LOGITS, LABELS, verbose=0)) == pytest.approx(
        float(model.evaluate(LOGITS, LABELS, verbose=0)), rel=1e-6)
