"""The preemption agreement costs no collective of its own: the stop flag rides in the
gradient allreduce (tests under real `horovodrun -np 2`)."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import ROOT, horovodrun

pytestmark = pytest.mark.integration


def test_the_stop_flag_rides_in_the_gradients_and_leaves_them_unchanged(tmp_path):
    for variant in ("flag", "none"):
        horovodrun([ROOT / "tests/workers/stop_flag.py", tmp_path, variant])
    runs = {(r, v): json.loads((tmp_path / f"rank{r}-{v}.json").read_text())
            for r in (0, 1) for v in ("flag", "none")}
    # Rank 1 asks before step 2: both ranks read the agreement after step 2, not before.
    assert runs[0, "flag"]["agreed"] == runs[1, "flag"]["agreed"] == [False, True, True]
    # SGD(1) from 0 on the average 1.5·(step + 1): −1.5, −4.5, −9 after steps 1, 2, 3.
    for rank in (0, 1):
        for step, want in enumerate((-1.5, -4.5, -9.0)):
            kernel, bias = runs[rank, "flag"]["weights"][step]
            assert kernel == [[want] * 3] * 2 and bias == [want] * 3
        assert runs[rank, "flag"]["weights"] == runs[rank, "none"]["weights"]


def collectives_per_tensor(timeline):
    """{tensor name: number of collectives} from Horovod's Chrome-trace timeline."""
    text = timeline.read_text().rstrip().rstrip(",")
    events = json.loads(text if text.endswith("]") else text + "]")
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name" and "name" in e["args"]}
    return Counter(names.get(e["pid"], "?") for e in events
                   if e.get("ph") == "B" and e.get("name", "").startswith("NEGOTIATE_"))


def test_no_collective_but_the_gradients_runs_at_every_step(tmp_path):
    """The timeline of 2 epochs of 12 steps under -np 2: tensors that run at least once a
    step are gradients (`grad<i>`); everything else (metrics, BN statistics, the initial
    broadcast) runs a few times an epoch. Before, the eager one-integer allreduce of
    `any_worker` after every step made "HorovodAllreduce" run 40 times here."""
    timeline = tmp_path / "timeline.json"
    cmd = [str(Path(sys.executable).with_name("horovodrun")), "-np", "2", "-H", "localhost:2",
           "--gloo", f"--timeline-filename={timeline}", sys.executable, "-m",
           "tf_largebatch.train", "--model=cifar_resnet8", "--dataset=synthetic",
           "--synthetic_examples=192", "--per_worker_batch=8", "--eval_steps=1", "--epochs=2",
           "--warmup_epochs=1", "--milestones=1", "--nosaved_model",
           f"--log_dir={tmp_path}/run"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    counts = collectives_per_tensor(timeline)
    # The initial broadcast is one op per model and optimizer variable, all named
    # "HorovodBroadcast", once per fit: many, but not per step.
    per_step = {name: n for name, n in counts.items()
                if n >= 24 and name != "HorovodBroadcast"}  # 2 epochs × 12 steps
    assert per_step and all(name.rsplit("/", 1)[-1].startswith("grad") for name in per_step), (
        counts)
    assert not [name for name in counts if "any_worker" in name], counts
