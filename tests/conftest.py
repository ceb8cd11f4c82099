"""The test tiers: every test carries exactly one of the markers `unit` or `integration`
(registered in pyproject.toml), set for its module with `pytestmark = pytest.mark.unit`.
`pytest -q -m unit` then runs the fast tier, `pytest -q` both.

`make test` runs the modules on two pytest-xdist workers, a module at a time on one worker
(`--dist loadfile`: a module's fixtures are built once) in the order set here
(`--no-loadscope-reorder`: xdist would put the modules with most tests first): the longest
modules go first so that both workers end together."""

import os

import numpy as np
import pytest
import tiny_run
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

TIERS = ("unit", "integration")
# The longest modules, longest first (their share of `pytest --durations=0`); the others
# keep their order after these, unit modules last.
LONGEST_FIRST = ("test_slurm.py", "test_multi_host.py", "test_faults.py", "test_train.py",
                 "test_saves.py", "test_hierarchical.py", "test_evaluate.py", "test_cli_runs.py",
                 "test_launchers.py", "test_lost_worker.py", "test_preemption.py",
                 "test_horovod.py", "test_portable_train_runs.py", "test_demo.py")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything, so no test escapes the check
def pytest_collection_modifyitems(config, items):
    wrong = {}
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            wrong.setdefault(item.path, (item.nodeid, tiers))
    if wrong:
        lines = [f"  {nodeid}: {' and '.join(tiers) or 'no tier marker'}"
                 for nodeid, tiers in wrong.values()]
        raise pytest.UsageError(
            "each test needs exactly one tier marker; put `pytestmark = pytest.mark.unit` "
            "(in-process, seconds) or `pytestmark = pytest.mark.integration` (horovodrun, "
            "trainer runs, TensorFlow subprocesses) at the top of its module:\n"
            + "\n".join(lines))
    items.sort(key=start_order)


def start_order(item):
    """LONGEST_FIRST's modules in its order, then the other integration modules, then unit."""
    name = item.path.name
    if name in LONGEST_FIRST:
        return (0, LONGEST_FIRST.index(name))
    return (1, 0) if item.get_closest_marker("integration") else (2, 0)


@pytest.fixture(scope="module")
def png_tree(tmp_path_factory):
    """train: 3 classes × 20 random 32×32 PNGs (lossless, so pixels are known); test: × 4.
    For test_portable_train.py and test_portable_train_runs.py."""
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    pixels = {}
    for split, count in (("train", 20), ("test", 4)):
        for name in ("zebra", "ant", "moth"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                path = root / split / name / f"{i:02d}.png"
                Image.fromarray(image).save(path)
                pixels[str(path)] = image
    return root, pixels


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """tiny_run's uninterrupted 3 epochs, which every recovered run must equal (per module:
    test_faults.py and test_saves.py)."""
    run_dir = tmp_path_factory.mktemp("straight")
    tiny_run.train(run_dir, "--epochs=3")
    return run_dir


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A finished run of 2 epochs (ckpt-1, ckpt-2), trained once for the module;
    `copy_of_two_epochs` gives each test its own copy to resume or damage."""
    run_dir = tmp_path_factory.mktemp("two_epochs")
    tiny_run.train(run_dir, "--epochs=2", saved_model=True)  # test_saves.py reads its export
    return run_dir
