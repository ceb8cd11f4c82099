"""--allreduce=auto: the flat or the hierarchical allreduce, chosen at start for this model on
these links.

The hierarchical allreduce pays only for large gradients on a link between hosts slower than
the one inside them (docs/performance.md, "Hierarchical allreduce across hosts"), so the
choice needs the model and the links. Every rank joins one measurement (`sizes_for` the
model's fused message, median of `REPEATS`; under a second on a fast link, about 4 s for
ResNet-50 on 0.5 Gbit/s): allreduces and broadcasts inside each host, allreduces among the
hosts' first ranks. `fit_links` fits each to α (a collective's overhead) and β, and
`plan.choose_allreduce` compares the flat collective with the three phases for the model's
gradient bytes in Horovod's fused buffers. Rank 0 decides and broadcasts, so every rank
takes the same scheme. Written here because Horovod has no such choice (its autotuner tunes
fusion and cycle time; its hierarchical switch is set before `hvd.init()`, before the model
exists, and only on MPI+NCCL builds).
"""

import statistics
import time

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

from tf_largebatch import plan

MIB = 1024 * 1024
SMALL = MIB // 4  # bytes
REPEATS = 3
# Hierarchical only when predicted at most 0.8 of flat. The prediction is of the allreduce
# alone; in a training step the three phases of each fused group run one after another
# behind backprop, so the step gains less: in the box (benchmarks/hierarchical_box.py) a
# predicted 0.77 gave a step of 0.89 of flat (0.5 Gbit/s), a predicted 0.86 a step of 1.07.
MARGIN = 0.2


def sizes_for(message_bytes):
    """The sizes measured for messages of `message_bytes`: (256 KiB, m/4, m), m the message
    clamped to 16–64 MiB (smaller, a fast link's times drown in a busy machine's jitter).
    α and β come from the first and the last (`plan.fit_link` holds the middle out and
    reports how far the line misses it): fitted over 64 KiB–32 MiB instead, the box's
    jitter at small sizes overstated α and understated β by up to 2× at 100 MB."""
    m = int(min(max(message_bytes, 16 * MIB), 64 * MIB)) // 4 * 4
    return (SMALL, m // 4 // 4 * 4, m)


def time_collective(collective, sizes, repeats=REPEATS, barrier_set=None):
    """Median seconds of `collective(x)` (an eager Horovod op) for an x of each size, each
    after a barrier (a 1-element allreduce over `barrier_set`); every member must call it."""
    token = tf.zeros([1], tf.float32)
    out = []
    for size in sizes:
        x, times = tf.ones([size // 4], tf.float32), []
        for _ in range(repeats + 1):  # the first round is not timed (buffers, connections)
            hvd.allreduce(token, op=hvd.Sum, process_set=barrier_set or hvd.global_process_set)
            start = time.perf_counter()
            collective(x)
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times[1:]))
    return out


def time_allreduce(process_set, sizes, repeats=REPEATS):
    """`time_collective` of a sum over `process_set`."""
    return time_collective(lambda x: hvd.allreduce(x, op=hvd.Sum, process_set=process_set),
                           sizes, repeats, process_set)


def time_broadcast(process_set, root, sizes, repeats=REPEATS):
    """`time_collective` of a broadcast from `root` over `process_set`."""
    return time_collective(lambda x: hvd.broadcast(x, root, process_set=process_set),
                           sizes, repeats, process_set)


def gradient_bytes(variables, bytes_per_value=None) -> int:
    """Bytes of one gradient of each variable: its dtype's size, or `bytes_per_value` (2
    under --fp16_allreduce)."""
    return int(sum(np.prod(v.shape) * (bytes_per_value or tf.as_dtype(v.dtype).size)
                   for v in variables))


def choose(three_phase, nbytes: int, messages: int) -> plan.AllreduceChoice:
    """The scheme for `nbytes` of gradients allreduced as `messages` collectives a step
    (`plan.fused_messages`); a collective of every rank.

    `three_phase`: the run's `distributed.ThreePhaseAllreduce` (its process sets are the
    ones measured).
    """
    if three_phase.hosts < 2 or three_phase.most_on_a_host < 2:  # the two schemes are one
        return plan.choose_allreduce(three_phase.hosts, three_phase.most_on_a_host, nbytes,
                                     messages, None, None)
    links = measure_links(three_phase, sizes_for(nbytes / messages))
    choice = None
    if hvd.rank() == 0:
        try:
            choice = plan.choose_allreduce(three_phase.hosts, len(three_phase.host_ranks),
                                           nbytes, messages, *fit_links(three_phase, links))
        except ValueError as err:  # times that do not grow with size: a machine too busy
            choice = plan.AllreduceChoice("flat", float("nan"), float("nan"),
                                          f"the links could not be measured ({err})")
    return plan.AllreduceChoice(*hvd.broadcast_object(choice, root_rank=0))


def measure_links(three_phase, sizes) -> dict:
    """Medians at `sizes` on rank 0's host (allreduce and broadcast) and between the hosts'
    first ranks (allreduce; None on other ranks); a collective of every rank."""
    intra = time_allreduce(three_phase.host_set, sizes)
    broadcast = time_broadcast(three_phase.host_set, three_phase.local_root, sizes)
    inter = (time_allreduce(three_phase.roots_set, sizes)
             if three_phase.roots_set is not None and three_phase.is_local_root else None)
    return {"sizes": list(sizes), "intra": intra, "broadcast": broadcast, "inter": inter}


def fit_links(three_phase, links):
    """(inter, intra, margin, broadcast) `plan.Link`s for `plan.choose_allreduce`: each
    measurement fitted as one collective (α its overhead, `plan.per_collective`)."""
    g, p, sizes = len(three_phase.host_ranks), three_phase.hosts, links["sizes"]
    inter = plan.fit_link(sizes, links["inter"], plan.collective_ring, p=p).link
    intra = plan.fit_link(sizes, links["intra"], plan.collective_ring, p=g).link
    broadcast = plan.fit_link(sizes, links["broadcast"], plan.broadcast, p=g).link
    return inter, intra, MARGIN, broadcast
