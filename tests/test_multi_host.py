"""Several hosts for real: two network-namespace hosts of launchers/cluster_box.sh, each with
its own sshd, host name and /etc/hosts, joined by a bridge. horovodrun runs on the first
and starts the second's ranks over SSH, as on a cluster.

The box needs root, network namespaces and sshd (launchers/install_test_tools.sh installs
openssh-server); the module is skipped, saying why, only where the machine cannot do it
(not root, no namespaces). One box serves the module and is removed at its end.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration

BOX_SH = ROOT / "launchers/cluster_box.sh"
HOSTS_SH = ROOT / "launchers/horovodrun_hosts.sh"
BOX = "tlbtest"  # a killed session's box of the same name is removed by the next `up`
HOSTS = [f"{BOX}-h1", f"{BOX}-h2"]
# A CIFAR ResNet-8 on 128 synthetic images; 2 hosts × 2 processes of n = 8: kn = 32.
TINY = ["--model=cifar_resnet8", "--dataset=synthetic", "--synthetic_examples=128",
        "--per_worker_batch=8", "--steps_per_epoch=2", "--eval_steps=1", "--seed=3",
        "--warmup=gradual", "--warmup_epochs=1", "--milestones=2", "--epochs=2",
        "--nosaved_model", "--log_every_step"]


def machine_cannot():
    """Why this machine cannot build the box (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, sshd)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"no network namespaces here: unshare --net: {probe.stderr.strip()}"
    return None


