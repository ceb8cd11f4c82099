"""The run's config: built from the flags once, with the flags' names, defaults and flags.json
record; the core's callbacks take it with the workers' interface."""

import dataclasses

import keras
import numpy as np
import pytest
from absl import flags
from helpers import ROOT

from tf_largebatch import train  # noqa: F401  (defines the trainer's flags)
from tf_largebatch.experiment import flags as trainer_flags
from tf_largebatch.experiment import preemption
from tf_largebatch.experiment.config import ExperimentConfig, OutputConfig, ScheduleConfig
from tf_largebatch.experiment.workers import Workers

pytestmark = pytest.mark.unit


@pytest.fixture
def parse():
    def parse(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", *args])
        return trainer_flags.from_flags()
    yield parse
    flags.FLAGS.unparse_flags()


def test_a_python_config_defaults_to_the_flags_defaults(parse):
    assert parse() == ExperimentConfig()


def test_the_flags_land_in_their_fields(parse):
    config = parse(f"--flagfile={ROOT}/configs/demo.cfg", "--epochs=2", "--log_dir=/tmp/x",
                   "--resume=auto", "--milestones=1.5,3")
    assert (config.model.model, config.data.dataset, config.data.synthetic_examples) == (
        "cifar_resnet20", "shapes", 1024)
    assert (config.schedule.per_worker_batch, config.schedule.epochs,
            config.schedule.base_lr, config.schedule.milestones) == (32, 2, 0.2, (1.5, 3.0))
    assert (config.output.log_dir, config.output.resume, config.output.log_every_step) == (
        "/tmp/x", "auto", True)
    assert config.output.checkpoint_folder == "/tmp/x/checkpoints"


@pytest.mark.parametrize("args", [(), (f"--flagfile={ROOT}/configs/demo.cfg",
                                       "--milestones=2.5,30", "--checkpoint_dir=/c")])
def test_flags_json_records_the_same_values_in_the_same_order_as_before(parse, args):
    config = parse(*args)
    assert list(config.flag_values().items()) == list(
        trainer_flags.trainer_flag_values().items())


def test_the_config_is_frozen():
    config = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.schedule.epochs = 3
    assert ScheduleConfig(milestones=("30", 60)).milestones == (30.0, 60.0)


class CountingWorkers(Workers):
    def __init__(self):
        self.averaged_state = 0

    def average_worker_state(self, model):
        self.averaged_state += 1


class RecordingCheckpointer:
    def __init__(self):
        self.saves = []

    def save(self, epoch, run_facts, partial_epoch=None):
        self.saves.append((epoch, run_facts["seed"], partial_epoch["steps"]))


def test_mid_epoch_checkpoints_take_the_workers_and_the_output_config():
    # S = 5 steps in one epoch, a save every 2 global steps: after steps 2 and 4 (step 5
    # ends the epoch, whose checkpoint is SaveCheckpoint's); the BN state averaged at each.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    workers, checkpointer = CountingWorkers(), RecordingCheckpointer()
    callback = preemption.MidEpochCheckpoints(
        workers, OutputConfig(checkpoint_every_steps=2), preemption.SignalWatch(), 5,
        checkpointer, {"seed": 7})
    x, y = np.ones((10, 3), "float32"), np.zeros((10, 2), "float32")
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[callback], verbose=0, shuffle=False)
    assert checkpointer.saves == [(0, 7, 2), (0, 7, 4)]
    assert workers.averaged_state == 2
