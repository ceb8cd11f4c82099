"""The fault-injection hook of the crash tests, usable from every layer (it imports nothing
of the package).

`TF_LARGEBATCH_KILL_AT=<point>[@N][/rankR][:SIGNAL]` sends SIGKILL (or SIGNAL, e.g. `TERM`)
to the process the N-th time (default 1st) it reaches `<point>`; with `/rankR`, only to the
worker of rank R (its `HOROVOD_RANK`, which horovodrun sets; a process without it is rank 0),
e.g. `step-done@4/rank1` kills rank 1 after its 4th training step and leaves the other
workers running. Points: `checkpoint-saved`, `state-written` (see `experiment.checkpointing`),
`step-done`, `eval-batch` (see `experiment.preemption`), `shard-written`, `shard-record` (see
`data.convert`).
"""

import os
import signal

_reached = {}


def fault_point(name):
    """Kills this process (SIGKILL, as the OOM killer or a node failure would; or the signal
    named after a colon) when TF_LARGEBATCH_KILL_AT is `name`, `name@N`, `name@N/rankR` or
    `name@N:SIGNAL` (and so on), this process is of rank R (if given), and this is the N-th
    time (default 1st) it reaches `name`: the crash tests' hook; a no-op otherwise."""
    target, _, signal_name = os.environ.get("TF_LARGEBATCH_KILL_AT", "").partition(":")
    target, _, rank = target.partition("/")
    point, _, count = target.partition("@")
    if point != name:
        return
    if rank and rank.removeprefix("rank") != os.environ.get("HOROVOD_RANK", "0"):
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.Signals["SIG" + signal_name] if signal_name
                else signal.SIGKILL)
