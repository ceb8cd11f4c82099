"""The α–β communication model (tf_largebatch.plan): pure arithmetic, no TensorFlow.

Expected values are worked out by hand in the comments. b = 1680 bytes (divisible by
every p used) and a link with α = 0.01 s, β = 1680 B/s, so b/β = 1 s and a time reads
as steps·0.01 + (bytes / b).
"""

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

from tf_largebatch.plan import (
    GBIT,
    Link,
    binary_blocks,
    choose_allreduce,
    collective_ring,
    efficiency,
    fit_link,
    flat_collective,
    flat_ring,
    fused_messages,
    halving_doubling,
    hierarchical,
    hierarchical_crossover,
    profile_tail_fraction,
    ring,
    step_time,
    three_phase,
)

pytestmark = pytest.mark.unit

B = 1680
LINK = Link(0.01, 1680.0)

# ring: 2(p-1) steps, 2(p-1)/p·b bytes.
RING = {
    2: (2, 1680),   # 2·1 ; 2·1/2·1680 = 1680
    3: (4, 2240),   # 2·2 ; 2·2/3·1680 = 2240
    4: (6, 2520),   # 2·3 ; 2·3/4·1680 = 2520
    5: (8, 2688),   # 2·4 ; 2·4/5·1680 = 2688
    6: (10, 2800),  # 2·5 ; 2·5/6·1680 = 2800
    7: (12, 2880),  # 2·6 ; 2·6/7·1680 = 2880
    8: (14, 2940),  # 2·7 ; 2·7/8·1680 = 2940
    12: (22, 3080),  # 2·11 ; 2·11/12·1680 = 3080
    16: (30, 3150),  # 2·15 ; 2·15/16·1680 = 3150
}
# halving/doubling: 2·log2(p) steps, the ring's bytes.
HALVING_DOUBLING = {
    2: (2, 1680),  # 2·1
    4: (4, 2520),  # 2·2
    8: (6, 2940),  # 2·3
    16: (8, 3150),  # 2·4
}
# binary blocks (critical path, bandwidth-dominated link), in units of α and b:
BINARY_BLOCKS = {
    # 3 = 2+1: RS_1 = α+b/2; the single node sends b to block 1 as 2 messages: 2α+b;
    # ready_1 = 2α+b; block 1: +(α+b/2) down, +(α+b/2) allgather = 4α+2b;
    # single node: 2α+b + (α+b) = 3α+2b.  T = 4α+2b.
    3: (4, 3360),
    # 5 = 4+1: RS_1 = 2α+3b/4; single node sends b as 4 messages: 4α+b = ready_1;
    # block 1: +(α+b/4) +(2α+3b/4) = 7α+2b; single node: 4α+b +(α+b) = 5α+2b.  T = 7α+2b.
    5: (7, 3360),
    # 6 = 4+2: RS_1 = 2α+3b/4, RS_2 = α+b/2, up 2 messages of b/4: 3α+b = ready_1;
    # block 1: +(α+b/4) +(2α+3b/4) = 6α+2b; block 2: 3α+b +(α+b/2) +(α+b/2) = 5α+2b.
    6: (6, 3360),
    # 7 = 4+2+1: single node up 2·b/2: 2α+b; block 2 ready max(α+b/2, 2α+b) = 2α+b,
    # up 2·b/4: 4α+3b/2 = ready_1 (> RS_1 = 2α+3b/4);
    # block 1: +(α+b/4)+(2α+3b/4) = 7α+5b/2; block 2: got 4α+3b/2+(α+b/2) = 5α+2b,
    # +(α+b/2) down +(α+b/2) allgather = 7α+3b; single: 5α+2b+(α+b) = 6α+3b.  T = 7α+3b.
    7: (7, 5040),
    # 12 = 8+4: RS_1 = 3α+7b/8, RS_2 = 2α+3b/4, up 2·b/8: 4α+b = ready_1;
    # block 1: +(α+b/8)+(3α+7b/8) = 8α+2b; block 2: 4α+b+(α+b/4)+(2α+3b/4) = 7α+2b.
    12: (8, 3360),
}


@pytest.mark.parametrize("p", sorted(RING))
def test_ring(p):
    steps, nbytes = RING[p]
    cost = ring(p, B, LINK)
    assert (cost.steps, cost.bytes_per_node) == pytest.approx((steps, nbytes))
    assert cost.seconds == pytest.approx(steps * 0.01 + nbytes / 1680)


