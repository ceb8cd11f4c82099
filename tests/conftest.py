"""The test tiers: every test carries exactly one of the markers `unit` or `integration`
(registered in pyproject.toml), set for its module with `pytestmark = pytest.mark.unit`.
`pytest -q -m unit` then runs the fast tier, `pytest -q` both."""

import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

TIERS = ("unit", "integration")


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
