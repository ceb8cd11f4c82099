"""The fault-injection hook of the crash tests, usable from every layer (it imports nothing
of the package).

`TF_LARGEBATCH_KILL_AT=<point>[@N][:SIGNAL]` sends SIGKILL (or SIGNAL, e.g. `TERM`) to the
process the N-th time (default 1st) it reaches `<point>`. Points: `checkpoint-saved`,
`state-written` (see `experiment.checkpointing`), `step-done`, `eval-batch` (see
`experiment.preemption`), `shard-written`, `shard-record` (see `data.convert`).
"""

import os
import signal

_reached = {}


def fault_point(name):
    """Kills this process (SIGKILL, as the OOM killer or a node failure would; or the signal
    named after a colon) when TF_LARGEBATCH_KILL_AT is `name`, `name@N` or `name@N:SIGNAL` and
    this is the N-th time (default 1st) it reaches `name`: the crash tests' hook; a no-op
    otherwise."""
    target, _, signal_name = os.environ.get("TF_LARGEBATCH_KILL_AT", "").partition(":")
    point, _, count = target.partition("@")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.Signals["SIG" + signal_name] if signal_name
                else signal.SIGKILL)
