"""The install check on this environment's real horovod build (a subprocess that imports
TensorFlow); its reading of other builds is in test_install_check_output.py."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_real_environment_passes():
    result = subprocess.run([sys.executable, "-m", "tf_largebatch.install_check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "with TensorFlow and Gloo" in result.stdout