def test_ring_seconds_literal():
    # p = 4: 6·0.01 + 2520/1680 = 0.06 + 1.5
    assert ring(4, B, LINK).seconds == pytest.approx(1.56)


@pytest.mark.parametrize("p", sorted(HALVING_DOUBLING))
def test_halving_doubling(p):
    steps, nbytes = HALVING_DOUBLING[p]
    cost = halving_doubling(p, B, LINK)
    assert (cost.steps, cost.bytes_per_node) == pytest.approx((steps, nbytes))
    assert cost.seconds == pytest.approx(steps * 0.01 + nbytes / 1680)
    assert cost.bytes_per_node == pytest.approx(ring(p, B, LINK).bytes_per_node)


def test_halving_doubling_seconds_literal():
    # p = 8: 6·0.01 + 2940/1680 = 0.06 + 1.75
    assert halving_doubling(8, B, LINK).seconds == pytest.approx(1.81)


@pytest.mark.parametrize("p", [3, 5, 6, 7, 12])
def test_halving_doubling_needs_a_power_of_two(p):
    with pytest.raises(ValueError, match="power-of-two"):
        halving_doubling(p, B, LINK)


@pytest.mark.parametrize("p", sorted(BINARY_BLOCKS))
def test_binary_blocks_non_powers_of_two(p):
    steps, nbytes = BINARY_BLOCKS[p]
    cost = binary_blocks(p, B, LINK)
    assert (cost.steps, cost.bytes_per_node) == pytest.approx((steps, nbytes))
    assert cost.seconds == pytest.approx(steps * 0.01 + nbytes / 1680)


def test_binary_blocks_seconds_literal():
    # p = 7: 7·0.01 + 5040/1680 = 0.07 + 3
    assert binary_blocks(7, B, LINK).seconds == pytest.approx(3.07)


@pytest.mark.parametrize("p", [1, 2, 4, 8, 16, 32, 64, 256])
@pytest.mark.parametrize("link", [LINK, Link(1e-3, 1e3), Link(0.0, 1e9)])
def test_binary_blocks_is_halving_doubling_for_powers_of_two(p, link):
    assert binary_blocks(p, 1e8, link) == halving_doubling(p, 1e8, link)


def test_one_node_costs_nothing():
    for algorithm in (ring, halving_doubling, binary_blocks):
        assert algorithm(1, B, LINK) == (0, 0, 0)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_node_count(bad):
    with pytest.raises(ValueError, match="node count"):
        ring(bad, B, LINK)


@pytest.mark.parametrize("args", [(-1e-6, 1e9), (0.0, 0.0), (0.0, -1.0)])
def test_bad_link(args):
    with pytest.raises(ValueError, match="latency|bandwidth"):
        Link(*args)


@pytest.mark.parametrize("algorithm", [ring, halving_doubling, binary_blocks])
@pytest.mark.parametrize("p", [1, 2, 4, 8, 16])
def test_hierarchical_with_one_gpu_per_server_is_flat(algorithm, p):
    intra = Link(1e-6, 2e10)
    assert hierarchical(p, 1, 1e8, LINK, intra, algorithm) == algorithm(p, 1e8, LINK)


def test_hierarchical_literal():
    # p = 4 servers, g = 2 GPUs, intra α = 0.001 s, β = 16800 B/s:
    # reduce = broadcast = 1·0.001 + 1680/16800 = 0.101 s (1 step, 1680 B);
    # inter halving/doubling p = 4: 4·0.01 + 2520/1680 = 1.54 s (4 steps, 2520 B);
    # total 0.101 + 1.54 + 0.101 = 1.742 s, 1 + 4 + 1 = 6 steps, 1680 + 2520 + 1680 = 5880 B.
    cost = hierarchical(4, 2, B, LINK, Link(0.001, 16800.0))
    assert cost == pytest.approx((6, 5880, 1.742))


def test_step_time_literals():
    # backprop 0.12 s, allreduce 0.05 s: none 0.17; overlap max(0.12, 0.05) = 0.12;
    # f = 0.5: max(0.12 + 0.025, 0.06 + 0.05) = 0.145. allreduce 0.2 s: overlap 0.2,
    # f = 0.5: max(0.12 + 0.1, 0.06 + 0.2) = 0.26. forward 0.03 s adds to each.
    assert step_time(0.12, 0.05, overlap=False) == pytest.approx(0.17)
    assert step_time(0.12, 0.05) == pytest.approx(0.12)
    assert step_time(0.12, 0.05, tail_fraction=0.5) == pytest.approx(0.145)
    assert step_time(0.12, 0.2) == pytest.approx(0.2)
    assert step_time(0.12, 0.2, tail_fraction=0.5) == pytest.approx(0.26)
    assert step_time(0.12, 0.2, forward_s=0.03, tail_fraction=0.5) == pytest.approx(0.29)
    # efficiency vs 1 GPU: 0.12 / 0.17
    assert efficiency(0.12, 0.05, overlap=False) == pytest.approx(0.12 / 0.17)


