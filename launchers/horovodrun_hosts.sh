#!/usr/bin/env bash
# Several servers with horovodrun over SSH (passwordless SSH between them, the same
# checkout and .venv at the same path on each).
#
#   launchers/horovodrun_hosts.sh HOSTFILE [trainer flags...]
#   e.g. launchers/horovodrun_hosts.sh hosts --flagfile=configs/imagenet_kn8k_gradual.cfg \
#          --data_dir=/data/imagenet-tfrecords
#
# HOSTFILE lines: "server1 slots=8". -np is the total slot count. --resume=auto: the same
# command starts the run and, after an interruption, continues it from its newest checkpoint
# (--noresume after it to refuse that).
set -euo pipefail
cd "$(dirname "$0")/.."
hostfile=$1; shift
np=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^slots=/) s += substr($i, 7)} END {print s}' "$hostfile")
# HIERARCHICAL=1 adds --hierarchical-allreduce (MPI + NCCL builds, several hosts; the
# trainer says when it has no effect).
exec .venv/bin/horovodrun -np "$np" -hostfile "$hostfile" \
  ${HIERARCHICAL:+--hierarchical-allreduce} \
  .venv/bin/python -m tf_largebatch.train --resume=auto "$@"
