"""Reading Horovod's timeline (tf_largebatch.timeline) on traces written by hand in
Horovod's format: one trace "process" per tensor, B NEGOTIATE_ALLREDUCE / E, then
B ALLREDUCE (nested phases) E, the outer E with dtype and shape. Times in µs."""

import json

import pytest

from tf_largebatch import timeline as overlap

pytestmark = pytest.mark.unit


def tensor(pid, name):
    return [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}},
            {"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": pid}}]


def collective(pid, seen, end, shape, op="ALLREDUCE", dtype="float32"):
    """One collective: seen at `seen`, every worker ready 10 µs later, done at `end`."""
    return [{"ph": "B", "name": f"NEGOTIATE_{op}", "ts": seen, "pid": pid},
            {"ph": "X", "name": "0", "ts": seen, "pid": pid, "dur": 0},
            {"ph": "E", "ts": seen + 10, "pid": pid},
            {"ph": "B", "name": op, "ts": seen + 20, "pid": pid},
            {"ph": "B", "name": f"GLOO_{op}", "ts": seen + 30, "pid": pid},
            {"ph": "E", "ts": end - 10, "pid": pid},
            {"ph": "E", "ts": end, "pid": pid, "args": {"dtype": dtype, "shape": shape}}]


# Two steps of two gradients, grad0 = 15 float32 = 60 B and grad1 = 10 float32 = 40 B,
# plus an epoch-end grouped allreduce (once) and a broadcast that are not gradients.
# Step 0: grad1 seen at 1,000, done 3,000; grad0 seen at 5,000 (last), done 8,000.
# Step 1: both seen in one cycle (20,000 and 20,100), done at 21,000 and 22,000.
EVENTS = (tensor(1, "HorovodBroadcast") + collective(1, 0, 500, "[3]", op="BROADCAST")
          + tensor(2, "StatefulPartitionedCall/grad1") + tensor(3, "StatefulPartitionedCall/grad0")
          + collective(2, 1_000, 3_000, "[10]") + collective(3, 5_000, 8_000, "[15]")
          + collective(2, 20_000, 21_000, "[10]") + collective(3, 20_100, 22_000, "[15]")
          + tensor(4, "HorovodGroupedAllreduce_1of1") + collective(4, 30_000, 30_500, "[7]"))


def test_collectives_per_tensor():
    ops = overlap.collectives(EVENTS)
    assert sorted(ops) == ["HorovodBroadcast", "HorovodGroupedAllreduce_1of1",
                           "StatefulPartitionedCall/grad0", "StatefulPartitionedCall/grad1"]
    grad0 = ops["StatefulPartitionedCall/grad0"]
    assert [(op.seen, op.start, op.end, op.nbytes) for op in grad0] == [
        (5_000, 5_020, 8_000, 60), (20_100, 20_120, 22_000, 60)]
    assert ops["HorovodBroadcast"][0].nbytes == 12


def test_steps_and_overlap():
    steps = overlap.training_steps(overlap.collectives(EVENTS))
    assert [len(step) for step in steps] == [2, 2]  # the grouped allreduce happened once
    first = overlap.step_overlap(steps[0])
    # grad1 (40 of 100 B) was seen 4 ms before grad0 and reduced by 3,000 ≤ 5,000.
    assert first["share_enqueued_before_last"] == pytest.approx(0.4)
    assert first["share_reduced_before_last"] == pytest.approx(0.4)
    assert first["first_to_last_gradient_ms"] == pytest.approx(4.0)
    assert first["exposed_ms"] == pytest.approx(3.0)  # 8,000 - 5,000
    # x(grad1) = 0, x(grad0) = 1: 40% of the bytes by every tenth but the last.
    assert first["profile"] == pytest.approx([0.4] * 9 + [1.0])
    second = overlap.step_overlap(steps[1])
    # 100 µs apart: one cycle, so nothing was enqueued before the last gradient.
    assert second["share_enqueued_before_last"] == 0.0
    assert second["share_reduced_before_last"] == 0.0
    assert second["exposed_ms"] == pytest.approx(1.9)  # 22,000 - 20,100


def test_analyse_step_times(tmp_path):
    path = tmp_path / "timeline.json"
    path.write_text(json.dumps(EVENTS))
    result = overlap.analyse(path, skip_steps=0)
    assert result["step_ms"] == [pytest.approx(19.0)]  # first gradients at 1,000 and 20,000
    assert result["tensors"] == 2 and result["gradient_bytes"] == 100
    assert result["median"]["share_enqueued_before_last"] == pytest.approx(0.2)  # of 0.4, 0


def test_read_trace_without_its_closing_bracket(tmp_path):
    # Horovod killed mid-write: no "]", a trailing comma, the last event cut short.
    text = "[\n" + ",".join(json.dumps(e) for e in EVENTS) + ',{"ph": "B", "na'
    path = tmp_path / "cut.json"
    path.write_text(text)
    assert overlap.read_trace(path) == list(EVENTS)


def test_three_phase_gradients_end_with_their_broadcast():
    # grad0_host seen at 0, its phases end at 100 (host), 300 (cross), 500 (bcast);
    # grad1_host seen at 1,000 (last), phases end at 1,200, 1,400, 1,600.
    events = tensor(1, "grad0_host") + tensor(2, "grad0_cross") + tensor(3, "grad0_bcast")
    events += tensor(4, "grad1_host") + tensor(5, "grad1_cross") + tensor(6, "grad1_bcast")
    events += (collective(1, 0, 100, "[15]") + collective(2, 110, 300, "[15]")
               + collective(3, 310, 500, "[15]", op="BROADCAST")
               + collective(4, 1_000, 1_200, "[10]") + collective(5, 1_210, 1_400, "[10]")
               + collective(6, 1_410, 1_600, "[10]", op="BROADCAST"))
    (step,) = overlap.training_steps(overlap.collectives(events))
    assert sorted(op.name for op in step) == ["grad0_host", "grad1_host"]
    result = overlap.step_overlap(step)
    assert result["share_enqueued_before_last"] == pytest.approx(0.6)
    assert result["share_reduced_before_last"] == pytest.approx(0.6)  # 500 ≤ 1,000
    assert result["exposed_ms"] == pytest.approx(0.6)  # 1,600 - 1,000