def test_overlap_is_never_slower_than_no_overlap():
    grid = [0.0, 0.01, 0.12, 0.5]
    for back, comm, fwd, f in itertools.product(grid, grid, grid, [0.0, 0.1, 0.5, 1.0]):
        none = step_time(back, comm, fwd, overlap=False)
        assert step_time(back, comm, fwd, overlap=True, tail_fraction=f) <= none + 1e-15
    assert step_time(0.12, 0.05, 0.03, True, 1.0) == pytest.approx(0.2)  # f = 1: no overlap


def _paper(forward_s=0.0, overlap=True, inter_latency_s=20e-6):
    """Goyal et al.: b = 25.5M·4 B, backprop 120 ms, 32 servers × 8 P100, 50 Gbit/s Ethernet
    with halving/doubling, NCCL reduce/broadcast at 15 GB/s, 5 µs inside a server."""
    inter, intra = Link(inter_latency_s, 50 * GBIT), Link(5e-6, 15e9)
    c256 = hierarchical(32, 8, 102e6, inter, intra)
    c8 = hierarchical(1, 8, 102e6, inter, intra)
    eff = efficiency(0.120, c256.seconds, forward_s, overlap, baseline_allreduce_s=c8.seconds)
    return c8, c256, eff


def test_paper_setting():
    # inter: 10·20 µs + 2·31/32·102e6 B / 6.25e9 B/s = 0.2 + 31.62 = 31.82 ms;
    # intra: 2·(7·5 µs + 102e6 / 15e9) = 2·6.835 = 13.67 ms; 256 GPUs: 45.49 ms.
    c8, c256, overlapped = _paper()
    assert c8.seconds == pytest.approx(13.67e-3, rel=1e-3)
    assert c256.seconds == pytest.approx(45.49e-3, rel=1e-3)
    assert c256.seconds < 0.120  # hidden behind backprop: communication is not the bottleneck
    assert overlapped == 1.0
    # No overlap (the lower bound): (120 + 13.67) / (120 + 45.49) = 0.808;
    # with 100 ms of forward/update: (220 + 13.67) / (220 + 45.49) = 0.880.
    lower = _paper(overlap=False)[2]
    assert 0.80 <= lower <= 0.82
    assert 0.87 <= _paper(forward_s=0.100, overlap=False)[2] <= 0.89
    # The reported ~90% lies between the model's bounds, for latencies of 10-50 µs.
    for latency in (10e-6, 50e-6):
        assert _paper(overlap=False, inter_latency_s=latency)[2] <= 0.90 <= 1.0


# A measured profile: (time fraction of backprop, bytes share) of each gradient.
EARLY = [(0.0, 0.5), (0.5, 0.3), (1.0, 0.2)]
LATE = [(0.9, 0.8), (1.0, 0.2)]


def test_profile_tail_fraction_literals():
    # T = max(B, max_i x_i·B + (1 - S_i)·C); f = (T - max(B, C)) / min(B, C).
    # EARLY, B = 0.1, C = 0.05: 0 + 0.05; 0.05 + 0.5·0.05 = 0.075; 0.1 + 0.2·0.05 = 0.11
    # → T = 0.11, f = 0.01 / 0.05 = 0.2 (the share ready at the end).
    assert profile_tail_fraction(EARLY, 0.1, 0.05) == pytest.approx(0.2)
    # LATE, B = 0.1, C = 0.05: 0.09 + 0.05 = 0.14; 0.1 + 0.01 = 0.11 → f = 0.04 / 0.05 = 0.8.
    assert profile_tail_fraction(LATE, 0.1, 0.05) == pytest.approx(0.8)
    # C > B. EARLY, B = 0.05, C = 0.1: 0.1; 0.025 + 0.05; 0.05 + 0.02 → T = C, f = 0.
    assert profile_tail_fraction(EARLY, 0.05, 0.1) == pytest.approx(0.0)
    # LATE, B = 0.05, C = 0.1: 0.045 + 0.1 = 0.145; 0.05 + 0.02 → f = 0.045 / 0.05 = 0.9.
    assert profile_tail_fraction(LATE, 0.05, 0.1) == pytest.approx(0.9)
    # Shares are normalised: (0, 1), (1, 1) is half at the start, half at the end:
    # 0.05; 0.1 + 0.5·0.05 = 0.125 → f = 0.5. Order does not matter.
    assert profile_tail_fraction([(1.0, 1.0), (0.0, 1.0)], 0.1, 0.05) == pytest.approx(0.5)
    assert profile_tail_fraction(LATE, 0.0, 0.05) == 0.0
    assert profile_tail_fraction(LATE, 0.1, 0.0) == 0.0


