"""Real `horovodrun -np 2` on this machine (Gloo)."""

import json

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
