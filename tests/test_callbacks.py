"""Callbacks inside a real `model.fit`, against the schedule formulas worked out by hand."""

import keras
import numpy as np
import pytest

from tf_largebatch import callbacks, optimizers, schedules

pytestmark = pytest.mark.unit


def tiny_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])


def data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype("float32"), rng.integers(0, 2, n).astype("int32")


class RecordRates(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self.seen = getattr(self, "seen", [])
        self.seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_step_scheduler_does_not_shadow_keras_epoch_scheduler():
    assert not hasattr(callbacks, "LearningRateScheduler")
    assert issubclass(callbacks.StopOnNonFiniteLoss, keras.callbacks.TerminateOnNaN)
    assert callbacks.StopOnNonFiniteLoss().raise_error is True
    assert issubclass(callbacks.NonFiniteLossError, RuntimeError)


def test_learning_rate_callback_sets_each_step_and_resumes():
    # k = 4 of n = 4: η̂ = 0.1·16/256 = 0.00625, warmup from η̂/4 over 1 epoch of 4 steps.
    schedule = schedules.goyal_schedule(4, 4, steps_per_epoch=4, warmup_epochs=1,
                                        total_epochs=3, milestones=(2,))
    peak, start = 0.00625, 0.0015625
    expected = [start + (peak - start) * t / 4 for t in range(4)] + [peak] * 4 + [peak / 10] * 4
    x, y = data()
    model = tiny_model()
    model.compile(optimizers.MomentumSGD(1.0), keras.losses.SparseCategoricalCrossentropy(True))
    record = RecordRates()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                        callbacks=[callbacks.StepLearningRateScheduler(schedule), record])
    assert record.seen == pytest.approx(expected[:8])
    # Logged under Keras's own key for the rate.
    assert history.history["learning_rate"] == pytest.approx([expected[3], expected[7]])
    # Resuming at epoch 2 (iterations restored) continues with the same rates.
    model.fit(x, y, batch_size=4, epochs=3, initial_epoch=2, verbose=0,
              callbacks=[callbacks.StepLearningRateScheduler(schedule), record])
    assert record.seen == pytest.approx(expected)


def test_weight_decay_callback_sets_the_variable():
    schedule = schedules.WeightDecaySchedule(5e-5, steps_per_epoch=4, total_epochs=2,
                                             final_fraction=0.5)
    x, y = data()
    model = tiny_model()
    model.compile(optimizers.MomentumSGD(0.1, weight_decay=0.0),
                  keras.losses.SparseCategoricalCrossentropy(True))
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                        callbacks=[callbacks.WeightDecayScheduler(schedule)])
    assert history.history["weight_decay"] == pytest.approx([5e-5, 1e-4])


def test_augmentation_switch_turns_off_for_the_last_epochs():
    switch = callbacks.AugmentationSwitch(total_epochs=10, final_epochs=2)
    assert [switch.augment_at(e) for e in (0, 7, 8, 9)] == [True, True, False, False]
    # The same rule the pipelines take as augment_off_epoch.
    assert schedules.augmentation_off_epoch(10, 2) == 8
    assert schedules.augmentation_off_epoch(10, 0) is None
    assert callbacks.AugmentationSwitch(total_epochs=10, final_epochs=0).augment_at(9)
    switch.on_epoch_begin(8)
    assert not bool(keras.ops.convert_to_numpy(switch.enabled))
    with pytest.raises(ValueError, match="final_epochs"):
        callbacks.AugmentationSwitch(total_epochs=3, final_epochs=4)


def test_non_finite_loss_stops_before_the_diverged_weights_are_saved(tmp_path):
    x, y = data()
    x[8:] *= 1e30  # the third batch overflows
    model = tiny_model()
    model.compile(optimizers.MomentumSGD(0.1), keras.losses.SparseCategoricalCrossentropy(True))
    path = str(tmp_path / "last.weights.h5")
    save = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    model.fit(x[:8], y[:8], batch_size=4, epochs=1, verbose=0, callbacks=[save])
    good = [w.copy() for w in model.get_weights()]
    with pytest.raises(callbacks.NonFiniteLossError, match="warmup") as err:
        model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                  callbacks=[callbacks.StopOnNonFiniteLoss(str(tmp_path)), save])
    assert "global step" in str(err.value) and str(tmp_path) in str(err.value)
    # The advice names the API of a user's own fit and the trainer's flag alike.
    assert "WarmupDecay(warmup=\"gradual\")" in str(err.value)
    assert "--warmup=gradual" in str(err.value)
    model.load_weights(path)
    for saved, before in zip(model.get_weights(), good, strict=True):
        np.testing.assert_array_equal(saved, before)