def test_profile_tail_fraction_reproduces_the_pipeline_time():
    # LATE: T = 0.14 (B = 0.1, C = 0.05) and 0.145 (B = 0.05, C = 0.1), by hand above.
    assert step_time(0.1, 0.05, tail_fraction=0.8) == pytest.approx(0.14)
    assert step_time(0.05, 0.1, tail_fraction=0.9) == pytest.approx(0.145)


def test_profile_tail_fraction_needs_shares():
    with pytest.raises(ValueError, match="shares"):
        profile_tail_fraction([], 0.1, 0.05)
    with pytest.raises(ValueError, match="shares"):
        profile_tail_fraction([(0.5, -1.0), (1.0, 2.0)], 0.1, 0.05)


def test_hierarchical_crossover_literals():
    # p = 2, g = 2, b = 1e6 B, β = 1e9 B/s, no latency: flat ring over 4 = 6·0.25e6/1e9 =
    # 1.5 ms; inter halving/doubling p = 2: 2·0.5e6/1e9 = 1 ms; β_i > 2e6 / 0.5e-3 = 4e9.
    inter = Link(0.0, 1e9)
    assert hierarchical_crossover(2, 2, 1e6, inter, 0.0) == pytest.approx(4e9)
    # α = 1e-4 s both: flat 6·(1e-4 + 2.5e-4) = 2.1 ms; inter 2e-4 + 1e-3 = 1.2 ms;
    # 2(g-1)·α_i = 0.2 ms; β_i > 2e6 / 0.7e-3 = 2.857e9.
    inter = Link(1e-4, 1e9)
    beta = hierarchical_crossover(2, 2, 1e6, inter, 1e-4)
    assert beta == pytest.approx(2e6 / 0.7e-3)
    flat = flat_ring(2, 2, 1e6, inter, inter).seconds
    assert hierarchical(2, 2, 1e6, inter, Link(1e-4, beta * 1.01)).seconds < flat
    assert hierarchical(2, 2, 1e6, inter, Link(1e-4, beta * 0.99)).seconds > flat
    # α_i = 1e-3 s: 2.1 - 2 - 1.2 < 0: the flat ring always wins.
    assert hierarchical_crossover(2, 2, 1e6, inter, 1e-3) == math.inf


def test_hierarchical_crossover_paper_setting():
    # flat ring over 256: 510·(20 µs + 102e6 / (256·6.25e9) s) = 510·83.75 µs = 42.7125 ms;
    # halving/doubling p = 32: 31.82 ms; 2·7·5 µs = 0.07 ms;
    # β_i > 204e6 B / 10.8225 ms = 18.850 GB/s, 3.016× the 6.25 GB/s between servers.
    beta = hierarchical_crossover(32, 8, 102e6, Link(20e-6, 50 * GBIT), 5e-6)
    assert beta == pytest.approx(18.850e9, rel=1e-4)
    assert beta / (50 * GBIT) == pytest.approx(3.016, rel=1e-3)


@pytest.mark.parametrize("p,g", [(1, 8), (32, 1)])
def test_hierarchical_crossover_needs_servers_and_gpus(p, g):
    with pytest.raises(ValueError, match="servers"):
        hierarchical_crossover(p, g, 1e6, LINK, 0.0)


@pytest.mark.parametrize("algorithm,p", [(ring, 2), (ring, 4), (halving_doubling, 8),
                                         (binary_blocks, 6)])
def test_fit_link_recovers_alpha_and_beta(algorithm, p):
    truth = Link(50e-6, 1.2e9)
    sizes = [1024 * 4**k for k in range(9)]
    seconds = [algorithm(p, s, truth).seconds for s in sizes]
    fit = fit_link(sizes, seconds, algorithm=algorithm, p=p)
    assert fit.link.latency_s == pytest.approx(50e-6, rel=1e-6)
    assert fit.link.bandwidth_bytes_per_s == pytest.approx(1.2e9, rel=1e-6)
    assert fit.held_out_bytes == 1024 * 4**7
    assert abs(fit.relative_error) < 1e-6


