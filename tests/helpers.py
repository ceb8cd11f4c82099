"""Running commands under real `horovodrun -np 2` (Gloo, localhost)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def horovodrun(args, np=2, timeout=900, check=True):
    """Runs `horovodrun -np <np> python <args>`; returns the CompletedProcess."""
    horovodrun = Path(sys.executable).with_name("horovodrun")
    cmd = [str(horovodrun), "-np", str(np), "-H", f"localhost:{np}", "--gloo",
           sys.executable, *map(str, args)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result
