"""The crash tests' fault hook (`tf_largebatch.faults`): which process it kills, and when."""

import signal

import pytest

from tf_largebatch import faults

pytestmark = pytest.mark.unit


@pytest.fixture
def kills(monkeypatch):
    """The signals the hook sends to this process (recorded, not sent)."""
    sent = []
    monkeypatch.setattr(faults, "_reached", {})
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.delenv("HOROVOD_RANK", raising=False)
    return sent


def reach(name, times):
    for _ in range(times):
        faults.fault_point(name)


@pytest.mark.parametrize("rank, killed", [("1", True), ("0", False), (None, False)])
def test_a_rank_selector_kills_only_that_rank(kills, monkeypatch, rank, killed):
    monkeypatch.setenv("TF_LARGEBATCH_KILL_AT", "step-done@2/rank1")
    if rank is not None:  # horovodrun sets it; a process without it is rank 0
        monkeypatch.setenv("HOROVOD_RANK", rank)
    reach("step-done", 1)
    assert kills == []  # not before its 2nd step
    reach("step-done", 3)
    assert kills == ([signal.SIGKILL] if killed else [])


def test_a_rank_selector_takes_a_signal_and_defaults_to_the_first_time(kills, monkeypatch):
    monkeypatch.setenv("TF_LARGEBATCH_KILL_AT", "eval-batch/rank0:TERM")
    reach("step-done", 2)
    reach("eval-batch", 2)
    assert kills == [signal.SIGTERM]

