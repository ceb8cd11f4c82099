#!/usr/bin/env bash
# The CIFAR-10 reproduction (docs/results.md): runs the given configs one after the other,
# resuming any that were interrupted, then copies each run's logs (not its checkpoints)
# to docs/results/<protocol>/<config>/ and redraws the figure.
#
#   launchers/cifar10_experiments.sh cifar10_cpu_kn256_baseline cifar10_cpu_kn8192_gradual ...
#   NP=2 launchers/cifar10_experiments.sh cifar10_cpu_kn256_horovod2   # under horovodrun -np 2
#   TRAINER=tf_largebatch.portable_train PYTHON=python3 RESULTS=docs/results/cifar10_gpu \
#     launchers/cifar10_experiments.sh cifar10_gpu_kn256_baseline ...   # JAX host, no TensorFlow
#
# DATA_DIR (default ~/.cache/tf_largebatch/cifar10) is filled from
# ../shared/data/cifar10-jpeg.tar.gz (or CIFAR_TAR) when empty. Run folders (with their
# checkpoints) go to RUNS (default ~/.cache/tf_largebatch/runs), outside the work tree, so a
# later checkout on the same machine resumes an interrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-$HOME/.cache/tf_largebatch/cifar10}
CIFAR_TAR=${CIFAR_TAR:-../shared/data/cifar10-jpeg.tar.gz}
RUNS=${RUNS:-$HOME/.cache/tf_largebatch/runs}
RESULTS=${RESULTS:-docs/results/cifar10_cpu}
NP=${NP:-1}
PYTHON=${PYTHON:-.venv/bin/python}
TRAINER=${TRAINER:-tf_largebatch.train}
launch=("$PYTHON")
[ "$NP" -gt 1 ] && launch=(.venv/bin/horovodrun -np "$NP" -H "localhost:$NP" --gloo "$PYTHON")
if [ ! -d "$DATA_DIR/train" ]; then
  [ -f "$CIFAR_TAR" ] || { echo "no $DATA_DIR/train and no $CIFAR_TAR: set DATA_DIR or CIFAR_TAR" >&2; exit 1; }
  mkdir -p "$(dirname "$DATA_DIR")"
  tar -xzf "$CIFAR_TAR" -C "$(dirname "$DATA_DIR")"
fi
for name in "$@"; do
  start=$(date +%s)
  # --resume=auto: continues a run that was interrupted, starts one that never ran (and
  # refuses folders that hold another run).
  "${launch[@]}" -m "$TRAINER" --flagfile="configs/$name.cfg" --data_dir="$DATA_DIR" \
    --log_dir="$RUNS/$name" --resume=auto || echo "$name stopped with status $?" >&2
  echo "$name: $(( $(date +%s) - start )) s" >&2
  mkdir -p "$RESULTS/$name"
  cp "$RUNS/$name/metrics.jsonl" "$RUNS/$name/flags.json" "$RESULTS/$name/" 2>/dev/null || true
done
