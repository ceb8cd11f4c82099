"""What the documentation promises: the own-`fit` example runs, and the trainers' --help lists
their flags (every flag in docs/trainer.md: test_docs_flags.py)."""

import re
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration

def python_blocks(markdown, heading):
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_own_fit_example_in_recipe_md_runs_and_learns():
    code = python_blocks((ROOT / "docs/recipe.md").read_text(), "## Your own `fit`")[0]
    scope = {}
    exec(compile(code, "docs/recipe.md", "exec"), scope)  # noqa: S102  (the documented example)
    history = scope["history"].history
    assert len(history["loss"]) == 3
    # 2,048 generated images, kn = 128: 16 steps per epoch; chance is 90% error.
    assert scope["info"].steps_per_epoch == 16
    assert history["val_top1"][-1] > 0.5, history["val_top1"]


def test_help_exits_0_and_lists_the_trainers_flags():
    for trainer in ("tf_largebatch.train", "tf_largebatch.portable_train"):
        result = subprocess.run([sys.executable, "-m", trainer, "--help"], capture_output=True,
                                text=True, cwd=ROOT, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        for name in ("log_dir", "per_worker_batch", "simulate_workers", "warmup"):
            assert f"--{name}" in result.stdout, name
