"""A run driven from Python with a config, no flags: the example of docs/trainer.md, "From
Python", executed as written, checked against the schedule worked out by hand."""

import json
import math

import pytest
from absl import flags
from helpers import ROOT

pytestmark = pytest.mark.integration


def documented_example():
    text = (ROOT / "docs/trainer.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_documented_config_runs_without_flags_and_follows_the_schedule(tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes runs/from_python
    flags.FLAGS.unparse_flags()  # any flag the run read would raise UnparsedFlagAccessError
    scope = {}
    exec(compile(documented_example(), "docs/trainer.md", "exec"), scope)  # noqa: S102
    log_dir = tmp_path / "runs/from_python"

    # N = 256, k = 2 simulated workers of n = 32: kn = 64, S = 256 // 64 = 4 steps per epoch.
    steps = read_jsonl(log_dir / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(2 * 4))
    # η̂ = 0.2·64/256 = 0.05; gradual warmup η(t) = η̂/2 + (η̂ − η̂/2)·t/(1·4) for t < 4, then
    # η̂ until epoch 1.5 (t = 6), then 0.1·η̂.
    peak = 0.2 * 64 / 256
    want = [peak / 2 + (peak - peak / 2) * t / 4 for t in range(4)] + [peak] * 2 + [peak / 10] * 2
    assert [s["lr"] for s in steps] == pytest.approx(want, rel=1e-6)
    epochs = read_jsonl(log_dir / "metrics.jsonl")
    assert [(e["epoch"], e["step"]) for e in epochs] == [(1, 4), (2, 8)]
    assert all(math.isfinite(e["train_loss"]) and 0 <= e["val_top1_error"] <= 1 for e in epochs)
    recorded = json.loads((log_dir / "flags.json").read_text())
    assert (recorded["model"], recorded["global_batch"], recorded["workers"]) == (
        "cifar_resnet8", 64, 2)
    assert recorded["milestones"] == ["1.5"] and recorded["peak_lr"] == pytest.approx(peak)
    assert scope["run"].layout.steps_per_epoch == 4 and scope["run"].model.built
