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
# (--noresume after it to refuse that). When the job fails, the last line names the hosts
# that no longer answer ssh (a host lost, or cut off) and their ranks.
#
# Bounds on a fault (docs/trainer.md, "Network faults"; measured with launchers/cluster_box.sh):
# HOROVOD_GLOO_TIMEOUT_SECONDS (Gloo's own default, 30, set here so it is visible) is how
#   long a silent peer (a cut link, a frozen rank) holds the job before it ends, and how long
#   the ranks may take to reach hvd.init() together.
# SSH_ALIVE_INTERVAL (10 s; 3 missed): horovodrun's ssh sets no keepalive, so the session to
#   a partitioned host lingered for hours; with it, the session ended 38 s after a cut (box).
set -euo pipefail
cd "$(dirname "$0")/.."
hostfile=${1:?usage: launchers/horovodrun_hosts.sh HOSTFILE [trainer flags...]}; shift
[ -r "$hostfile" ] || { echo "horovodrun_hosts.sh: error: cannot read HOSTFILE $hostfile" >&2; exit 2; }
np=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^slots=/) s += substr($i, 7)} END {print s}' "$hostfile")
export HOROVOD_GLOO_TIMEOUT_SECONDS=${HOROVOD_GLOO_TIMEOUT_SECONDS:-30}
# Marks this job's workers (horovodrun passes the environment to every rank), so that a
# failed job's leftovers can be found on each host and killed.
export TF_LARGEBATCH_JOB=${TF_LARGEBATCH_JOB:-$(hostname)-$$-$(date +%s)}

# horovodrun runs plain `ssh`: a wrapper first on the PATH adds the keepalive.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '#!/bin/sh\nexec %s -o ServerAliveInterval=%s -o ServerAliveCountMax=3 "$@"\n' \
  "$(command -v ssh)" "${SSH_ALIVE_INTERVAL:-10}" > "$work/ssh"
chmod +x "$work/ssh"

# HIERARCHICAL=1 adds --hierarchical-allreduce (MPI + NCCL builds, several hosts; the
# trainer says when it has no effect).
PATH="$work:$PATH" .venv/bin/horovodrun -np "$np" -hostfile "$hostfile" \
  ${HIERARCHICAL:+--hierarchical-allreduce} \
  .venv/bin/python -m tf_largebatch.train --resume=auto "$@" > >(tee "$work/out") &
job=$!
trap 'kill -TERM $job 2>/dev/null || true' TERM INT  # a scheduler's signal, passed on
status=0
while kill -0 "$job" 2>/dev/null; do wait "$job" && status=0 || status=$?; done
wait  # tee's last lines
[ "$status" -eq 0 ] && exit 0

# Which hosts failed: those that no longer answer ssh (5 s each), with their ranks
# (horovodrun gives each host its slots in HOSTFILE order). On the others, this job's
# workers still left (a frozen one: horovodrun ends only its own ssh clients) are killed.
# (Only processes of the host's own network namespace: the hosts of launchers/cluster_box.sh
# share one process table.)
leftovers="net=\$(readlink /proc/self/ns/net); for p in /proc/[0-9]*; do
  grep -qzx TF_LARGEBATCH_JOB=$TF_LARGEBATCH_JOB \$p/environ 2>/dev/null &&
  grep -qa tf_largebatch[.]train \$p/cmdline && [ \$(readlink \$p/ns/net) = \$net ] &&
  kill -9 \${p#/proc/} && echo \${p#/proc/}; done; true"
lost="" stuck=""
while read -r host first last; do
  if pids=$("$work/ssh" -o ConnectTimeout=5 -o BatchMode=yes -n "$host" "$leftovers" 2> /dev/null)
  then [ -z "$pids" ] || stuck+="${stuck:+, }$host (pids $(echo $pids | tr ' ' ,))"
  else lost+="${lost:+, }$host (ranks $first-$last)"
  fi
done < <(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^slots=/) n = substr($i, 7);
               print $1, r, r + n - 1; r += n}' "$hostfile")
why=${lost:+not answering ssh: $lost}
why+=${stuck:+${why:+; }workers still running after the job ended, killed: $stuck}
next="Run the same command"
[ -z "$lost" ] || next="Take the hosts that do not answer out of $hostfile (or bring them back), then run the same command"
echo "horovodrun_hosts.sh: the job failed (exit $status); ${why:-every host answers ssh and no worker was left: the lines of the workers above say why}." \
  "$next: --resume=auto continues from the last committed checkpoint." >&2
exit "$status"