class Box:
    def __init__(self, folder):
        self.folder = folder / "box"  # the box's own: `down` removes it
        self.env = dict(os.environ, BOX=BOX, BOX_DIR=str(self.folder), TF_CPP_MIN_LOG_LEVEL="2",
                        PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
        self.hostfile = folder / "hostfile"
        self.hostfile.write_text("".join(f"{h} slots=2\n" for h in HOSTS))

    def __call__(self, *args, check=True, env=None, timeout=600):
        result = subprocess.run([str(BOX_SH), *map(str, args)], capture_output=True, text=True,
                                cwd=ROOT, env=dict(self.env, **(env or {})), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"cluster_box.sh {' '.join(map(str, args))} exited "
                                 f"{result.returncode}:\n{result.stdout[-4000:]}\n"
                                 f"{result.stderr[-4000:]}")
        return result

    def train_on_hosts(self, log_dir, *flags, check=True, env=None):
        """launchers/horovodrun_hosts.sh on host 1: 2 ranks there, 2 on host 2 over SSH."""
        return self("exec", 1, HOSTS_SH, self.hostfile, *TINY, f"--log_dir={log_dir}", *flags,
                    check=check, env=env)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    why = machine_cannot()
    if why:
        pytest.skip(f"the multi-host box cannot run here: {why}")
    if not shutil.which("sshd", path="/usr/sbin:/usr/bin"):
        pytest.fail("no sshd: run launchers/install_test_tools.sh (apt-get install "
                    "openssh-server)")
    cluster = Box(tmp_path_factory.mktemp("box"))
    try:
        cluster("up", 2)
        yield cluster
    finally:
        cluster("down", check=False)


def keras_weights(run_dir):
    """{path: array} of every weight in the run's model.keras (read with h5py, no Keras)."""
    import h5py

    with zipfile.ZipFile(run_dir / "model.keras") as archive:
        data = archive.read("model.weights.h5")
    out = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        f.visititems(lambda name, item: out.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return out


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps(run_dir):
    return lines(run_dir / "steps.jsonl")


def epochs(run_dir):
    return lines(run_dir / "metrics.jsonl")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """The same run in one process simulating k = 4 workers of n = 8."""
    run_dir = tmp_path_factory.mktemp("simulated")
    result = subprocess.run([sys.executable, "-m", "tf_largebatch.train", *TINY,
                             "--simulate_workers=4", f"--log_dir={run_dir}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


@pytest.fixture(scope="module")
def flat(box, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("flat")
    box.train_on_hosts(run_dir)
    return run_dir


def assert_same_run(run_dir, reference):
    got, want = keras_weights(run_dir), keras_weights(reference)
    # Every weight, the BN moving statistics (a BN layer's vars 2 and 3) and the optimizer's
    # momentum among them.
    assert got.keys() == want.keys()
    assert any("batch_normalization" in k and k.endswith("vars/2") for k in got)
    assert sum(k.startswith("optimizer/") for k in got) > 20
    for name in got:  # the tolerance of the np=2 against simulated-workers test
        np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-6, err_msg=name)
    for a, b in zip(steps(run_dir), steps(reference), strict=True):  # the rate at every step
        assert a["step"] == b["step"] and a["lr"] == pytest.approx(b["lr"], rel=1e-6)
    for a, b in zip(epochs(run_dir), epochs(reference), strict=True):  # means over all workers
        for key in ("train_loss", "train_top1_error", "val_loss", "val_top1_error"):
            assert a[key] == pytest.approx(b[key], rel=2e-4, abs=1e-6), (a["epoch"], key)


def test_horovodrun_over_ssh_on_two_hosts_equals_four_simulated_workers(flat, simulated):
    flags = json.loads((flat / "flags.json").read_text())
    assert flags["hosts"] == HOSTS and flags["processes"] == flags["workers"] == 4
    assert (flags["global_batch"], flags["allreduce"]) == (32, "flat")
    assert_same_run(flat, simulated)


def test_hierarchical_allreduce_across_two_hosts_equals_the_flat_run(box, flat, tmp_path):
    result = box.train_on_hosts(tmp_path, env={"HIERARCHICAL": "1"})
    assert ("process-set hierarchical allreduce in effect (2 hosts)" in result.stdout
            + result.stderr)
    flags = json.loads((tmp_path / "flags.json").read_text())
    assert (flags["hosts"], flags["allreduce"]) == (HOSTS, "process-set hierarchical")
    assert_same_run(tmp_path, flat)


def test_a_host_named_as_on_stock_debian_gets_one_error_line_and_no_run(box, tmp_path):
    # Debian's stock /etc/hosts maps the host's own name to 127.0.1.1. Written in place: the
    # host's /etc/hosts is a bind mount of this file.
    hosts = box.folder / "h2/hosts"
    good = hosts.read_text()
    try:
        hosts.write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTS[1]}\n198.18.0.1 {HOSTS[0]}\n")
        result = box.train_on_hosts(tmp_path / "run", check=False)
    finally:
        hosts.write_text(good)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines()
              if "error: this host's name" in line]
    assert len(errors) == 1, errors  # one line for the host, from its first process
    assert f"'{HOSTS[1]}' resolves to 127.0.1.1, a loopback address" in errors[0]
    assert f"'198.18.0.2 {HOSTS[1]}'" in errors[0]  # the fix, with this host's own address
    assert not (tmp_path / "run").exists()


def test_the_box_removes_a_stale_box_and_leaves_nothing_behind(tmp_path):
    why = machine_cannot()
    if why:
        pytest.skip(f"the multi-host box cannot run here: {why}")

    def state():
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split("@")[0] for line in links.splitlines()], spaces.split()

    env = dict(os.environ, BOX="tlbstale", BOX_DIR=str(tmp_path / "box"))
    subprocess.run(["ip", "netns", "add", "tlbstale-h7"], check=True)  # a killed run's host
    before = state()
    try:
        subprocess.run([BOX_SH, "up", "2"], env=env, check=True, capture_output=True)
        spaces = state()[1]
        assert {"tlbstale-h1", "tlbstale-h2", "tlbstale-br"} <= set(spaces)
        assert "tlbstale-h7" not in spaces
    finally:
        subprocess.run([BOX_SH, "down"], env=env, check=True, capture_output=True)
    links, spaces = state()
    assert links == before[0]  # nothing was added to the root namespace
    assert not [s for s in spaces if s.startswith("tlbstale")]
    assert not (tmp_path / "box").exists()
