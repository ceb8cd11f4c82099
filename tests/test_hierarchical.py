"""The paper's hierarchical allreduce on Horovod process sets, on two virtual hosts of one
machine (`horovodrun -H localhost:2,127.0.0.1:2`), and the per-gradient allreduce."""

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration

DUMP = ROOT / "tests/workers/train_and_dump.py"
TINY = ["--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=128",
        "--per_worker_batch=8", "--steps_per_epoch=2", "--eval_steps=1", "--seed=3",
        "--warmup=gradual", "--warmup_epochs=1", "--milestones=2", "--epochs=2",
        "--nosaved_model"]


def horovodrun(hosts, args):
    np_ = sum(int(h.split(":")[1]) for h in hosts.split(","))
    cmd = [str(os.path.join(os.path.dirname(sys.executable), "horovodrun")), "-np", str(np_),
           "-H", hosts, "--gloo", sys.executable, *map(str, args)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, np_


@pytest.mark.parametrize("hosts", ["localhost:2,127.0.0.1:2", "localhost:1,127.0.0.1:2"],
                         ids=["2x2", "uneven-1+2"])
def test_three_phases_equal_the_sum_on_odd_sizes_and_dtypes(tmp_path, hosts):
    _, size = horovodrun(hosts, [ROOT / "tests/workers/three_phase.py", tmp_path])
    ranks = range(size)
    # The sums worked out by hand from each rank's contribution.
    want = {
        "f32_7": sum(np.arange(7) * (r + 1) + 0.25 for r in ranks),
        "f64_3x5": np.full((3, 5), sum(1.5 ** r for r in ranks)),
        "f16_1": np.array([sum(r + 0.5 for r in ranks)]),
        "i32_11": sum(np.arange(11) + 100 * r for r in ranks),
    }
    for r in ranks:
        with np.load(tmp_path / f"rank{r}.npz") as f:
            assert str(f["scheme"]) == "process-set hierarchical" and int(f["hosts"]) == 2
            for name, value in want.items():
                assert f[f"three_{name}"].dtype == f[f"flat_{name}"].dtype
                np.testing.assert_allclose(f[f"three_{name}"], value, rtol=1e-6, err_msg=name)
                np.testing.assert_allclose(f[f"three_{name}"], f[f"flat_{name}"], rtol=1e-6)


def test_hierarchical_training_on_two_hosts_equals_the_flat_run(tmp_path):
    common = [DUMP, *TINY, f"--log_dir={tmp_path}/flat", f"--dump={tmp_path}/flat"]
    horovodrun("localhost:2,127.0.0.1:2", common)
    result, _ = horovodrun("localhost:2,127.0.0.1:2",
                           [DUMP, *TINY, f"--log_dir={tmp_path}/hier", f"--dump={tmp_path}/hier",
                            "--hierarchical_allreduce"])
    assert "process-set hierarchical allreduce in effect (2 hosts)" in (
        result.stdout + result.stderr)
    flat = [dict(np.load(tmp_path / f"flat/rank{r}.npz")) for r in range(4)]
    hier = [dict(np.load(tmp_path / f"hier/rank{r}.npz")) for r in range(4)]
    for name in flat[0]:
        for r in range(1, 4):  # the same weights on every rank
            np.testing.assert_array_equal(hier[r][name], hier[0][name], err_msg=name)
        np.testing.assert_allclose(hier[0][name], flat[0][name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_grouped_and_per_gradient_allreduce_give_the_same_weights(tmp_path):
    horovodrun("localhost:2", [DUMP, *TINY, f"--log_dir={tmp_path}/each",
                               f"--dump={tmp_path}/each"])
    horovodrun("localhost:2", [DUMP, *TINY, f"--log_dir={tmp_path}/grouped",
                               f"--dump={tmp_path}/grouped", "--grouped_allreduce"])
    each, grouped = dict(np.load(tmp_path / "each/rank0.npz")), dict(
        np.load(tmp_path / "grouped/rank0.npz"))
    for name in each:
        np.testing.assert_allclose(each[name], grouped[name], rtol=1e-5, atol=1e-7, err_msg=name)
