"""Real `horovodrun -np 2` on this machine (Gloo)."""

import json

from helpers import ROOT, horovodrun


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
