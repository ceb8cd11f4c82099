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
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, slurm_conf

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


# The fault runs: 3 epochs of 8 steps (kn = 32), so a fault lands mid-epoch 2 with epoch 1
# committed; Gloo's timeout (30 s by default, the launcher's value) shortened for the suite.
FAULTY = [*TINY[:-2], "--steps_per_epoch=8", "--synthetic_examples=256", "--epochs=3",
          "--nosaved_model", "--log_every_step"]
FAULTY.remove("--steps_per_epoch=2")
FAULTY.remove("--epochs=2")
GLOO_TIMEOUT = 8
WAIT = 300  # seconds any one wait may take before the test gives up (not a speed check)


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

    def train_on_hosts(self, log_dir, *flags, check=True, env=None, hostfile=None):
        """launchers/horovodrun_hosts.sh on host 1: 2 ranks there, 2 on host 2 over SSH."""
        return self("exec", 1, HOSTS_SH, hostfile or self.hostfile, *TINY,
                    f"--log_dir={log_dir}", *flags, check=check, env=env)

    def start_on_hosts(self, log_dir, *flags):
        """`train_on_hosts` of FAULTY in the background (a Popen), with Gloo's timeout short."""
        return subprocess.Popen(
            [str(BOX_SH), "exec", "1", HOSTS_SH, self.hostfile, *FAULTY, f"--log_dir={log_dir}",
             *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=dict(self.env, HOROVOD_GLOO_TIMEOUT_SECONDS=str(GLOO_TIMEOUT)))

    def workers_on(self, host):
        """PIDs of the trainer's Python processes in host `host`'s network namespace."""
        pids = subprocess.run(["ip", "netns", "pids", f"{BOX}-h{host}"], capture_output=True,
                              text=True).stdout.split()
        return [p for p in pids if is_trainer(p)]


def is_trainer(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return "python" in os.path.basename(argv[0].decode()) and b"tf_largebatch.train" in argv


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


def test_allreduce_auto_measures_the_hosts_and_keeps_a_small_model_flat(flat):
    # The default, --allreduce=auto, on 2 hosts: ResNet-8's 78k values (0.31 MB) fit one
    # fused buffer; on the bare veth its bytes take well under a millisecond, so the three
    # collectives of the hierarchical scheme cost about three times one flat collective.
    flags = json.loads((flat / "flags.json").read_text())
    reason = flags["allreduce_reason"]
    assert flags["allreduce"] == "flat" and not flags["hierarchical_allreduce"]
    if "could not be measured" in reason:  # a machine too busy to time 16 MiB: flat, said so
        assert reason.startswith("--allreduce=auto: the links could not be measured ("), reason
        return
    assert reason.startswith("--allreduce=auto: 0.3 MB of gradients in 1 allreduce on 2 hosts"
                             " × 2: predicted flat "), reason
    flat_ms, hier_ms = map(float, re.findall(r"predicted flat ([\d.]+) ms, hierarchical "
                                             r"([\d.]+) ms", reason)[0])
    assert hier_ms > 0.8 * flat_ms
    between = float(re.search(r"between hosts ([\d.]+) Gbit/s", reason).group(1))
    assert between > 0.5, reason  # a veth, no tc: gigabits (this machine measured ≈ 5)


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


def wait_for_step(run_dir, step, job):
    """Waits until rank 0 has logged `step` (0-based) to steps.jsonl."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        logged = (run_dir / "steps.jsonl").read_text().splitlines() if (
            run_dir / "steps.jsonl").exists() else []
        if len(logged) > step:
            return
        assert job.poll() is None, job.communicate()
        time.sleep(0.1)
    raise AssertionError(f"step {step} not logged in {WAIT} s")


def ended(job):
    """(seconds until `job` ended, its exit status, its output), bounded by WAIT."""
    start = time.monotonic()
    out, err = job.communicate(timeout=WAIT)
    return time.monotonic() - start, job.returncode, out + err


def worker_errors(output):
    return [line for line in output.splitlines() if "]<stderr>:error:" in line]


def last_line(output):
    return output.strip().splitlines()[-1]


def test_a_host_lost_mid_epoch_ends_the_job_at_once_and_the_survivor_resumes(box, tmp_path):
    job = box.start_on_hosts(tmp_path)
    wait_for_step(tmp_path, 10, job)  # epoch 2, step 3 of 8: epoch 1 is committed
    box("kill", 2)  # every process of host 2, sshd too
    seconds, status, output = ended(job)
    assert status != 0 and seconds < 10, (seconds, output[-3000:])  # bound: 10 s
    assert last_line(output) == (
        f"horovodrun_hosts.sh: the job failed (exit 1); not answering ssh: {HOSTS[1]} "
        f"(ranks 2-3). Take the hosts that do not answer out of {box.hostfile} (or bring "
        "them back), then run the same command: --resume=auto continues from the last "
        "committed checkpoint."), output[-3000:]
    # The survivors' own lines race horovodrun's SIGTERM (tests/test_lost_worker.py): each
    # one said is right.
    for line in worker_errors(output):
        assert "checkpoints/ckpt-1 (epoch 1), is kept" in line, line
    before = epochs(tmp_path)
    assert [e["epoch"] for e in before] == [1]

    # The same command on the surviving host: k·n = 4×8 → 2×8.
    survivor = box.folder.parent / "survivor"
    survivor.write_text(f"{HOSTS[0]} slots=2\n")
    result = box("exec", 1, HOSTS_SH, survivor, *FAULTY, f"--log_dir={tmp_path}")
    assert "Resumed from" in result.stderr and "ckpt-1 (epoch 1, step 8)" in result.stderr
    after = epochs(tmp_path)
    assert [e["epoch"] for e in after] == [1, 2, 3] and after[0] == before[0]
    flags = json.loads((tmp_path / "flags.json").read_text())
    assert (flags["hosts"], flags["workers"], flags["global_batch"]) == ([HOSTS[0]], 2, 16)
    rates = [(s["step"], s["lr"]) for s in steps(tmp_path)]
    assert [step for step, _ in rates] == list(range(24))  # each step logged once
    # The linear rule for kn = 16 by hand: η̂ = 0.1·16/256 = 0.00625 after warmup (epoch 2),
    # ×0.1 from the milestone at epoch 2 (epoch 3).
    assert all(lr == pytest.approx(0.00625, rel=1e-6) for step, lr in rates[8:16])
    assert all(lr == pytest.approx(0.000625, rel=1e-6) for step, lr in rates[16:])


def test_a_short_outage_is_ridden_out_and_a_cut_held_ends_the_job_within_the_timeout(
        box, tmp_path):
    box("up", 2)  # host 2 back if an earlier test lost it
    job = box.start_on_hosts(tmp_path)
    wait_for_step(tmp_path, 4, job)
    box("cut", 2)
    time.sleep(GLOO_TIMEOUT / 4)  # shorter than Gloo's timeout: the job stalls, then goes on
    box("heal", 2)
    wait_for_step(tmp_path, 10, job)
    box("cut", 2)
    try:
        seconds, status, output = ended(job)
    finally:
        box("heal", 2)
    # Bound: Gloo's timeout, then the launcher's ssh checks (5 s a host), plus teardown:
    # 15.8–16.0 s alone, once 24.6 s with the full suite on the same 2 cores.
    assert status != 0 and GLOO_TIMEOUT <= seconds < GLOO_TIMEOUT + 20, (seconds, output)
    for line in worker_errors(output):
        assert (f"stopped answering for {GLOO_TIMEOUT} s (Gloo's timeout" in line
                or "another worker of this job stopped" in line), line
    assert f"not answering ssh: {HOSTS[1]} (ranks 2-3)" in last_line(output)
    assert [e["epoch"] for e in epochs(tmp_path)] == [1]  # epoch 1 trained through the outage
    deadline = time.monotonic() + 60  # the link back: no rank left on either host
    while (box.workers_on(1) or box.workers_on(2)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not box.workers_on(1) and not box.workers_on(2)


def test_a_frozen_rank_ends_the_job_within_the_timeout_and_is_killed(box, tmp_path):
    box("up", 2)
    job = box.start_on_hosts(tmp_path)
    wait_for_step(tmp_path, 10, job)
    frozen = box.workers_on(2)[-1]  # a rank on host 2 (or the shell that runs it)
    os.kill(int(frozen), 19)  # SIGSTOP
    seconds, status, output = ended(job)
    assert status != 0 and GLOO_TIMEOUT <= seconds < GLOO_TIMEOUT + 10, (seconds, output)
    assert f"killed: {HOSTS[1]} (pids " in last_line(output), output[-3000:]
    assert not box.workers_on(2)


def test_evaluate_across_two_hosts_equals_one_process(box, flat, tmp_path):
    box("up", 2)  # host 2 back if a fault test lost it
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    hosts = ",".join(f"{h}:2" for h in HOSTS)
    common = ["-m", "tf_largebatch.evaluate", f"--model={flat}/model.keras",
              "--per_worker_batch=24"]
    result = box("exec", 1, horovodrun, "-np", 4, "-H", hosts, "--gloo", sys.executable,
                 *common, f"--json={tmp_path}/hosts.json")
    assert "(4 processes)" in result.stdout and result.stdout.count("top-1 error  ") == 1
    alone = subprocess.run([sys.executable, *common, f"--json={tmp_path}/one.json"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert alone.returncode == 0, alone.stderr[-3000:]
    across, one = (json.loads((tmp_path / f"{name}.json").read_text())
                   for name in ("hosts", "one"))
    assert (across["processes"], one["processes"]) == (4, 1)
    # 256 validation images: 3 global steps of 96 (32 padded slots) against 11 of 24 (8).
    assert sum(c["images"] for c in across["per_class"]) == 256
    for key in ("val_loss", "val_top1_error", "val_top5_error"):
        assert across[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
    assert [c["top1_error"] for c in across["per_class"]] == pytest.approx(
        [c["top1_error"] for c in one["per_class"]], abs=1e-9)


# Multi-node SLURM in the box: slurmctld and a slurmd on host 1, a slurmd on host 2, one
# munged (its socket is a file, which both hosts see); ports inside the box's namespaces.


def sbatch_job(box, slurm_env, run_dir, output):
    """launchers/slurm.sbatch on 2 nodes × 2 tasks, submitted on host 1; its job id."""
    result = box("exec", 1, "sbatch", "--parsable", "--job-name=two-nodes", "--nodes=2",
                 "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0",
                 f"--output={output}", f"--chdir={ROOT}", ROOT / "launchers/slurm.sbatch",
                 *FAULTY[:-3], "--epochs=2", "--nosaved_model", "--log_every_step",
                 env=dict(slurm_env, RUN_DIR=str(run_dir)))
    return result.stdout.strip().split(";")[0]


def job_state(box, slurm_env, job):
    text = box("exec", 1, "scontrol", "-o", "show", "job", job, env=slurm_env).stdout
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def wait_until(condition, what):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"gave up after {WAIT} s waiting for {what}")


def test_slurm_on_two_nodes_requeued_mid_epoch_completes_with_the_straight_runs_numbers(
        box, tmp_path):
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch")
               if not shutil.which(t, path="/usr/sbin:/usr/bin:/sbin")]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run launchers/install_test_tools.sh")
    box("up", 2)
    # Not under pytest's tmp_path: munged wants every folder above its socket searchable.
    base = Path(tempfile.mkdtemp(prefix="tf_largebatch-slurm2-", dir="/tmp"))
    base.chmod(0o755)
    for name, mode in (("munge", 0o700), ("socket", 0o755), ("state", 0o700)):
        (base / name).mkdir(mode=mode)
    for host in HOSTS:
        (base / f"spool-{host}").mkdir()
    key = base / "munge/munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = base / "slurm.conf"
    conf.write_text(slurm_conf(base, [(HOSTS[0], "198.18.0.1", 2, 2000),
                                      (HOSTS[1], "198.18.0.2", 2, 2000)], "tlbboxtest"))
    slurm_env = {"SLURM_CONF": str(conf), "TF_CPP_MIN_LOG_LEVEL": "2",
                 "PATH": os.path.dirname(sys.executable) + ":/usr/sbin:" + os.environ["PATH"]}
    daemons = []

    def start(*command):
        daemons.append(subprocess.Popen(
            [str(c) for c in command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(box.env, **slurm_env), start_new_session=True, cwd=base))

    try:
        start("/usr/sbin/munged", "--foreground", f"--key-file={key}",
              f"--socket={base}/socket/munge.socket", f"--pid-file={base}/munge/pid",
              f"--log-file={base}/munge/log", f"--seed-file={base}/munge/seed")
        wait_until(lambda: (base / "socket/munge.socket").exists() or daemons[0].poll(),
                   "munged")
        assert daemons[0].poll() is None, (base / "munge/log").read_text()
        start(BOX_SH, "exec", "1", "slurmctld", "-D", "-i", "-f", conf)
        start(BOX_SH, "exec", "1", "slurmd", "-D", "-N", HOSTS[0], "-f", conf)
        start(BOX_SH, "exec", "2", "slurmd", "-D", "-N", HOSTS[1], "-f", conf)
        wait_until(lambda: box("exec", 1, "sinfo", "-h", "-N", "-o", "%t", env=slurm_env,
                               check=False).stdout.split() == ["idle", "idle"], "2 idle nodes")

        def finished(job):
            state = job_state(box, slurm_env, job)
            return state if state["JobState"] in ("COMPLETED", "FAILED", "CANCELLED") else None

        straight = tmp_path / "straight"
        job = sbatch_job(box, slurm_env, straight, tmp_path / "straight.out")
        assert wait_until(lambda: finished(job), "the straight job")["JobState"] == "COMPLETED"

        run_dir, output = tmp_path / "requeued", tmp_path / "requeued.out"
        job = sbatch_job(box, slurm_env, run_dir, output)
        wait_until(lambda: (run_dir / "steps.jsonl").exists() and len(
            (run_dir / "steps.jsonl").read_text().splitlines()) >= 11, "step 11")
        box("exec", 1, "scontrol", "requeue", job, env=slurm_env)  # mid-epoch 2
        wait_until(lambda: job_state(box, slurm_env, job)["JobState"] == "PENDING", "requeue")
        time.sleep(2)  # a credential of the requeue's second counts as revoked (test_slurm)
        box("exec", 1, "scontrol", "update", f"jobid={job}", "StartTime=now", env=slurm_env)
        info = wait_until(lambda: finished(job), "the requeued job")
    finally:
        for daemon in reversed(daemons):
            try:
                os.killpg(daemon.pid, 15)
            except ProcessLookupError:
                pass
        for daemon in daemons:
            daemon.wait(timeout=60)
        shutil.rmtree(base, ignore_errors=True)
    text = output.read_text()
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "1", "0:0"), (
        text[-4000:])
    assert text.count(": starting in ") == 2 and "preempted: SIGTERM received" in text
    assert f"on {HOSTS[0]},{HOSTS[1]} (4 tasks)" in text or (
        f"on {BOX}-h[1-2] (4 tasks)" in text), text[-3000:]
    flags = json.loads((run_dir / "flags.json").read_text())
    assert flags["hosts"] == HOSTS and flags["workers"] == 4
    got, want = epochs(run_dir), epochs(straight)
    assert [e["epoch"] for e in got] == [1, 2]  # every epoch once
    assert [s["step"] for s in steps(run_dir)] == list(range(16))  # every step once
    for a, b in zip(got, want, strict=True):
        for key in ("lr", "train_loss", "train_top1_error", "val_loss", "val_top1_error"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["epoch"], key)
    assert_same_run(run_dir, straight)
