"""Checks that the environment can run tf_largebatch: `python -m tf_largebatch.install_check`.

Exits non-zero with a message naming what is missing and how to fix it.
"""

import shutil
import sys
from pathlib import Path

FIX = "Rebuild it with: rm -rf .venv && launchers/install.sh"


def build_problems(extension_error, gloo_built):
    """The problems of horovod's build: its TensorFlow extension failed to import
    (`extension_error`, None when it imported) or it has no Gloo controller."""
    if extension_error is not None:
        return [f"horovod was built without TensorFlow ({extension_error})."]
    return [] if gloo_built else ["horovod was built without Gloo (horovod.tensorflow."
                                  "gloo_built() is False)."]


def main():
    problems = []
    try:
        import horovod
        import tensorflow as tf

        import tf_largebatch  # noqa: F401
    except ImportError as err:
        problems.append(f"cannot import {err.name}: {err}.")
    else:
        # What `horovodrun --check-build` reports, in this process: that command imports
        # TensorFlow again in a fresh process for each framework and controller (≈ 30 s here).
        try:
            import horovod.tensorflow as hvd

            extension_error, gloo = None, hvd.gloo_built()
        except ImportError as err:
            extension_error, gloo = err, False
        problems += build_problems(extension_error, gloo)
        beside_python = Path(sys.executable).with_name("horovodrun")
        if not beside_python.exists() and shutil.which("horovodrun") is None:
            problems.append("horovodrun is not installed beside this Python nor on PATH.")
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
