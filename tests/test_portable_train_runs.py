"""tf_largebatch.portable_train run as a subprocess on a small PNG folder: the schedule, exact
resumption and what it refuses (test_portable_train.py tests its parts in process)."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration

# ----------------------------------------------------------------------------- the runner

TINY = ["--model=cifar_resnet8", "--dataset=folder", "--per_worker_batch=4",
        "--simulate_workers=4", "--seed=2", "--warmup=gradual", "--warmup_epochs=1",
        "--milestones=2", "--log_every_step", "--nosaved_model"]


def portable(args, check=True):
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"),
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "tf_largebatch.portable_train",
                             *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-4000:])
    return result


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: out.update(
            {name: item[()]} if isinstance(item, h5py.Dataset) else {}))
    return out


def test_runner_follows_the_schedule_and_resumes_exactly(png_tree, tmp_path):
    root, _ = png_tree
    common = [*TINY, f"--data_dir={root}"]
    # 60 images, kn = 16: 3 steps per epoch, 12 images dropped.
    portable([*common, "--epochs=3", f"--log_dir={tmp_path}/straight"])
    portable([*common, "--epochs=2", f"--log_dir={tmp_path}/resumed"])
    portable([*common, "--epochs=3", f"--log_dir={tmp_path}/resumed", "--resume"])

    # η̂ = 0.1·16/256 = 0.00625; gradual warmup from η̂/4 over the 3 steps of epoch 1; ×0.1 at 2.
    peak, start = 0.00625, 0.0015625
    want = [start + (peak - start) * t / 3 for t in range(3)] + [peak] * 3 + [peak / 10] * 3
    for run in ("straight", "resumed"):
        steps = read_jsonl(tmp_path / run / "steps.jsonl")
        assert [s["step"] for s in steps] == list(range(9))
        assert [s["lr"] for s in steps] == pytest.approx(want, rel=1e-6)
        epochs = read_jsonl(tmp_path / run / "metrics.jsonl")
        assert [e["epoch"] for e in epochs] == [1, 2, 3]
        for record in epochs:
            assert 0 <= record["val_top1_error"] <= 1 and np.isfinite(record["train_loss"])
        flags = json.loads((tmp_path / run / "flags.json").read_text())
        assert (flags["workers"], flags["global_batch"], flags["steps_per_epoch"]) == (4, 16, 3)
        assert (tmp_path / run / "model.keras").is_file()  # the finished run's model
    # Only the last 3 checkpoints are kept; the resumed run ends where the straight one does,
    # momentum buffers and step included.
    names = sorted(n for n in os.listdir(tmp_path / "straight/checkpoints")
                   if n != ".lock")  # the run's lock on its checkpoint folder
    assert names == ["ckpt-1.weights.h5", "ckpt-2.weights.h5", "ckpt-3.weights.h5", "run.json"]
    straight = weights(tmp_path / "straight/checkpoints/ckpt-3.weights.h5")
    again = weights(tmp_path / "resumed/checkpoints/ckpt-3.weights.h5")
    assert straight.keys() == again.keys() and len(straight) > 40
    for name in straight:
        np.testing.assert_allclose(again[name], straight[name], rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    # The curves tool reads the runner's logs.
    curves = subprocess.run([sys.executable, "-m", "tf_largebatch.curves",
                             tmp_path / "straight", tmp_path / "resumed",
                             f"--out={tmp_path}/c.png"], capture_output=True, text=True, cwd=ROOT)
    assert curves.returncode == 0, curves.stderr
    assert (tmp_path / "c.png").stat().st_size > 0


def test_runner_refuses_what_it_cannot_do_and_what_would_lose_work(png_tree, tmp_path):
    root, _ = png_tree
    common = [*TINY, f"--data_dir={root}", f"--log_dir={tmp_path}", "--epochs=1",
              "--warmup=none"]
    result = portable([*common, "--dataset=synthetic"], check=False)
    assert result.returncode == 1 and "reads only --dataset=folder" in result.stderr
    result = portable([*common, "--fp16_allreduce"], check=False)
    assert result.returncode == 1 and "--fp16_allreduce is not supported" in result.stderr
    result = portable([*common, "--resume"], check=False)
    assert result.returncode == 1 and "no checkpoint in" in result.stderr
    portable(common)
    written = (tmp_path / "checkpoints/ckpt-1.weights.h5").read_bytes()
    result = portable(common, check=False)
    assert result.returncode == 1 and "already holds checkpoints" in result.stderr
    assert (tmp_path / "checkpoints/ckpt-1.weights.h5").read_bytes() == written
    # Another kn resumes by the policy both trainers share: rate and step count rescaled.
    result = portable([*common, "--simulate_workers=2", "--epochs=2", "--resume"])
    assert ("Resuming a run of k·n = 4×4 with 3 steps per epoch as k·n = 2×4 with 7"
            in result.stderr)
    assert (tmp_path / "checkpoints/ckpt-1.weights.h5").read_bytes() == written
    # The step count restarts at epoch 1 × 7 new steps: 14 after epoch 2.
    assert json.loads((tmp_path / "checkpoints/run.json").read_text())["step"] == 2 * 7