def test_fit_link_with_noise_and_shuffled_input():
    truth = Link(200e-6, 2e9)
    sizes = [1024 * 4**k for k in range(9)]
    rng = np.random.default_rng(0)
    seconds = [ring(2, s, truth).seconds * (1 + 0.03 * rng.standard_normal()) for s in sizes]
    order = rng.permutation(len(sizes))
    fit = fit_link([sizes[i] for i in order], [seconds[i] for i in order])
    assert fit.link.latency_s == pytest.approx(200e-6, rel=0.1)
    assert fit.link.bandwidth_bytes_per_s == pytest.approx(2e9, rel=0.1)
    assert abs(fit.relative_error) < 0.1


def test_fit_link_keeps_alpha_non_negative():
    # Pure bandwidth with a latency-free link: the free fit may give α < 0 by rounding.
    sizes = [1024 * 4**k for k in range(9)]
    fit = fit_link(sizes, [s / 1e9 for s in sizes])
    assert fit.link.latency_s >= 0
    assert fit.link.bandwidth_bytes_per_s == pytest.approx(1e9, rel=1e-6)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tf_largebatch.plan", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_prints_the_table():
    result = _cli("--servers=32", "--gpus_per_server=8", "--gradient_mb=102",
                  "--backprop_ms=120", "--inter_gbit_s=50", "--inter_latency_us=20")
    assert result.returncode == 0, result.stderr
    for text in ("hierarchical + halving_doubling", "hierarchical + binary_blocks",
                 "hierarchical + ring", "flat ring over 256 GPUs", "eff. vs 1 server"):
        assert text in result.stdout
    line = next(x for x in result.stdout.splitlines() if "+ halving_doubling" in x)
    assert "45.5" in line and "0.808 / 1.000" in line


def test_cli_non_power_of_two_has_no_halving_doubling_row():
    result = _cli("--servers=12")
    assert result.returncode == 0, result.stderr
    assert "+ binary_blocks" in result.stdout and "+ halving_doubling" not in result.stdout


@pytest.mark.parametrize("flag", ["--servers=0", "--gpus_per_server=0", "--inter_gbit_s=0",
                                  "--intra_gbyte_s=-1", "--gradient_mb=0",
                                  "--tail_fraction=2"])
def test_cli_rejects_bad_values(flag):
    result = _cli(flag)
    assert result.returncode != 0
    assert flag.split("=")[0] in result.stderr


def test_cli_profile(tmp_path):
    # LATE on the paper's setting, hierarchical + halving/doubling: C = 45.49 ms, B = 120:
    # 0.9·120 + 45.49 = 153.49 ms; 120 + 0.2·45.49 = 129.10 → f = 33.49 / 45.49 = 0.736;
    # one server (C = 13.67): max(120, 108 + 13.67, 120 + 2.734) = 122.734 ms, so
    # efficiency 122.734 / 153.49 = 0.800, and 120 / 153.49 = 0.782 against one GPU.
    path = tmp_path / "overlap.json"
    path.write_text(json.dumps({"profile": {"time_fraction": [0.9, 1.0],
                                            "bytes_share": [0.8, 0.2]}}))
    result = _cli(f"--profile={path}")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "+ halving_doubling" in x)
    assert "0.736" in line and "165.5 / 153.5" in line
    assert "0.725 / 0.782" in line and "0.808 / 0.800" in line
    assert "exceeds 18.85 GB/s (3.02× the inter-server link)" in result.stdout


def test_cli_profile_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = _cli(f"--profile={bad}")
    assert result.returncode == 2 and "--profile" in result.stderr
    result = _cli(f"--profile={bad}", "--tail_fraction=0.1")
    assert result.returncode == 2 and "not allowed" in result.stderr


# --allreduce=auto's comparison on 2 hosts × 2 ranks, α per collective (Horovod's overhead):
# between hosts α = 2 ms, β = 125 MB/s (1 Gbit/s); inside α = 2 ms, β = 1 GB/s.
INTER, INTRA = Link(2e-3, 125e6), Link(2e-3, 1e9)


