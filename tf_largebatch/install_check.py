"""Checks that the environment can run tf_largebatch: `python -m tf_largebatch.install_check`.

Exits non-zero with a message naming what is missing and how to fix it.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

FIX = "Rebuild it with: rm -rf .venv && launchers/install.sh"


def check_build_output(text):
    """Returns the problems in `horovodrun --check-build` output (an empty list when fine)."""
    problems = []
    for name in ("TensorFlow", "Gloo"):
        if not re.search(r"\[X\]\s+" + name + r"\b", text):
            problems.append(
                f"horovod was built without {name} (horovodrun --check-build has no [X] {name})."
            )
    return problems


def main():
    problems = []
    try:
        import horovod
        import tensorflow as tf

        import tf_largebatch  # noqa: F401
    except ImportError as err:
        problems.append(f"cannot import {err.name}: {err}.")
    else:
        beside_python = Path(sys.executable).with_name("horovodrun")
        horovodrun = str(beside_python) if beside_python.exists() else shutil.which("horovodrun")
        if horovodrun is None:
            problems.append("horovodrun is not installed beside this Python nor on PATH.")
        else:
            out = subprocess.run([horovodrun, "--check-build"], capture_output=True, text=True)
            problems += check_build_output(out.stdout + out.stderr)
        if not problems:
            print(f"ok: TensorFlow {tf.__version__}, horovod {horovod.__version__} "
                  "with TensorFlow and Gloo")
    for problem in problems:
        print(f"install_check: error: {problem}", file=sys.stderr)
    if problems:
        print(f"install_check: {FIX}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
