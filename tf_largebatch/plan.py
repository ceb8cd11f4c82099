"""A communication model for data-parallel SGD: `python -m tf_largebatch.plan`.

α–β (Hockney) model: one message of m bytes over a link costs α + m/β
(α latency in s, β bandwidth in bytes/s). Reduction arithmetic is not
modelled (no γ term), nor link contention beyond what each algorithm states.
Every algorithm is a pure function of the node count p, the gradient bytes b
and a `Link`, returning `Cost(steps, bytes_per_node, seconds)`:

    ring (bucket)             2(p-1) steps of b/p:  T = 2(p-1)·α + 2(p-1)/p·b/β
    halving/doubling          2·log2 p steps:       T = 2·log2(p)·α + 2(p-1)/p·b/β   (p = 2^k)
    binary blocks             any p, equals halving/doubling when p = 2^k (`binary_blocks`)
    hierarchical              intra-server reduce + inter-server allreduce + intra broadcast
    three phase               the same on Horovod process sets, α per collective
                              (`three_phase`, `per_collective`); against the flat collective,
                              `choose_allreduce` picks one for --allreduce=auto

Step time and scaling efficiency (weak scaling: n images per GPU fixed):

    no overlap:  t = forward + backprop + C
    overlap:     t = forward + max(backprop + f·C, f·backprop + C)
    efficiency = (forward + backprop) / t

C is the allreduce time and f (`tail_fraction`) the part of the gradient that is
ready only at the very end of backprop (f = 0: t = forward + max(backprop, C)).
`profile_tail_fraction` turns a measured profile (when each gradient is ready during
backprop, benchmarks/allreduce_overlap.py) into f; `hierarchical_crossover` gives the
intra-server bandwidth above which the hierarchical allreduce beats a flat ring.
See docs/performance.md for the paper check and the calibration.
"""

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

GBIT = 1e9 / 8  # bytes/s in one Gbit/s


@dataclass(frozen=True)
class Link:
    """One hop of the α–β model: a message of m bytes takes α + m/β seconds."""

    latency_s: float
    bandwidth_bytes_per_s: float

    def __post_init__(self):
        if not self.latency_s >= 0:
            raise ValueError(f"latency must be ≥ 0 s, got {self.latency_s}")
        if not self.bandwidth_bytes_per_s > 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s, got {self.bandwidth_bytes_per_s}")

    def time(self, steps, nbytes):
        """steps·α + nbytes/β."""
        return steps * self.latency_s + nbytes / self.bandwidth_bytes_per_s


class Cost(NamedTuple):
    """steps: messages on the critical path; bytes_per_node: bytes one node sends on it."""

    steps: int
    bytes_per_node: float
    seconds: float


NOTHING = Cost(0, 0.0, 0.0)


def _msg(link, steps, nbytes):
    return Cost(steps, nbytes, link.time(steps, nbytes))


def _then(*costs):
    """Costs one after the other."""
    return Cost(sum(c.steps for c in costs), sum(c.bytes_per_node for c in costs),
                sum(c.seconds for c in costs))


def _latest(*costs):
    """The path that ends last (ties: more bytes, then more steps)."""
    return max(costs, key=lambda c: (c.seconds, c.bytes_per_node, c.steps))


def _check(p, nbytes):
    """p as an int, after checking p ≥ 1 and b ≥ 0."""
    if int(p) != p or p < 1:
        raise ValueError(f"node count must be an integer ≥ 1, got {p}")
    if nbytes < 0:
        raise ValueError(f"bytes must be ≥ 0, got {nbytes}")
    return int(p)


def is_power_of_two(p):
    return p >= 1 and p & (p - 1) == 0


def ring(p, nbytes, link):
    """Ring (bucket) allreduce: reduce-scatter then allgather around a ring.

    2(p-1) steps, each sending b/p bytes: bytes = 2(p-1)/p·b,
    T = 2(p-1)·(α + b/(p·β)).
    """
    p = _check(p, nbytes)
    steps = 2 * (p - 1)
    return _msg(link, steps, steps * nbytes / p)


