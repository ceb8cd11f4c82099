#!/usr/bin/env bash
# The system tools the test suite needs besides .venv (make test runs this before pytest):
# SLURM and munge for tests/test_slurm.py (a real one-node cluster, started by the test
# itself), strace for the tests that watch system calls, openssh-server for the hosts of
# launchers/cluster_box.sh (tests/test_multi_host.py; the test starts its own sshd). Idempotent: does nothing when
# every tool is present. Installs with apt-get when run as root on Debian/Ubuntu; otherwise
# stops with the exact command to run.
#
#   launchers/install_test_tools.sh
set -euo pipefail
PACKAGES="slurm-wlm munge strace openssh-server"
# Debian puts the daemons in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for tool in sinfo sbatch scontrol slurmctld slurmd munged strace sshd; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0

command="apt-get install -y $PACKAGES"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_test_tools.sh: error: ${missing[*]} not found; the tests need them. Run:" >&2
  echo "  sudo $command" >&2
  echo "(or the equivalent for your system: SLURM with slurmctld and slurmd, munge, strace, sshd)" >&2
  exit 1
fi
echo "install_test_tools.sh: ${missing[*]} not found: $command" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The package lists may be missing or stale (a fresh container): update them once on failure.
if ! apt-get install -y -qq $PACKAGES > "$log" 2>&1; then
  apt-get update -qq > "$log" 2>&1 && apt-get install -y -qq $PACKAGES > "$log" 2>&1 ||
    { cat "$log" >&2; echo "install_test_tools.sh: error: $command failed (above)" >&2; exit 1; }
fi
# Debian's packages start munge's, SLURM's and ssh's services where systemd runs; the tests
# start their own daemons on their own configuration, so nothing else is needed here.
for tool in "${missing[@]}"; do
  command -v "$tool" >/dev/null 2>&1 ||
    { echo "install_test_tools.sh: error: $tool still missing after $command" >&2; exit 1; }
done
echo "install_test_tools.sh: installed $PACKAGES" >&2
