#!/usr/bin/env bash
# Sets up ./.venv for tf_largebatch: TensorFlow first, then horovod built from
# source against it (pip cannot build horovod in an isolated environment), then
# this package. Idempotent: a second run with the same inputs does nothing.
#
#   launchers/install.sh            # CPU host: tensorflow-cpu, Gloo
#   TF_EXTRA=gpu launchers/install.sh   # GPU host: tensorflow[and-cuda], NCCL
#
# Environment: VENV (default .venv), PYTHON (default python3.11),
# TF_EXTRA (cpu | gpu; default gpu when nvidia-smi works, else cpu),
# HOROVOD_WITH_MPI=1 / HOROVOD_WITHOUT_MPI=1 (default: MPI when mpicxx compiles against mpi.h).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
HOROVOD_VERSION=0.28.1

die() { echo "install.sh: error: $*" >&2; exit 1; }

# 1. The tools horovod's build needs, each named with the command that installs it.
command -v "$PYTHON" >/dev/null 2>&1 ||
  die "$PYTHON not found. Install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv python3.11-dev) or set PYTHON=/path/to/python3.11."
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
  die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); tf_largebatch needs 3.11 (TensorFlow 2.16-2.18 + horovod 0.28.1). Set PYTHON=/path/to/python3.11."
for tool in gcc g++ cmake make; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' not found; horovod compiles from source. Debian: apt-get install -y build-essential cmake"
done
"$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
  die "Python headers (Python.h) not found. Debian: apt-get install -y python3.11-dev"

if [ -z "${TF_EXTRA:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TF_EXTRA=gpu; else TF_EXTRA=cpu; fi
fi
case "$TF_EXTRA" in cpu|gpu) ;; *) die "TF_EXTRA must be cpu or gpu, not '$TF_EXTRA'";; esac

# 2. Skip everything when this exact setup is already in place.
stamp="$VENV/.tf_largebatch-installed"
want="$(cat setup.cfg launchers/install.sh | sha256sum | cut -c1-16)-$TF_EXTRA"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -m tf_largebatch.install_check >/dev/null 2>&1; then
  echo "install.sh: $VENV is up to date (delete $stamp to force a reinstall)."
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" || die "could not create $VENV. Debian: apt-get install -y python3.11-venv"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip>=24" setuptools wheel

# 3. TensorFlow (and everything else from setup.cfg) before horovod.
tf_req=$("$VENV/bin/python" - "$TF_EXTRA" <<'PY'
import configparser, sys
cfg = configparser.ConfigParser(); cfg.read("setup.cfg")
print(" ".join(l.strip() for l in cfg["options.extras_require"][sys.argv[1]].splitlines() if l.strip()))
PY
)
echo "install.sh: installing $tf_req"
"${PIP[@]}" install -q $tf_req

# 4. horovod from source, against the TensorFlow just installed.
if ! "$VENV/bin/python" -c "import horovod, horovod.tensorflow as h; assert horovod.__version__ == '$HOROVOD_VERSION'; assert h.gloo_built()" >/dev/null 2>&1; then
  export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
  # MPI only where it can be compiled against: Debian's openmpi-bin (a dependency of other
  # packages) brings mpicxx without mpi.h, and horovod's cmake then fails.
  if [ -z "${HOROVOD_WITH_MPI:-}${HOROVOD_WITHOUT_MPI:-}" ]; then
    if command -v mpicxx >/dev/null 2>&1 &&
       printf '#include <mpi.h>\nint main() { return 0; }\n' | mpicxx -x c++ - -o /dev/null >/dev/null 2>&1; then
      export HOROVOD_WITH_MPI=1
    else
      export HOROVOD_WITHOUT_MPI=1
      command -v mpicxx >/dev/null 2>&1 &&
        echo "install.sh: mpicxx cannot compile against mpi.h (Debian: apt-get install -y libopenmpi-dev); building horovod without MPI (Gloo only)"
    fi
  fi
  [ "$TF_EXTRA" = gpu ] && export HOROVOD_GPU_OPERATIONS=NCCL
  echo "install.sh: building horovod==$HOROVOD_VERSION from source (about 4 minutes on 2 cores)"
  PATH="$VENV/bin:$PATH" "${PIP[@]}" install -q --no-build-isolation --no-cache-dir "horovod==$HOROVOD_VERSION" ||
    die "horovod==$HOROVOD_VERSION failed to build; see pip's log above (missing compiler, cmake or headers are the usual cause)."
fi

# 5. This package, with the test tools.
"${PIP[@]}" install -q -e ".[$TF_EXTRA,test]"

# 6. Check the result: horovod must have TensorFlow and Gloo, the package must import.
"$VENV/bin/python" -m tf_largebatch.install_check || die "the environment in $VENV is broken (see above)."
echo "$want" > "$stamp"
echo "install.sh: $VENV is ready."
