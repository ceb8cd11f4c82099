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


def linear_model(initial="zeros"):
    """y = x·w, w of 3 values, no bias: with x = c·(1, 1, 1) and the loss mean(y), every
    gradient ∂loss/∂w_i is c, whatever w is."""
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer=initial, name="dense")])


def mean_output(y_true, y_pred):
    return y_pred


def ones(n=16, c=1.0):
    return np.full((n, 3), c, "float32"), np.zeros((n, 1), "float32")


def test_the_scheduled_rate_is_the_one_the_compiled_step_applies():
    # Plain SGD (m = 0, λ = 0) on a gradient of 1: w_t = −Σ_{s<t} η_s. The rates are those of
    # test_learning_rate_callback_sets_each_step_and_resumes: 0.0015625 + 0.001171875·t for the
    # 4 warmup steps, 0.00625 for the next 4: Σ = (0.00625 + 6 × 0.001171875) + 4 × 0.00625
    # = 0.01328125 + 0.025 = 0.03828125.
    schedule = schedules.goyal_schedule(4, 4, steps_per_epoch=4, warmup_epochs=1,
                                        total_epochs=3, milestones=(2,))
    model = linear_model()
    model.compile(optimizers.MomentumSGD(1.0, momentum=0.0, l2=0.0), mean_output)
    model.fit(*ones(), batch_size=4, epochs=2, verbose=0, shuffle=False,
              callbacks=[callbacks.StepLearningRateScheduler(schedule)])
    np.testing.assert_allclose(model.get_weights()[0], np.full((3, 1), -0.03828125), rtol=1e-6)


def test_the_scheduled_weight_decay_is_the_one_the_compiled_step_applies():
    # A zero gradient (x = 0) and m = 0 leave only the decay: w ← w·(1 − η·λ_t). λ is 5e-5
    # for the first 4 steps and 1e-4 for the last 4 (final_fraction 0.5 of 8 steps); η = 100:
    # w = 0.995⁴ · 0.99⁴ = 0.98014950 · 0.96059601 = 0.94152695.
    decay = schedules.WeightDecaySchedule(5e-5, steps_per_epoch=4, total_epochs=2,
                                          final_fraction=0.5)
    model = linear_model("ones")
    model.compile(optimizers.MomentumSGD(100.0, momentum=0.0, l2=0.0), mean_output)
    model.fit(*ones(c=0.0), batch_size=4, epochs=2, verbose=0,
              callbacks=[callbacks.WeightDecayScheduler(decay)])
    np.testing.assert_allclose(model.get_weights()[0], np.full((3, 1), 0.94152695), rtol=1e-6)


class RecordSwitch(keras.callbacks.Callback):
    def __init__(self, switch):
        super().__init__()
        self.switch, self.seen = switch, []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(bool(keras.ops.convert_to_numpy(self.switch.enabled)))


def test_the_augmentation_switch_is_off_in_every_batch_of_the_last_epochs_of_a_fit():
    switch = callbacks.AugmentationSwitch(total_epochs=4, final_epochs=1)
    record = RecordSwitch(switch)
    model = linear_model()
    model.compile(optimizers.MomentumSGD(0.1), mean_output)
    model.fit(*ones(8), batch_size=4, epochs=4, verbose=0, callbacks=[switch, record])
    assert record.seen == [True] * 6 + [False] * 2  # 2 batches an epoch, epoch 4 plain


