"""Real `horovodrun -np 2` on this machine (Gloo)."""

import json

import keras
import numpy as np
import pytest
from helpers import ROOT, horovodrun

pytestmark = pytest.mark.integration


def test_two_ranks_see_size_two_and_allreduce_sums(tmp_path):
    horovodrun([ROOT / "tests/workers/allreduce.py", tmp_path])
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, record in enumerate(seen):
        assert record["rank"] == rank and record["size"] == 2
        assert record["sum"] == [0.0 + 1.0, 2.0]  # ranks 0 + 1, and 1 + 1
        assert record["average"] == 1.5  # (1 + 2) / 2


def test_two_ranks_save_on_rank_0_resume_with_load_model_and_stay_equal(tmp_path):
    horovodrun([ROOT / "tests/workers/save_and_resume.py", tmp_path])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for record in ranks:
        assert record["class"] == "MomentumSGD" and record["bridged"] is True
        assert record["saved_iterations"] == 2
        # Resumed from the file = continued in memory: weights and optimizer state
        # (momentum, previous rate, step count 4) restored and averaged across ranks.
        assert record["loaded"] == record["in_memory"]
    # Each rank trained on its own data: equal only because the gradients are averaged.
    assert ranks[0]["loaded"] == ranks[1]["loaded"]


def test_metric_average_weights_by_counts_and_equals_one_process_on_the_whole_set(tmp_path):
    horovodrun([ROOT / "tests/workers/metric_average.py", tmp_path])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    d = {k: np.asarray(v, np.float64) for k, v in
         json.loads((tmp_path / "data.json").read_text()).items()}
    logits = d["x"] @ d["kernel"] + d["bias"]
    log_z = logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))
    xent = log_z - logits[np.arange(16), d["y"].astype(int)]
    # By hand: rank 0's 5 examples are all right, rank 1's 11 all wrong.
    whole = {"val_loss": xent.mean(), "val_accuracy": 5 / 16}
    mean_of_means = {"val_loss": (xent[:5].mean() + xent[5:].mean()) / 2,
                     "val_accuracy": (1.0 + 0.0) / 2}
    # One process on the whole set (Keras's own evaluation) agrees with the hand numbers.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.set_weights([d["kernel"].astype("float32"), d["bias"].astype("float32")])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    one_process = model.evaluate(d["x"].astype("float32"), d["y"].astype("int32"),
                                 batch_size=4, verbose=0, return_dict=True)
    assert one_process["loss"] == pytest.approx(whole["val_loss"], rel=1e-5)
    assert one_process["accuracy"] == pytest.approx(whole["val_accuracy"])
    for history in ranks:
        assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}  # Keras's keys
        for key in ("val_loss", "val_accuracy"):
            assert history[key][0] == pytest.approx(whole[key], rel=1e-5)
            assert abs(history[key][0] - mean_of_means[key]) > 0.05


def test_fp16_compressed_average_is_within_fp16_rounding_of_the_exact_one(tmp_path):
    horovodrun([ROOT / "tests/workers/fp16_allreduce.py", tmp_path])
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    for i in (0, 1):
        a, b = (r[f"in{i}"].astype(np.float64) for r in ranks)
        exact = (a + b) / 2
        # Uncompressed: one float32 addition and an exact halving, |error| ≤ 2^-24·|a + b|/2.
        for rank in ranks:
            np.testing.assert_allclose(rank[f"none{i}"], exact, rtol=2**-23, atol=0)
        # fp16 (unit roundoff u = 2^-11): a and b are rounded to fp16, their sum is rounded in
        # fp16, halving is exact. |error| ≤ u·(|a| + |b|)/2 + u·|a + b|/2 ≤ 2^-10·(|a| + |b|)/2,
        # plus 3 half-spacings of fp16's subnormals (2^-25 each) for values below 2^-14.
        bound = 2**-10 * (abs(a) + abs(b)) / 2 + 3 * 2**-25
        for key in ("fp16", "fp16_grouped"):
            got = [rank[f"{key}{i}"].astype(np.float64) for rank in ranks]
            np.testing.assert_array_equal(got[0], got[1])  # the same on both workers
            error = abs(got[0] - exact)
            assert (error <= bound).all(), (key, i, (error - bound).max())
            # Compression is really on: nearly every value is off by more than float32's
            # rounding (a value that fp16 represents exactly is rare in random data).
            assert (error > 2**-23 * abs(exact)).mean() > 0.9, (key, i)
