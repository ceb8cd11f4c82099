"""Every trainer flag is documented in docs/trainer.md, and flags.json holds the trainer's flags
only (the flags read from the source, in-process)."""

import re

import pytest
from helpers import ROOT

pytestmark = pytest.mark.unit

FLAG_SOURCE = ROOT / "tf_largebatch/experiment/flags.py"


def defined_flags():
    """The trainer's flags, read from the source (not from the code under test)."""
    pattern = r'flags\.DEFINE_\w+\(\s*"(\w+)"|flags\.Flag\(\s*[^"]*?"(\w+)"'  # DEFINE_flag(Flag(...
    return [a or b for a, b in re.findall(pattern, FLAG_SOURCE.read_text())]


def test_every_trainer_flag_is_in_trainer_md():
    doc = (ROOT / "docs/trainer.md").read_text()
    names = defined_flags()
    assert len(names) > 40
    missing = [name for name in names + ["log_dir"] if f"--{name}" not in doc]
    assert not missing, missing


def test_flags_json_holds_the_trainers_flags_only():
    from absl import flags

    from tf_largebatch.experiment import flags as trainer_flags

    flags.FLAGS(["train"], known_only=True)
    values = trainer_flags.trainer_flag_values()
    assert list(values) == defined_flags() + ["log_dir"]
    assert not {"logtostderr", "alsologtostderr", "test_srcdir", "v", "verbosity"} & set(values)