def test_divergence_stops_an_exploding_fit_before_the_epoch_is_saved(tmp_path):
    # η = 0 keeps w = (1, 1, 1): the epoch loss is 3c. Epoch 1: c = 1, loss 3; epoch 2 with
    # c = 5 (loss 15 ≤ 10 × 3) goes on; epoch 3 with c = 100 (loss 300 > 30) stops.
    stop = callbacks.StopOnDivergence(factor=10.0)
    save = keras.callbacks.ModelCheckpoint(str(tmp_path / "{epoch}.weights.h5"),
                                           save_weights_only=True)
    model = linear_model("ones")
    model.compile(optimizers.MomentumSGD(0.0), mean_output)
    for epoch, c in ((0, 1.0), (1, 5.0)):
        history = model.fit(*ones(c=c), batch_size=4, initial_epoch=epoch, epochs=epoch + 1,
                            verbose=0, callbacks=[stop, save])
        assert history.history["loss"] == pytest.approx([3 * c])
    with pytest.raises(callbacks.DivergenceError,
                       match=r"epoch 3: the training loss 300 is more than 10× the first "
                             r"epoch's 3;"):
        model.fit(*ones(c=100.0), batch_size=4, initial_epoch=2, epochs=3, verbose=0,
                  callbacks=[stop, save])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.weights.h5", "2.weights.h5"]


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
    model.compile(optimizers.MomentumSGD(0.1, l2=0.0),
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
    # A RuntimeError, raised in the batch: the checkpoint callback never sees the epoch end.
    with pytest.raises(RuntimeError, match="warmup") as err:
        model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                  callbacks=[callbacks.StopOnNonFiniteLoss(str(tmp_path)), save])
    assert err.type is callbacks.NonFiniteLossError
    assert "global step" in str(err.value) and str(tmp_path) in str(err.value)
    # The advice names the API of a user's own fit and the trainer's flag alike.
    assert "WarmupDecay(warmup=\"gradual\")" in str(err.value)
    assert "--warmup=gradual" in str(err.value)
    model.load_weights(path)
    for saved, before in zip(model.get_weights(), good, strict=True):
        np.testing.assert_array_equal(saved, before)


def test_metric_average_weights_val_keys_by_val_examples_and_keeps_keras_names():
    calls = []

    def average(value, count):  # stands in for the allreduce: records, then halves
        calls.append((value, count))
        return value / 2

    logs = {"val_loss": 4.0, "loss": 2.0, "accuracy": 0.5, "val_accuracy": 0.25}
    callbacks.MetricAverage(train_examples=64, val_examples=37, average=average).on_epoch_end(
        0, logs)
    assert logs == {"val_loss": 2.0, "loss": 1.0, "accuracy": 0.25, "val_accuracy": 0.125}
    # One order on every worker (sorted keys), since each call is a collective.
    assert calls == [(0.5, 64), (2.0, 64), (0.25, 37), (4.0, 37)]
    with pytest.raises(ValueError, match="no val_examples"):
        callbacks.MetricAverage(64, average=average).on_epoch_end(0, {"val_loss": 1.0})


def test_the_old_name_learning_rate_scheduler_warns_and_sets_the_same_rates():
    # The callback's name before it became StepLearningRateScheduler: a deprecated alias.
    schedule = schedules.goyal_schedule(4, 4, steps_per_epoch=4, warmup_epochs=1,
                                        total_epochs=3, milestones=(2,))
    peak, start = 0.00625, 0.0015625  # as in the test above
    expected = [start + (peak - start) * t / 4 for t in range(4)] + [peak] * 4
    with pytest.warns(DeprecationWarning, match="StepLearningRateScheduler") as caught:
        old = callbacks.LearningRateScheduler(schedule)
    assert caught[0].filename == __file__  # the caller's line, not the package's
    assert isinstance(old, callbacks.StepLearningRateScheduler)
    x, y = data()
    model = tiny_model()
    model.compile(optimizers.MomentumSGD(1.0), keras.losses.SparseCategoricalCrossentropy(True))
    record = RecordRates()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[old, record])
    assert record.seen == pytest.approx(expected)
    assert history.history["learning_rate"] == pytest.approx([expected[3], expected[7]])


def test_divergence_callback_on_hand_made_logs():
    guard = callbacks.StopOnDivergence(factor=10)
    guard.on_epoch_end(0, {"loss": 2.3, "val_loss": 2.2})  # sets the reference
    guard.on_epoch_end(1, {"loss": 22.9, "val_loss": 3.0})  # 9.96× : still fine
    with pytest.raises(callbacks.DivergenceError, match="more than 10× the first epoch's 2.3"):
        guard.on_epoch_end(2, {"loss": 23.1})
    with pytest.raises(callbacks.DivergenceError, match="validation loss is nan"):
        callbacks.StopOnDivergence().on_epoch_end(0, {"loss": 2.0, "val_loss": float("nan")})
    callbacks.StopOnDivergence(factor=0, reference_loss=1.0).on_epoch_end(0, {"loss": 1e9})
