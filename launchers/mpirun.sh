#!/usr/bin/env bash
# Open MPI launch (horovod must have been built with MPI: launchers/install.sh does so when
# mpicxx is on the PATH). One process per GPU, bound to its socket.
#
#   launchers/mpirun.sh NP HOSTS [trainer flags...]      HOSTS like "server1:8,server2:8"
set -euo pipefail
cd "$(dirname "$0")/.."
np=$1 hosts=$2; shift 2
exec mpirun -np "$np" -H "$hosts" \
  -bind-to none -map-by slot \
  -x NCCL_DEBUG=WARN -x LD_LIBRARY_PATH -x PATH \
  -x HOROVOD_HIERARCHICAL_ALLREDUCE -x HOROVOD_FUSION_THRESHOLD -x HOROVOD_CYCLE_TIME \
  -mca pml ob1 -mca btl ^openib \
  "$PWD/.venv/bin/python" -m tf_largebatch.train "$@"
