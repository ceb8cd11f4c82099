#!/usr/bin/env bash
# Open MPI launch (horovod must have been built with MPI: launchers/install.sh does so when
# mpicxx is on the PATH). One process per GPU, bound to its socket.
#
#   launchers/mpirun.sh NP HOSTS [trainer flags...]      HOSTS like "server1:8,server2:8"
#
# --resume=auto: the same command starts the run and, after an interruption, continues it
# from its newest checkpoint. On SIGTERM, mpirun (Open MPI 4.1) waits
# odls_base_sigkill_timeout seconds, sends SIGTERM to every rank, waits as long again, then
# SIGKILL: SIGKILL_TIMEOUT (default 30) must cover a step and a save; the default of 1 s
# would kill the ranks before their checkpoint is written.
set -euo pipefail
cd "$(dirname "$0")/.."
np=$1 hosts=$2; shift 2
exec mpirun -np "$np" -H "$hosts" \
  -bind-to none -map-by slot \
  -x NCCL_DEBUG=WARN -x LD_LIBRARY_PATH -x PATH \
  -x HOROVOD_HIERARCHICAL_ALLREDUCE -x HOROVOD_FUSION_THRESHOLD -x HOROVOD_CYCLE_TIME \
  -mca pml ob1 -mca btl ^openib -mca odls_base_sigkill_timeout "${SIGKILL_TIMEOUT:-30}" \
  "$PWD/.venv/bin/python" -m tf_largebatch.train --resume=auto "$@"
