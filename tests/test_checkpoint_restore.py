"""A resume restores every value its checkpoint holds, so TensorFlow reports none as left over;
a checkpoint of another model is still refused."""

import gc
import logging

import keras
import pytest

from tf_largebatch.experiment.checkpointing import Checkpointer, CheckpointError

pytestmark = pytest.mark.unit


def model(width=4, layers=1):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((3,)), *[keras.layers.Dense(width) for _ in
                                                   range(layers)], keras.layers.Dense(2)])
    net.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    net.optimizer.build(net.trainable_variables)
    return net


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def restore_and_collect_warnings(directory, net):
    """Restores `directory` into `net`; TensorFlow's warnings, including those its load
    status logs when it is deleted (unrestored values)."""
    recorder = Recorder()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(recorder)
    try:
        state = Checkpointer(str(directory), net).restore()
        gc.collect()
    finally:
        logger.removeHandler(recorder)
    return state, recorder.lines


@pytest.mark.parametrize("saves", [["end"], ["mid"], ["end", "mid"]])
def test_a_resume_leaves_no_checkpoint_value_unrestored(tmp_path, saves):
    # "end": an end-of-epoch save (the manager's, with save_counter); "mid": a mid-epoch
    # write (before any save: no save_counter; after one: with it).
    net = model()
    saver = Checkpointer(str(tmp_path), net)
    for epoch, kind in enumerate(saves, 1):
        saver.save(epoch, {}, {"steps": 1, "means": {}} if kind == "mid" else None)
    net.optimizer.iterations.assign(7)
    state, warnings = restore_and_collect_warnings(tmp_path, model())
    assert state["epoch"] == len(saves)
    assert not [line for line in warnings if "could not be found" in line
                or "unrestored values" in line], warnings  # before: (root).save_counter


@pytest.mark.parametrize("other", [dict(layers=2), dict(width=5)])
def test_a_checkpoint_of_another_model_is_still_refused(tmp_path, other):
    Checkpointer(str(tmp_path), model()).save(1, {})
    with pytest.raises(CheckpointError, match="does not fit this model/optimizer"):
        Checkpointer(str(tmp_path), model(**other)).restore()