def test_three_phase_is_three_collectives_by_hand():
    # 50 MB: ring of 2 inside (50 MB a rank): 2 + 50 = 52 ms; ring of 2 between hosts
    # (50 MB): 2 + 400 = 402 ms; broadcast inside (50 MB): 2 + 50 = 52 ms.
    cost = three_phase(2, 2, 50e6, INTER, INTRA)
    assert cost.steps == 3 and cost.bytes_per_node == pytest.approx(150e6)
    assert cost.seconds == pytest.approx(0.052 + 0.402 + 0.052)
    # one rank a host: no phase inside, the ring between hosts alone
    assert three_phase(2, 1, 50e6, INTER, INTRA).seconds == pytest.approx(0.402)
    # the broadcast over its own link, α = 1 ms, β = 5 GB/s: 1 + 10 = 11 ms instead of 52
    fast_copy = Link(1e-3, 5e9)
    assert three_phase(2, 2, 50e6, INTER, INTRA, fast_copy).seconds == pytest.approx(
        0.052 + 0.402 + 0.011)


def test_flat_collective_crosses_the_link_between_hosts():
    # ring of 4, one collective: 2 ms + 2·3/4 · 50 MB / 125 MB/s = 2 + 600 ms; on one host the
    # inside link: 2 ms + 75 MB / 1 GB/s = 77 ms.
    assert flat_collective(2, 2, 50e6, INTER, INTRA).seconds == pytest.approx(0.602)
    assert flat_collective(1, 4, 50e6, INTER, INTRA).seconds == pytest.approx(0.077)


def test_auto_picks_hierarchical_for_a_large_gradient_on_a_slow_link():
    # 100 MB in 2 fused allreduces of 50 MB: flat 2 × 602 = 1204 ms, hierarchical
    # 2 × 506 = 1012 ms < 0.95 · 1204.
    choice = choose_allreduce(2, 2, 100e6, 2, INTER, INTRA)
    assert choice.scheme == "hierarchical"
    assert (choice.flat_s, choice.hierarchical_s) == pytest.approx((1.204, 1.012))
    assert "predicted flat 1204.0 ms, hierarchical 1012.0 ms" in choice.reason


def test_auto_picks_flat_for_a_small_gradient():
    # 1 MB in one allreduce: flat 2 + 1.5 MB / 125 MB/s = 2 + 12 = 14 ms; hierarchical
    # (2 + 1) + (2 + 8) + (2 + 1) = 16 ms: two more collectives' overhead outweigh the third
    # of the bytes saved between hosts.
    choice = choose_allreduce(2, 2, 1e6, 1, INTER, INTRA)
    assert choice.scheme == "flat"
    assert (choice.flat_s, choice.hierarchical_s) == pytest.approx((0.014, 0.016))


def test_auto_wants_a_margin_before_it_leaves_flat():
    # 4 MB in one allreduce: flat 2 + 48 = 50 ms; hierarchical (2 + 4) + (2 + 32) + (2 + 4)
    # = 46 ms, 0.92 of flat: hierarchical with the default margin (0.05), flat with 0.1.
    assert choose_allreduce(2, 2, 4e6, 1, INTER, INTRA).scheme == "hierarchical"
    assert choose_allreduce(2, 2, 4e6, 1, INTER, INTRA, margin=0.1).scheme == "flat"


def test_auto_is_flat_without_two_hosts_of_two_ranks():
    assert choose_allreduce(1, 4, 100e6, 2, INTER, INTRA).reason == "one host"
    assert choose_allreduce(4, 1, 100e6, 2, INTER, INTRA).reason == "one process per host"
    assert choose_allreduce(4, 1, 100e6, 2, INTER, INTRA).scheme == "flat"


def test_per_collective_fit_recovers_the_overhead_and_the_bandwidth():
    # times made by hand from α = 3 ms, β = 100 MB/s for a ring of 2 (b a rank):
    sizes = [65536, 1048576, 8388608, 33554432]
    seconds = [0.003 + b / 100e6 for b in sizes]
    fit = fit_link(sizes, seconds, collective_ring, p=2)
    assert fit.link.latency_s == pytest.approx(0.003)
    assert fit.link.bandwidth_bytes_per_s == pytest.approx(100e6)


def test_fused_messages_by_horovods_fusion_threshold():
    mib64 = 64 * 1024 * 1024
    assert fused_messages(102e6, 161, mib64) == 2  # ⌈102 / 67.1⌉
    assert fused_messages(1.1e6, 65, mib64) == 1
    assert fused_messages(1e9, 3, mib64) == 3  # never more buffers than gradients
    assert fused_messages(1e6, 65, 0) == 65  # fusion off: one allreduce per gradient
