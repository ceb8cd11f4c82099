"""The Kubernetes MPIJob manifest: its launcher retries a failed job with --resume=auto, and
mpirun's kill timeouts fit the pod's grace period (read from the YAML, in-process)."""

import pytest
from helpers import ROOT

pytestmark = pytest.mark.unit

MANIFEST = ROOT / "launchers/k8s-mpijob.yaml"


def launcher_command():
    """The Launcher container's command, from the manifest (PyYAML when installed)."""
    text = MANIFEST.read_text()
    try:
        import yaml
    except ImportError:  # the one list this test needs, read by hand
        lines = text.split("    Launcher:", 1)[1].splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip() == "command:")
        indent = len(lines[start]) - len(lines[start].lstrip())
        command = []
        for line in lines[start + 1:]:
            if not line.strip().startswith("- ") or len(line) - len(line.lstrip()) <= indent:
                break
            command.append(line.strip()[2:].strip().strip('"'))
        return command
    spec = yaml.safe_load(text)["spec"]["mpiReplicaSpecs"]["Launcher"]
    return spec["template"]["spec"]["containers"][0]["command"]


def manifest():
    import yaml  # PyYAML: a dependency of horovod
    return yaml.safe_load(MANIFEST.read_text())


def test_the_mpijob_retries_a_failed_launcher_with_resume_auto():
    spec = manifest()["spec"]
    launcher = spec["mpiReplicaSpecs"]["Launcher"]
    # Kubernetes restarts the launcher's container when mpirun exits non-zero, as it does when
    # a rank is preempted (exit 75), up to backoffLimit times.
    assert launcher["restartPolicy"] == "OnFailure"
    assert spec["runPolicy"]["backoffLimit"] >= 3
    command = launcher_command()
    assert command == launcher["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "mpirun" and "--resume=auto" in command
    assert any(arg.startswith("--log_dir=/runs/") for arg in command)  # the shared volume
    # mpirun waits odls_base_sigkill_timeout before its SIGTERM to the ranks and as long
    # again before SIGKILL: both must fit in the pod's grace period.
    sigkill_timeout = int(command[command.index("odls_base_sigkill_timeout") + 1])
    assert 2 * sigkill_timeout < launcher["template"]["spec"]["terminationGracePeriodSeconds"]
