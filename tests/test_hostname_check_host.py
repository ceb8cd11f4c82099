"""The hostname check on a host whose name really resolves to 127.0.1.1: a UTS namespace with
its own host name and a private mount namespace whose /etc/hosts is Debian's stock mapping,
the trainer (and evaluate) started there with the variables horovodrun gives a worker of a
2-host job."""

import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.integration

ACROSS_HOSTS = {"HOROVOD_CROSS_SIZE": "2", "HOROVOD_GLOO_RENDEZVOUS_ADDR": "198.18.0.1",
                "HOROVOD_GLOO_IFACE": "lo", "HOROVOD_HOSTNAME": "node1", "HOROVOD_RANK": "0",
                "HOROVOD_SIZE": "4", "HOROVOD_LOCAL_RANK": "0", "HOROVOD_LOCAL_SIZE": "2",
                "HOROVOD_CROSS_RANK": "0", "HOROVOD_GLOO_RENDEZVOUS_PORT": "9"}


def on_host(hosts_line, command, tmp_path):
    """Runs `command` as host `node1` whose /etc/hosts holds `hosts_line`."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give a process its own host name")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{hosts_line}\n")
    script = f'hostname node1 && mount --bind {hosts} /etc/hosts && exec "$@"'
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **ACROSS_HOSTS)
    return subprocess.run(["unshare", "--uts", "--mount", "sh", "-c", script, "sh", *command],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_debian_stock_hosts_file_gets_one_error_line_before_any_training(tmp_path):
    run_dir = tmp_path / "run"
    result = on_host("127.0.1.1 node1", [sys.executable, "-m", "tf_largebatch.train",
                                         "--flagfile=configs/demo.cfg", f"--log_dir={run_dir}"],
                     tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: this host's name 'node1' resolves to 127.0.1.1"), last
    assert "'127.0.0.1 node1'" in last  # the address of HOROVOD_GLOO_IFACE (here lo)
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()  # stopped before anything was written


def test_evaluate_on_that_host_gets_the_same_one_error_line(tmp_path):
    # The check runs before the model is read: the file need not exist.
    result = on_host("127.0.1.1 node1", [sys.executable, "-m", "tf_largebatch.evaluate",
                                         f"--model={tmp_path}/run/model.keras"], tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: this host's name 'node1' resolves to 127.0.1.1"), last
    assert "Traceback" not in result.stderr


def test_a_host_name_mapped_to_the_hosts_address_passes_the_check(tmp_path):
    code = "from tf_largebatch import distributed; print(distributed.loopback_hostname_problem())"
    result = on_host("198.18.0.2 node1", [sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "None"
