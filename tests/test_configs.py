"""Every flagfile in configs/ parses and passes the trainer's validators, from any working
directory (a config includes its base file by a path relative to itself)."""

import contextlib
import os
import tempfile

import pytest
from absl import flags
from helpers import ROOT

from tf_largebatch import portable_train, train  # noqa: F401  (train: the trainer and its flags)
from tf_largebatch.experiment import flagfiles
from tf_largebatch.experiment.builders import MODELS

pytestmark = pytest.mark.unit

CONFIGS = sorted((ROOT / "configs").glob("*.cfg"))
GPU_PROTOCOL = sorted((ROOT / "configs").glob("cifar10_gpu_*.cfg"))


@contextlib.contextmanager
def parsed(config, data_dir="/data/imagenet"):
    """FLAGS parsed as the trainers parse them, from a directory that is not the repository."""
    values = flags.FLAGS
    values.unparse_flags()
    cwd = os.getcwd()
    try:
        with tempfile.TemporaryDirectory() as elsewhere:
            os.chdir(elsewhere)
            values(flagfiles.expand(["train", f"--flagfile={config}", f"--data_dir={data_dir}"]))
            yield values
    finally:
        os.chdir(cwd)
        values.unparse_flags()


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_parses(config):
    with parsed(config) as values:
        assert values.model in MODELS
        assert values.per_worker_batch == 32


@pytest.mark.parametrize("config", GPU_PROTOCOL, ids=[c.stem for c in GPU_PROTOCOL])
def test_gpu_protocol_configs_run_on_the_portable_trainer_with_the_papers_schedule(config):
    with parsed(config, "/data/cifar10") as values:
        portable_train.check_flags()  # raises for flags that a JAX host cannot honour
        assert (values.epochs, values.warmup_epochs) == (90, 5)
        assert values.milestones == ["30", "60", "80"]
        assert values.model == "cifar_resnet20" and values.base_lr == 0.1


def test_paper_configs_use_the_papers_numbers():
    with parsed(ROOT / "configs/imagenet_kn8k_gradual.cfg") as values:
        assert (values.base_lr, values.base_batch, values.warmup, values.warmup_epochs) == (
            0.1, 256, "gradual", 5)
        assert values.milestones == ["30", "60", "80"] and values.weight_decay == 1e-4
