"""The trainer end to end, with real `horovodrun -np 2` (Gloo, CPU)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, horovodrun

pytestmark = pytest.mark.integration

# A CIFAR ResNet-8 on 64 synthetic images; n = 8, 3 steps per epoch.
TINY = ["--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=64",
        "--per_worker_batch=8", "--steps_per_epoch=3", "--eval_steps=1", "--seed=3",
        "--warmup=gradual", "--warmup_epochs=1", "--milestones=2", "--nosaved_model"]
DUMP = ROOT / "tests/workers/train_and_dump.py"


def run_single(args, check=True):
    result = subprocess.run([sys.executable, str(DUMP), *map(str, args)], capture_output=True,
                            text=True, cwd=ROOT, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-4000:])
    return result


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# Runs that several tests share, trained once for the module; a test that resumes or damages
# one works on its own copy (`copy_run`: the run's files name their folder nowhere).
@pytest.fixture(scope="module")
def simulated_two_epochs(tmp_path_factory):
    """One process simulating k = 2 workers, 2 epochs, every step logged."""
    run_dir = tmp_path_factory.mktemp("simulated")
    run_single([*TINY, "--epochs=2", "--simulate_workers=2", "--log_every_step",
                f"--log_dir={run_dir}", f"--dump={run_dir}"])
    return run_dir


FLAT = [*TINY, "--log_every_step", "--fusion_threshold_mb=1", "--cycle_time_ms=2"]


@pytest.fixture(scope="module")
def flat_two_epochs(tmp_path_factory):
    """horovodrun -np 2, one uncompressed allreduce per gradient, 2 epochs."""
    run_dir = tmp_path_factory.mktemp("flat")
    horovodrun([DUMP, *FLAT, "--epochs=2", f"--log_dir={run_dir}", f"--dump={run_dir}"])
    return run_dir


def copy_run(run_dir, to):
    shutil.copytree(run_dir, to, dirs_exist_ok=True)
    return to


def test_two_workers_agree_and_equal_two_simulated_workers(simulated_two_epochs, tmp_path):
    (tmp_path / "hvd").mkdir()
    # Horovod's native hierarchical allreduce needs MPI + NCCL + several hosts: here the
    # process-set scheme runs instead, says why, and computes the same average.
    result = horovodrun([DUMP, *TINY, "--epochs=2", f"--log_dir={tmp_path}/hvd",
                         f"--dump={tmp_path}/hvd", "--hierarchical_allreduce"])
    assert ("process-set hierarchical allreduce in effect (1 hosts) because Horovod's native "
            "one needs what is missing here: horovod was built without MPI") in (
        result.stdout + result.stderr)
    rank0, rank1 = load(tmp_path / "hvd/rank0.npz"), load(tmp_path / "hvd/rank1.npz")
    simulated = load(simulated_two_epochs / "rank0.npz")
    assert rank0.keys() == rank1.keys() == simulated.keys()
    assert any("moving_mean" in k for k in rank0)
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
        # Same gradient normalisation (1/kn), data split and per-worker BN over n = 8.
        np.testing.assert_allclose(rank0[name], simulated[name], rtol=2e-4, atol=2e-6,
                                   err_msg=name)
    # Both logged the same global batch kn = 16 and the same k = 2.
    for run in (tmp_path / "hvd", simulated_two_epochs):
        flags = json.loads((run / "flags.json").read_text())
        assert (flags["workers"], flags["global_batch"]) == (2, 16)


def test_logged_validation_metrics_count_each_image_once_despite_padding(tmp_path):
    # 256 synthetic validation images, global batch 2 processes × 3 simulated × 8 = 48: 6 steps,
    # the last 32 slots padding (all on rank 1's side of the last step but 16 on rank 0's).
    horovodrun([DUMP, *TINY, "--synthetic_examples=160", "--simulate_workers=3",
                "--eval_steps=100", "--epochs=1", "--warmup=none", f"--log_dir={tmp_path}",
                f"--dump={tmp_path}", "--eval_check"])
    logged = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    alone = json.loads((tmp_path / "eval_check.json").read_text())
    assert alone["count"] == 256
    assert logged["val_top1_error"] == pytest.approx(alone["top1_error"], abs=1e-6)
    assert logged["val_top5_error"] == pytest.approx(alone["top5_error"], abs=1e-6)
    assert logged["val_loss"] == pytest.approx(alone["xent"], rel=1e-5)


def expected_rates():
    """k = 2, n = 8: η̂ = 0.1·16/256 = 0.00625, warmup from η̂/2 over 3 steps, ×0.1 at epoch 2."""
    peak, start = 0.00625, 0.003125
    return [start + (peak - start) * t / 3 for t in range(3)] + [peak] * 3 + [peak / 10] * 3


def test_logged_rates_follow_the_formula_across_a_resume(flat_two_epochs, tmp_path):
    copy_run(flat_two_epochs, tmp_path)  # epochs 1 and 2
    horovodrun([DUMP, *FLAT, f"--log_dir={tmp_path}", f"--dump={tmp_path}", "--epochs=3",
                "--resume"])
    steps = read_jsonl(tmp_path / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(9))
    assert [s["lr"] for s in steps] == pytest.approx(expected_rates(), rel=1e-6)
    epochs = read_jsonl(tmp_path / "metrics.jsonl")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [e["step"] for e in epochs] == [3, 6, 9]
    for record in epochs:
        assert {"train_loss", "train_top1_error", "val_loss", "val_top1_error",
                "val_top5_error", "images_per_sec", "wall_s", "lr"} <= record.keys()
        assert 0 <= record["val_top1_error"] <= 1 and np.isfinite(record["train_loss"])


def test_resumed_run_equals_an_uninterrupted_one(simulated_two_epochs, tmp_path):
    sim = [*TINY, "--simulate_workers=2", "--log_every_step"]
    (tmp_path / "straight").mkdir()
    run_single([*sim, "--epochs=3", f"--log_dir={tmp_path}/straight",
                f"--dump={tmp_path}/straight"])
    copy_run(simulated_two_epochs, tmp_path / "resumed")  # epochs 1 and 2
    run_single([*sim, f"--log_dir={tmp_path}/resumed", f"--dump={tmp_path}/resumed",
                "--epochs=3", "--resume"])
    straight, again = load(tmp_path / "straight/rank0.npz"), load(tmp_path / "resumed/rank0.npz")
    for name in straight:  # same rates, same data order, same momentum buffers
        np.testing.assert_allclose(again[name], straight[name], rtol=1e-6, atol=1e-7,
                                   err_msg=name)


def test_divergent_run_stops_with_the_message_and_keeps_its_checkpoint(tmp_path):
    # Epoch 1 trains normally; at epoch 2 the rate jumps ×1e30 (a "decay" factor), as a
    # large minibatch without warmup does.
    args = [*TINY, "--warmup=none", "--milestones=1", "--decay_factor=1e30", "--epochs=3",
            "--simulate_workers=2", f"--log_dir={tmp_path}", f"--dump={tmp_path}"]
    result = run_single(args, check=False)
    assert result.returncode == 1
    assert "loss became nan" in result.stderr.lower() or "loss became inf" in result.stderr
    assert "warmup" in result.stderr
    state = json.loads((tmp_path / "checkpoints/run.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 3)
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints/ckpt-1"))
    shapes = reader.get_variable_to_shape_map()
    assert shapes and all(np.isfinite(reader.get_tensor(k)).all() for k in shapes
                          if reader.get_variable_to_dtype_map()[k].is_floating)
    assert not (tmp_path / "checkpoints/ckpt-2.index").exists()


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--per_worker_batch=0", "--per_worker_batch must be ≥ 1"),
        ("--milestones=60,30", "--milestones must be increasing"),
        ("--warmup_epochs=5", "--warmup_epochs must be smaller than --epochs"),
        ("--dataset=folder", "--dataset=folder|tfrecord needs --data_dir"),
        ("--dataset=imagenet", "--dataset must be synthetic, shapes, folder, tfrecord or "
                                "tfds:<name>"),
        ("--momentum=1.5", "--momentum must be in [0, 1)"),
        ("--steps_per_epoch=9", "--steps_per_epoch=9 exceeds the 8 global batches"),
    ],
)
def test_bad_flags_fail_at_start_naming_the_flag(tmp_path, flag, message):
    result = run_single([*TINY, "--epochs=2", f"--log_dir={tmp_path}", f"--dump={tmp_path}",
                         flag], check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_resume_and_fresh_start_refuse_what_would_lose_work(tmp_path):
    args = [*TINY, "--epochs=2", f"--log_dir={tmp_path}", f"--dump={tmp_path}"]
    result = run_single([*args, "--resume"], check=False)
    assert result.returncode == 1 and "--resume: no checkpoint in" in result.stderr
    run_single(args)
    before = (tmp_path / "checkpoints/ckpt-2.index").read_bytes()
    metrics = (tmp_path / "metrics.jsonl").read_text()
    result = run_single(args, check=False)
    assert result.returncode == 1 and "Pass --resume to continue" in result.stderr
    assert (tmp_path / "checkpoints/ckpt-2.index").read_bytes() == before
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    run_single([*args, "--resume"])  # finished: nothing to train, its outputs complete
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    result = run_single([*args, "--epochs=1", "--warmup=none", "--resume"], check=False)
    assert result.returncode == 1 and "raise --epochs to train further" in result.stderr
    result = run_single([*args, "--epochs=3", "--resume", "--model=cifar_resnet14"], check=False)
    assert result.returncode == 1 and "Resume with the run's own --model" in result.stderr


def test_resume_with_fewer_workers_warns_and_rescales_the_rate(simulated_two_epochs, tmp_path):
    copy_run(simulated_two_epochs, tmp_path)  # epochs 1 and 2 with k = 2
    args = [*TINY, f"--log_dir={tmp_path}", f"--dump={tmp_path}", "--log_every_step"]
    result = run_single([*args, "--epochs=3", "--resume", "--simulate_workers=1"])
    assert ("Resuming a run of k·n = 2×8 with 3 steps per epoch as k·n = 1×8 with 3"
            in result.stderr)
    steps = read_jsonl(tmp_path / "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(9))
    # Epoch 3 with k = 1: η̂ = 0.1·8/256 = 0.003125, after the ×0.1 of epoch 2: 0.0003125.
    assert [s["lr"] for s in steps[6:]] == pytest.approx([0.0003125] * 3, rel=1e-6)
    assert [s["lr"] for s in steps[:6]] == pytest.approx(expected_rates()[:6], rel=1e-6)


def test_reference_run_stops_a_run_whose_curve_leaves_it(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    # A reference whose training error is 0 at every epoch: this run cannot stay within 2
    # points of it, so training stops after the first checked epoch (epoch 2, after warmup).
    (reference / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "train_top1_error": 0.0, "val_top1_error": 0.0}) + "\n"
        for e in range(1, 5)))
    (reference / "flags.json").write_text(json.dumps({"warmup": "none", "warmup_epochs": 0}))
    result = run_single([*TINY, "--epochs=4", f"--log_dir={tmp_path}/run", f"--dump={tmp_path}",
                         f"--reference_run={reference}", "--check_fraction=1.0"])
    assert "early curve check" in result.stderr and "failed at epoch 2" in result.stderr
    assert [e["epoch"] for e in read_jsonl(tmp_path / "run/metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize(
    "extra",
    [
        ["--mixed_precision=mixed_float16"],
        ["--mixed_precision=mixed_bfloat16", "--xla"],
        ["--optimizer=lars", "--nesterov", "--label_smoothing=0.1"],
        ["--decay=poly", "--power=2", "--final_weight_decay=2e-4", "--augment_off_epochs=1",
         "--cache"],
        ["--decay=cosine", "--scaling_rule=sqrt", "--warmup=constant", "--nozero_gamma"],
    ],
    ids=["fp16", "bf16-xla", "lars-nesterov-smoothing", "codreanu", "cosine-sqrt-constant"],
)
def test_flag_combinations_train_and_log_finite_metrics(tmp_path, extra):
    run_single([*TINY, "--epochs=2", "--simulate_workers=2", f"--log_dir={tmp_path}",
                f"--dump={tmp_path}", *extra])
    epochs = read_jsonl(tmp_path / "metrics.jsonl")
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(np.isfinite(e["train_loss"]) and np.isfinite(e["val_loss"]) for e in epochs)
    weights = load(tmp_path / "rank0.npz")
    assert all(np.isfinite(w).all() for w in weights.values())
    # The run's model.keras loads with Keras and the package alone, whatever the combination
    # (loss scaling, LARS, label smoothing, a weight-decay schedule), optimizer included.
    loaded = subprocess.run([sys.executable, "-c", LOAD_WITH_KERAS, tmp_path / "model.keras"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    optimizer, iterations = loaded.stdout.split()[-2:]
    assert optimizer == ("LossScaleOptimizer" if extra[0].endswith("=mixed_float16") else
                         "LARS" if "lars" in extra[0] else "MomentumSGD")
    assert int(iterations) == 6  # 2 epochs of 3 steps


LOAD_WITH_KERAS = """
import sys
import keras
import tf_largebatch
model = keras.models.load_model(sys.argv[1])
print(type(model.optimizer).__name__, int(model.optimizer.iterations))
"""


def test_fp16_allreduce_on_two_workers_compresses_within_fp16s_rounding(flat_two_epochs,
                                                                        tmp_path):
    horovodrun([DUMP, *FLAT, "--epochs=2", f"--log_dir={tmp_path}", f"--dump={tmp_path}",
                "--fp16_allreduce"])
    rank0, rank1 = load(tmp_path / "rank0.npz"), load(tmp_path / "rank1.npz")
    plain = load(flat_two_epochs / "rank0.npz")  # the same run, uncompressed
    for name in rank0:  # compressed gradients are still the same on both workers
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    kernels = [name for name in rank0 if "kernel" in name]
    # The flag really compresses: the same run uncompressed (bit-identical from one run to
    # the next) ends elsewhere.
    assert all(not np.array_equal(rank0[name], plain[name]) for name in kernels)
    # But not far: each step's compressed average is within 2^-10 of the gradients' size
    # (test_horovod.py derives the bound), and 6 steps at η ≤ η̂ = 0.1·16/256 = 0.00625 move a
    # kernel by a small part of its own size, so the end kernels agree to 2^-10 of their scale
    # (seen: 5e-5 of it for the classifier, 1e-7 for the convolutions).
    for name in kernels:
        scale = np.abs(plain[name]).max()
        np.testing.assert_allclose(rank0[name], plain[name], rtol=0, atol=2**-10 * scale,
                                   err_msg=name)
