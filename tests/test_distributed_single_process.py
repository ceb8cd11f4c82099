"""`distributed.init()` in one process (no horovodrun): Horovod's idle cycle."""

import os

import horovod.tensorflow as hvd
import pytest

from tf_largebatch import distributed

pytestmark = pytest.mark.unit


@pytest.fixture
def cycle_times_seen(monkeypatch):
    """HOROVOD_CYCLE_TIME as each hvd.init() call saw it; the variable unset to start with."""
    monkeypatch.setenv("HOROVOD_CYCLE_TIME", "unset")  # so that teardown restores the original
    monkeypatch.delenv("HOROVOD_CYCLE_TIME")
    seen = []
    real_init = hvd.init

    def recording_init(*args, **kwargs):
        seen.append(os.environ.get("HOROVOD_CYCLE_TIME"))
        return real_init(*args, **kwargs)

    monkeypatch.setattr(hvd, "init", recording_init)
    for name in distributed.LAUNCHER_VARIABLES:  # a plain `python ...`, started by no launcher
        monkeypatch.delenv(name, raising=False)
    return seen


def test_one_process_runs_horovod_with_a_100_ms_cycle_unless_one_is_chosen(cycle_times_seen):
    context = distributed.init()
    assert context.size == 1 and hvd.size() == 1
    # Horovod was started once, with a 100 ms cycle, not its 1 ms default ...
    assert cycle_times_seen == ["100"]
    # ... without passing it on to processes started from here (horovodrun, launchers).
    assert "HOROVOD_CYCLE_TIME" not in os.environ
    # A cycle time the user chose is kept: one init, with the user's value, no restart.
    cycle_times_seen.clear()
    distributed.init(cycle_time_ms=2)
    assert cycle_times_seen == ["2"]
