"""Reading Horovod's timeline: which gradient collective ran when, per training step.

Horovod (`horovodrun --timeline-filename=...`) writes a Chrome trace with one trace
"process" per tensor name; for each collective on that tensor, B NEGOTIATE_<OP> when the
coordinator's cycle first sees it enqueued, E when every worker has, then B <OP> (nested
phases) E, the outer E carrying its dtype and shape. Times are µs on the trace's clock.

From one step's gradient collectives (the k-th collective of every gradient is step k):
- share enqueued before the end of backprop: Σ bytes of the gradients seen more than half
  a cycle before the last one / Σ bytes (1 − this is the tail fraction f of `plan`);
- share reduced before the end of backprop: Σ bytes whose allreduce had ended by then / Σ;
- exposed communication: end of the last allreduce − the last gradient seen;
- step time: between the first gradient seen in one step and in the next.

Used by benchmarks/allreduce_overlap.py; standard library only.
"""

import dataclasses
import itertools
import json
import re
import statistics
from collections import defaultdict

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int32": 4,
               "int64": 8, "uint8": 1, "int8": 1}
# Gradient collectives as the trainer names them: one allreduce per gradient (`grad<i>`), one
# grouped allreduce (`HorovodGroupedAllreduce_<inputs>_<i>of<n>`), or the three phases
# `grad<i>_host`, `grad<i>_cross` (local roots only), `grad<i>_bcast`.
FIRST_PHASE = r"(grad\d+|grad\d+_host|HorovodGroupedAllreduce_.*\d+of\d+)$"
DECILES = [i / 10 for i in range(1, 11)]


# ----------------------------------------------------------------------------- timeline


def read_trace(path):
    """The events of a Chrome-trace JSON array. Horovod's file may lack the closing bracket
    (and end in a comma or a cut event) when the job did not shut Horovod down cleanly."""
    with open(path) as f:
        text = f.read().strip()
    if not text.endswith("]"):
        text = text[:text.rfind("}") + 1] + "]"
    return json.loads(text)


@dataclasses.dataclass
class Collective:
    """One collective on one tensor; times in µs on the timeline's clock."""

    name: str
    seen: float  # NEGOTIATE_* began: the tensor was first seen enqueued, on any worker
    start: float | None = None
    end: float | None = None
    nbytes: int | None = None


def collectives(events):
    """{tensor name: [Collective, ...] in order} from Horovod's timeline events.

    Horovod writes one trace "process" per tensor name (a "process_name" metadata event);
    for each collective on that tensor: B NEGOTIATE_<OP> when the coordinator's cycle first
    sees it enqueued, E when every worker has, then B <OP> (nested phases) E, the outer E
    carrying its dtype and shape.
    """
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name" and "name" in e["args"]}
    out, stacks = defaultdict(list), defaultdict(list)
    for e in events:
        ph, label = e.get("ph"), e.get("name", "")
        name, stack = names.get(e.get("pid")), stacks[e.get("pid")]
        if name is None or ph not in ("B", "E"):  # M: metadata, X: a worker's request arrived
            continue
        if ph == "B":
            if label.startswith("NEGOTIATE_"):
                out[name].append(Collective(name, e["ts"]))
            elif not stack and out[name]:
                out[name][-1].start = e["ts"]
            stack.append(label)
        elif stack:
            label = stack.pop()
            if not stack and not label.startswith("NEGOTIATE_") and out[name]:
                op, args = out[name][-1], e.get("args", {})
                op.end = e["ts"]
                if "shape" in args:
                    count = 1
                    for dim in json.loads(args["shape"]):
                        count *= dim
                    op.nbytes = count * DTYPE_BYTES[args["dtype"]]
    return dict(out)


def training_steps(ops):
    """[[Collective of each gradient] for each step]. The gradients are the tensors whose
    first-phase name matches FIRST_PHASE and that have the most collectives (one per step;
    the batch-norm statistics averaged at the epoch's end have fewer); the k-th collective
    of each is step k. With the three-phase scheme a gradient ends with its last phase."""
    grads = {n: v for n, v in ops.items() if re.search(FIRST_PHASE, n)}
    if not grads:
        raise ValueError(f"no tensor in the timeline matches {FIRST_PHASE!r}")
    steps = max(len(v) for v in grads.values())
    grads = {n: v for n, v in grads.items() if len(v) == steps}
    for name, mine in grads.items():
        if name.endswith("_host"):
            for later in (name[:-len("host")] + "cross", name[:-len("host")] + "bcast"):
                for op, phase in zip(mine, ops.get(later, []), strict=False):
                    op.end = max(op.end, phase.end)
    return [[v[k] for v in grads.values()] for k in range(steps)]


def step_overlap(step, same_cycle_us=500.0):
    """Overlap of one step's gradient collectives with its backprop (see the module doc).

    Horovod's background thread stamps every tensor it finds enqueued in one cycle within
    well under a millisecond, and its cycles are HOROVOD_CYCLE_TIME (1 ms) apart, so a
    gradient seen more than `same_cycle_us` before the last one was enqueued before it."""
    first, last = min(op.seen for op in step), max(op.seen for op in step)
    total = sum(op.nbytes for op in step)
    span = last - first
    return {
        "share_enqueued_before_last": sum(op.nbytes for op in step
                                          if op.seen < last - same_cycle_us) / total,
        "share_reduced_before_last": sum(op.nbytes for op in step if op.end <= last) / total,
        "first_to_last_gradient_ms": span / 1e3,
        "exposed_ms": (max(op.end for op in step) - last) / 1e3,
        "profile": cumulative_deciles([((op.seen - first) / span if span else 1.0, op.nbytes)
                                       for op in step]),
    }


def cumulative_deciles(points):
    """Share of the bytes ready by each tenth of the time: points are (x in [0, 1], bytes)."""
    total = sum(b for _, b in points)
    return [sum(b for x, b in points if x <= d + 1e-9) / total for d in DECILES]


def analyse(timeline, skip_steps):
    """Step times and overlap of the steps after the first `skip_steps`, from one timeline."""
    steps = training_steps(collectives(read_trace(timeline)))
    starts = [min(op.seen for op in step) for step in steps]
    step_ms = [(b - a) / 1e3 for a, b in itertools.pairwise(starts[skip_steps:])]
    per_step = [step_overlap(step) for step in steps[skip_steps:]]
    median = {key: statistics.median(s[key] for s in per_step)
              for key in per_step[0] if key != "profile"}
    median["profile"] = [statistics.median(s["profile"][i] for s in per_step)
                         for i in range(len(DECILES))]
    return {"tensors": len(steps[0]), "gradient_bytes": sum(op.nbytes for op in steps[0]),
            "steps_timed": len(step_ms), "step_ms": step_ms,
            "median_step_ms": statistics.median(step_ms), "median": median,
            "per_step": [{k: v for k, v in s.items() if k != "profile"} for s in per_step]}