def halving_doubling(p, nbytes, link):
    """Rabenseifner's allreduce for p = 2^k (Goyal et al. §4; Rabenseifner, ICCS 2004).

    Reduce-scatter by recursive halving (partners at distance 1, 2, ..., p/2 exchange
    b/2, b/4, ..., b/p), then allgather by recursive doubling (the same in reverse):
    2·log2(p) steps, bytes = 2·(b/2 + ... + b/p) = 2(p-1)/p·b,
    T = 2·log2(p)·α + 2(p-1)/p·b/β.
    """
    p = _check(p, nbytes)
    if not is_power_of_two(p):
        raise ValueError(f"halving/doubling needs a power-of-two node count, got {p}; "
                         "use binary_blocks")
    k = p.bit_length() - 1
    return _msg(link, 2 * k, 2 * (p - 1) / p * nbytes)


def binary_blocks(p, nbytes, link):
    """Halving/doubling for any p: the binary-blocks algorithm (Goyal et al. §4).

    References: Rabenseifner & Träff, "More efficient reduction algorithms for
    non-power-of-two number of processors in message-passing parallel systems",
    EuroPVM/MPI 2004; Thakur, Rabenseifner & Gropp, "Optimization of collective
    communication operations in MPICH", IJHPCA 2005. The schedule modelled is the
    one of Gloo's `AllreduceHalvingDoubling` (the library Goyal et al. used):

    p = P_1 + ... + P_m with P_i = 2^(k_i), k_1 > ... > k_m (the binary digits of p);
    s_i = b / P_i is the segment a node of block i owns after its reduce-scatter.

      1. every block reduce-scatters by recursive halving:   RS_i = k_i·α + (1 - 1/P_i)·b/β
      2. up, from the smallest block: a node of block i waits for its segment from
         block i+1, adds it, and sends it to block i-1 as P_{i-1}/P_i messages:
             U_i = (P_{i-1}/P_i)·α + s_i/β
         ready_m = RS_m,  ready_i = max(RS_i, ready_{i+1} + U_{i+1})
      3. down: block 1 holds the result (scattered); block i-1 sends each node of
         block i its segment (received from P_{i-1}/P_i senders at once, so limited
         by the receiver's link):  D_i = α + s_i/β
             got_1 = ready_1,  got_i = got_{i-1} + D_i
      4. a block with a smaller block below first sends it its segment (α + s_i/β),
         then allgathers by recursive doubling:  AG_i = RS_i
             done_i = got_i + [i < m]·(α + s_i/β) + AG_i,   T = max_i done_i

    Steps 2 and 4 are the "two additional communication steps" of Goyal et al. §4.
    The returned steps and bytes are those of the path that ends last. Nodes send
    and receive at once (full duplex); contention between steps 1 and 2 on a node's
    link is ignored. For p = 2^k (m = 1) this is exactly `halving_doubling`.
    """
    p = _check(p, nbytes)
    blocks = [1 << k for k in range(p.bit_length() - 1, -1, -1) if p >> k & 1]
    rs = [_msg(link, P.bit_length() - 1, (1 - 1 / P) * nbytes) for P in blocks]
    m = len(blocks)
    ready = rs[m - 1]
    for i in range(m - 2, -1, -1):  # block i receives from block i+1
        up = _msg(link, blocks[i] // blocks[i + 1], nbytes / blocks[i + 1])
        ready = _latest(rs[i], _then(ready, up))
    got, done = ready, []
    for i in range(m):
        if i > 0:
            got = _then(got, _msg(link, 1, nbytes / blocks[i]))
        down = _msg(link, 1, nbytes / blocks[i]) if i < m - 1 else NOTHING
        done.append(_then(got, down, rs[i]))
    return _latest(*done)


ALGORITHMS = {"ring": ring, "halving_doubling": halving_doubling,
              "binary_blocks": binary_blocks}


def intra_reduce(g, nbytes, link):
    """Reduce (or broadcast) of b bytes over g GPUs of one server, NCCL-style pipelined chain.

    g-1 hops, every GPU sends the whole buffer once (in pipelined chunks):
    T = (g-1)·α + b/β; nothing when g = 1.
    """
    _check(g, nbytes)
    return NOTHING if g == 1 else _msg(link, g - 1, nbytes)


def hierarchical(p, g, nbytes, inter, intra, algorithm=halving_doubling):
    """Goyal et al. §4 (Horovod's hierarchical allreduce shards stages 1-3 over the GPUs):

    (1) reduce the g GPUs' gradients into one buffer per server (intra link),
    (2) allreduce that buffer among the p servers with `algorithm` (inter link),
    (3) broadcast the result to the g GPUs (intra link):
        T = 2·[(g-1)·α_intra + b/β_intra] + T_algorithm(p, b, inter).
    Steps and bytes add over the three stages. g = 1 gives the flat `algorithm`.
    """
    local = intra_reduce(g, nbytes, intra)
    return _then(local, algorithm(p, nbytes, inter), local)


def flat_ring(p, g, nbytes, inter, intra):
    """One ring through all p·g GPUs, servers consecutive: each of its 2(pg-1) steps waits
    for the slowest hop, an inter-server one when p > 1 (NCCL's flat ring).

    T = 2(pg-1)·(α + b/(pg·β)) with the inter link (the intra link when p = 1).
    """
    return ring(p * g, nbytes, inter if p > 1 else intra)


def per_collective(algorithm):
    """`algorithm` with its latency paid once per collective, not once per step:
    T = α + bytes/β with `algorithm`'s bytes per node. Under Horovod each collective waits for
    a negotiation among its ranks and a cycle of the background thread (milliseconds, measured
    here), which dwarfs a LAN's per-message latency (µs), so α is that overhead."""

    def cost(p, nbytes, link):
        return _msg(link, 1 if _check(p, nbytes) > 1 else 0,
                    algorithm(p, nbytes, link).bytes_per_node)

    cost.__name__ = f"per_collective({algorithm.__name__})"
    return cost


collective_ring = per_collective(ring)


def broadcast(g, nbytes, link):
    """One collective sending b bytes from one rank to the g-1 others: α + b/β
    (nothing when g = 1)."""
    return NOTHING if _check(g, nbytes) == 1 else _msg(link, 1, nbytes)


def three_phase(p, g, nbytes, inter, intra, broadcast_link=None):
    """The package's hierarchical allreduce on Horovod process sets (`distributed.
    ThreePhaseAllreduce`), on p hosts of g ranks, each phase one Horovod collective
    (`per_collective`: α is a collective's overhead):

    (1) a ring allreduce inside each host, (2) a ring allreduce among the hosts' first ranks,
    (3) a broadcast inside each host, over `broadcast_link` (default: `intra`; measured apart,
    as a broadcast does no arithmetic and Gloo's ran 3× faster per byte here):
        T = [α_i + 2(g-1)/g·b/β_i] + [α + 2(p-1)/p·b/β] + [α_b + b/β_b].
    """
    return _then(collective_ring(g, nbytes, intra), collective_ring(p, nbytes, inter),
                 broadcast(g, nbytes, broadcast_link or intra))


def flat_collective(p, g, nbytes, inter, intra):
    """Horovod's flat allreduce over p·g ranks as one collective whose ring crosses the link
    between hosts: T = α + 2(pg-1)/(pg)·b/β (the link inside a host when p = 1)."""
    return collective_ring(p * g, nbytes, inter if p > 1 else intra)


class AllreduceChoice(NamedTuple):
    scheme: str  # "flat" or "hierarchical"
    flat_s: float  # predicted seconds per step's allreduce, flat ring over all p·g ranks
    hierarchical_s: float  # the same, `three_phase`
    reason: str


def choose_allreduce(p, g, nbytes, messages, inter, intra, margin=0.05, broadcast_link=None):
    """Flat or hierarchical for a step that allreduces `nbytes` of gradients as `messages`
    collectives (Horovod's fused buffers, `fused_messages`).

    T = messages · T_scheme(b / messages), with T_scheme `flat_collective` or `three_phase`
    and each link's α the overhead of one collective (`per_collective`), so the three phases
    pay it three times: small gradients stay flat, large ones on a slow link between hosts go
    hierarchical (the link carries b instead of 2(pg-1)/(pg)·b). Hierarchical only when
    predicted at least `margin` faster (flat is Horovod's default, one phase instead of three).
    """
    if p < 2 or g < 2:
        return AllreduceChoice("flat", math.nan, math.nan,
                               "one host" if p < 2 else "one process per host")
    each = nbytes / messages
    flat = flat_collective(p, g, each, inter, intra).seconds * messages
    hier = three_phase(p, g, each, inter, intra, broadcast_link).seconds * messages
    scheme = "hierarchical" if hier < (1 - margin) * flat else "flat"
    def link(x):
        return f"{8 * x.bandwidth_bytes_per_s / 1e9:.2f} Gbit/s, α {x.latency_s * 1e3:.1f} ms"

    return AllreduceChoice(scheme, flat, hier, (
        f"{nbytes / 1e6:.1f} MB of gradients in {messages} allreduce{'s' * (messages > 1)} "
        f"on {p} hosts × {g}: predicted flat {flat * 1e3:.1f} ms, hierarchical "
        f"{hier * 1e3:.1f} ms per step (between hosts {link(inter)}; inside {link(intra)})"))


def fused_messages(nbytes, tensors, fusion_threshold_bytes):
    """Allreduces per step when Horovod packs the gradients into buffers of up to its fusion
    threshold: ⌈b / threshold⌉ at best (those ready in the same cycle are packed), one per
    gradient when fusion is off (threshold 0)."""
    if fusion_threshold_bytes <= 0:
        return max(tensors, 1)
    return max(1, min(tensors, math.ceil(nbytes / fusion_threshold_bytes)))


def step_time(backprop_s, allreduce_s, forward_s=0.0, overlap=True, tail_fraction=0.0):
    """Seconds per step of one GPU.

    no overlap: forward + backprop + C.
    overlap: gradients appear uniformly during backprop and are reduced as they come
    (a fluid pipeline); the last fraction f of them is ready only when backprop ends:
        forward + max(backprop + f·C, f·backprop + C)
    — f = 0 is forward + max(backprop, C); f = 1 is no overlap. Never above no overlap.
    """
    if not 0 <= tail_fraction <= 1:
        raise ValueError(f"tail_fraction must be in [0, 1], got {tail_fraction}")
    b, c, f = backprop_s, allreduce_s, tail_fraction
    if not overlap:
        return forward_s + b + c
    return forward_s + max(b + f * c, f * b + c)


def efficiency(backprop_s, allreduce_s, forward_s=0.0, overlap=True, tail_fraction=0.0,
               baseline_allreduce_s=0.0):
    """Weak-scaling efficiency: baseline step time / distributed step time.

    The baseline is one GPU (baseline_allreduce_s = 0) or, for "relative to one server",
    the step time with that server's allreduce time.
    """
    base = step_time(backprop_s, baseline_allreduce_s, forward_s, overlap, tail_fraction)
    return base / step_time(backprop_s, allreduce_s, forward_s, overlap, tail_fraction)


def profile_tail_fraction(profile, backprop_s, allreduce_s):
    """The f for which `step_time` with overlap equals a pipeline fed by a measured profile.

    `profile`: (x_i, s_i) pairs: gradient i, a share s_i of the bytes (Σ s_i = 1), is ready
    after a fraction x_i of backprop. The allreduce reduces all bytes in C seconds, each as
    soon as it is ready (a fluid pipeline), so the bytes ready at or after x_i·B pass after it:
        T = max(B, max_i [x_i·B + (1 - S_i)·C]),   S_i = Σ_{x_j < x_i} s_j.
    `step_time` with overlap is B + f·C when C ≤ B and f·B + C when C > B, hence
        f = (T - max(B, C)) / min(B, C), clipped to [0, 1]   (0 when B or C is 0).
    Profiles that make gradients ready late in backprop give a large f, early ones a small f.
    With C ≤ B, a uniform profile plus a share f_end at x = 1 gives f = f_end.

    Example:
        >>> round(profile_tail_fraction([(0.0, 0.5), (0.5, 0.3), (1.0, 0.2)], 0.1, 0.05), 6)
        0.2
    """
    b, c = backprop_s, allreduce_s
    if b <= 0 or c <= 0:
        return 0.0
    points = sorted(profile)
    total = sum(share for _, share in points)
    if not total > 0 or any(share < 0 for _, share in points):
        raise ValueError("a profile needs shares ≥ 0 with a positive sum")
    before, worst = 0.0, b
    for i, (x, share) in enumerate(points):
        if i == 0 or x > points[i - 1][0]:  # S_i: shares of strictly earlier gradients
            worst = max(worst, x * b + (1 - before / total) * c)
        before += share
    return min(max((worst - max(b, c)) / min(b, c), 0.0), 1.0)


def load_profile(path):
    """The measured profile [(time fraction, bytes share), ...] from the JSON written by
    benchmarks/allreduce_overlap.py: {"profile": {"time_fraction": [...], "bytes_share": [...]}}.
    """
    with open(path) as f:
        profile = json.load(f)["profile"]
    return list(zip(profile["time_fraction"], profile["bytes_share"], strict=True))


def hierarchical_crossover(p, g, nbytes, inter, intra_latency_s, algorithm=halving_doubling):
    """Intra-server bandwidth β_i (bytes/s) above which `hierarchical` beats `flat_ring`.

    hierarchical = 2·[(g-1)·α_i + b/β_i] + T_algorithm(p, b, inter) and the flat ring
    T_flat = 2(pg-1)·(α + b/(pg·β)) does not depend on β_i, so hierarchical is faster when
        β_i > 2b / (T_flat - 2(g-1)·α_i - T_algorithm(p, b, inter));
    math.inf when that denominator is ≤ 0 (the flat ring wins at any intra bandwidth).
    Needs p ≥ 2 servers and g ≥ 2 GPUs each (otherwise the two schemes are the same).

    Example: p = 2, g = 2, α = 0, β = 1 GB/s, b = 1 MB: flat 6 × 0.25 ms = 1.5 ms, inter
    ring 1 ms, so β_i > 2 MB / 0.5 ms = 4 GB/s, 4× the link between servers.
    """
    if _check(p, nbytes) < 2 or _check(g, nbytes) < 2:
        raise ValueError(f"needs ≥ 2 servers of ≥ 2 GPUs, got p = {p}, g = {g}")
    spare = (flat_ring(p, g, nbytes, inter, inter).seconds
             - 2 * (g - 1) * intra_latency_s - algorithm(p, nbytes, inter).seconds)
    return 2 * nbytes / spare if spare > 0 else math.inf


class Fit(NamedTuple):
    link: Link
    held_out_bytes: float
    held_out_seconds: float
    predicted_seconds: float
    relative_error: float  # (predicted - measured) / measured


def _nonnegative_lstsq(a, y):
    """argmin |a·c - y|² over c ≥ 0 for two unknowns: the free fit, else the best one-term fit."""
    coef = np.linalg.lstsq(a, y, rcond=None)[0]
    if (coef >= 0).all():
        return coef
    candidates = []
    for j in range(a.shape[1]):
        c = np.zeros(a.shape[1])
        c[j] = max(np.linalg.lstsq(a[:, [j]], y, rcond=None)[0][0], 0.0)
        candidates.append(c)
    return min(candidates, key=lambda c: np.sum((a @ c - y) ** 2))


def fit_link(sizes, seconds, algorithm=ring, p=2, held_out=-2):
    """Fits α and β of `algorithm`'s α–β time on p nodes to measured allreduce times.

    T(b) = steps(p)·α + bytes_per_node(p, b)·(1/β) is linear in (α, 1/β): a least-squares
    fit of the relative error (rows divided by the measured time, so that 1 KB counts as
    much as 64 MB), with α ≥ 0 and 1/β ≥ 0 enforced by refitting one term when the other
    comes out negative. `held_out` (an index into the sizes sorted ascending; default
    the second largest) is left out of the fit and predicted.
    """
    order = np.argsort(np.asarray(sizes, dtype=float))
    sizes = np.asarray(sizes, dtype=float)[order]
    seconds = np.asarray(seconds, dtype=float)[order]
    if len(sizes) < 3 or len(sizes) != len(seconds):
        raise ValueError("need ≥ 3 (size, seconds) pairs of equal length")
    unit = Link(0.0, 1.0)  # seconds = bytes: read off steps and bytes
    terms = np.array([[c.steps, c.bytes_per_node]
                      for c in (algorithm(p, s, unit) for s in sizes)], dtype=float)
    keep = np.ones(len(sizes), dtype=bool)
    keep[held_out] = False
    a, y = terms[keep] / seconds[keep, None], np.ones(keep.sum())
    alpha, inv_beta = coef = _nonnegative_lstsq(a, y)
    if inv_beta <= 0:
        raise ValueError("the fit found no bandwidth term (times do not grow with size)")
    link = Link(float(alpha), float(1 / inv_beta))
    predicted = float(terms[held_out] @ coef)
    measured = float(seconds[held_out])
    return Fit(link, float(sizes[held_out]), measured, predicted,
               (predicted - measured) / measured)


def format_table(headers, rows):
    """Plain-text table, columns right-aligned except the first."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]
    line = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                      for j, (c, w) in enumerate(zip(r, widths, strict=True))) for r in cells]
    line.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line)


def plan(p, g, nbytes, inter, intra):
    """One row per scheme: (name, Cost at p servers, Cost at one server)."""
    rows = []
    for name, algorithm in ALGORITHMS.items():
        if name == "halving_doubling" and not is_power_of_two(p):
            continue
        rows.append((f"hierarchical + {name}",
                     hierarchical(p, g, nbytes, inter, intra, algorithm),
                     hierarchical(1, g, nbytes, inter, intra, algorithm)))
    rows.append((f"flat ring over {p * g} GPUs", flat_ring(p, g, nbytes, inter, intra),
                 flat_ring(1, g, nbytes, inter, intra)))
    return rows


def plan_table(p, g, nbytes, backprop_s, inter, intra, forward_s=0.0, tail_fraction=0.0,
               profile=None):
    """The table printed by the CLI (times in ms; "none / overlap" pairs). With a measured
    `profile`, f is `profile_tail_fraction` of each allreduce time (a column "f")."""

    def step(seconds, overlap):
        f = tail_fraction if profile is None else profile_tail_fraction(profile, backprop_s,
                                                                        seconds)
        return step_time(backprop_s, seconds, forward_s, overlap, f)

    out = []
    for name, cost, server in plan(p, g, nbytes, inter, intra):
        steps = [step(cost.seconds, o) for o in (False, True)]
        vs_gpu = [step(0.0, o) / s for o, s in zip((False, True), steps, strict=True)]
        vs_server = [step(server.seconds, o) / s for o, s in zip((False, True), steps,
                                                                 strict=True)]
        row = [name, cost.steps, f"{cost.bytes_per_node / 1e6:.1f}",
               f"{cost.seconds * 1e3:.1f}",
               " / ".join(f"{s * 1e3:.1f}" for s in steps),
               " / ".join(f"{e:.3f}" for e in vs_gpu),
               " / ".join(f"{e:.3f}" for e in vs_server)]
        if profile is not None:
            row.insert(4, f"{profile_tail_fraction(profile, backprop_s, cost.seconds):.3f}")
        out.append(row)
    headers = ["allreduce", "steps", "MB/node", "allreduce ms", "step ms (none / overlap)",
               "eff. vs 1 GPU", f"eff. vs 1 server ({g} GPUs)"]
    if profile is not None:
        headers.insert(4, "f")
    return format_table(headers, out)


def _parser():
    ap = argparse.ArgumentParser(
        prog="python -m tf_largebatch.plan",
        description="Predict allreduce time and weak-scaling efficiency (α–β model). "
                    "Defaults: Goyal et al.'s ResNet-50 on 32 servers × 8 P100 GPUs.")
    ap.add_argument("--servers", type=int, default=32, help="p, servers")
    ap.add_argument("--gpus_per_server", type=int, default=8, help="g, GPUs per server")
    ap.add_argument("--gradient_mb", type=float, default=102.0,
                    help="b, gradient megabytes (1e6 B); ResNet-50: 25.5M × 4 B")
    ap.add_argument("--backprop_ms", type=float, default=120.0, help="backprop time per step")
    ap.add_argument("--forward_ms", type=float, default=0.0,
                    help="compute that cannot overlap communication (forward pass, update)")
    tail = ap.add_mutually_exclusive_group()
    tail.add_argument("--tail_fraction", type=float, default=0.0,
                      help="f, part of the gradient ready only at the end of backprop")
    tail.add_argument("--profile", metavar="JSON",
                      help="f from a measured profile of when gradients are ready, e.g. "
                           "benchmarks/results/allreduce_overlap.json (one f per row)")
    ap.add_argument("--inter_gbit_s", type=float, default=50.0, help="inter-server Gbit/s")
    ap.add_argument("--inter_latency_us", type=float, default=20.0,
                    help="inter-server latency per message (Ethernet: 10–50 µs)")
    ap.add_argument("--intra_gbyte_s", type=float, default=15.0,
                    help="intra-server GB/s of NCCL reduce/broadcast (P100 NVLink ~10–20)")
    ap.add_argument("--intra_latency_us", type=float, default=5.0,
                    help="intra-server latency per hop")
    return ap


def main(argv=None):
    ap = _parser()
    a = ap.parse_args(argv)
    rules = {"servers": (lambda v: v >= 1, "≥ 1"), "gpus_per_server": (lambda v: v >= 1, "≥ 1"),
             "gradient_mb": (lambda v: v > 0, "> 0"), "backprop_ms": (lambda v: v >= 0, "≥ 0"),
             "forward_ms": (lambda v: v >= 0, "≥ 0"),
             "tail_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
             "inter_gbit_s": (lambda v: v > 0, "> 0"),
             "inter_latency_us": (lambda v: v >= 0, "≥ 0"),
             "intra_gbyte_s": (lambda v: v > 0, "> 0"),
             "intra_latency_us": (lambda v: v >= 0, "≥ 0")}
    for name, (ok, rule) in rules.items():
        value = getattr(a, name)
        if not (math.isfinite(value) and ok(value)):
            ap.error(f"--{name} must be {rule}, got {value}")
    try:
        profile = load_profile(a.profile) if a.profile else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        ap.error(f"--profile={a.profile}: {e!r}")
    inter = Link(a.inter_latency_us * 1e-6, a.inter_gbit_s * GBIT)
    intra = Link(a.intra_latency_us * 1e-6, a.intra_gbyte_s * 1e9)
    f = f"profile {a.profile}" if profile else f"{a.tail_fraction:g}"
    print(f"p = {a.servers} servers × g = {a.gpus_per_server} GPUs, b = {a.gradient_mb:g} MB, "
          f"backprop {a.backprop_ms:g} ms, forward {a.forward_ms:g} ms, f = {f}; "
          f"inter {a.inter_gbit_s:g} Gbit/s α {a.inter_latency_us:g} µs, "
          f"intra {a.intra_gbyte_s:g} GB/s α {a.intra_latency_us:g} µs")
    print(plan_table(a.servers, a.gpus_per_server, a.gradient_mb * 1e6, a.backprop_ms * 1e-3,
                     inter, intra, forward_s=a.forward_ms * 1e-3, tail_fraction=a.tail_fraction,
                     profile=profile))
    if a.servers > 1 and a.gpus_per_server > 1:
        name = "halving_doubling" if is_power_of_two(a.servers) else "binary_blocks"
        beta = hierarchical_crossover(a.servers, a.gpus_per_server, a.gradient_mb * 1e6, inter,
                                      intra.latency_s, ALGORITHMS[name])
        print(f"hierarchical + {name} beats the flat ring when the intra-server bandwidth "
              f"exceeds {beta / 1e9:.2f} GB/s ({beta / inter.bandwidth_bytes_per_s:.2f}× the "
              f"inter-server link)" if math.isfinite(beta) else
              f"the flat ring beats hierarchical + {name} at any intra-server bandwidth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
