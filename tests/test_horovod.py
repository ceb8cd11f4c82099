"""Real `horovodrun -np 2` on this machine (Gloo)."""

import json

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
