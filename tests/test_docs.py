"""What the documentation promises: the own-`fit` example runs, every trainer flag is
documented, and the public API follows Keras's conventions."""

import re
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration

FLAG_SOURCE = ROOT / "tf_largebatch/experiment/flags.py"


def defined_flags():
    """The trainer's flags, read from the source (not from the code under test)."""
    pattern = r'flags\.DEFINE_\w+\(\s*"(\w+)"|flags\.Flag\(\s*[^"]*?"(\w+)"'  # DEFINE_flag(Flag(...
    return [a or b for a, b in re.findall(pattern, FLAG_SOURCE.read_text())]


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


def test_every_trainer_flag_is_in_trainer_md():
    doc = (ROOT / "docs/trainer.md").read_text()
    names = defined_flags()
    assert len(names) > 40
    missing = [name for name in names + ["log_dir"] if f"--{name}" not in doc]
    assert not missing, missing


def test_help_exits_0_and_lists_the_trainers_flags():
    for trainer in ("tf_largebatch.train", "tf_largebatch.portable_train"):
        result = subprocess.run([sys.executable, "-m", trainer, "--help"], capture_output=True,
                                text=True, cwd=ROOT, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        for name in ("log_dir", "per_worker_batch", "simulate_workers", "warmup"):
            assert f"--{name}" in result.stdout, name


def test_flags_json_holds_the_trainers_flags_only():
    from absl import flags

    from tf_largebatch.experiment import flags as trainer_flags

    flags.FLAGS(["train"], known_only=True)
    values = trainer_flags.trainer_flag_values()
    assert list(values) == defined_flags() + ["log_dir"]
    assert not {"logtostderr", "alsologtostderr", "test_srcdir", "v", "verbosity"} & set(values)
