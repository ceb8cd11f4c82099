"""The install check reads `horovodrun --check-build`: a horovod without TensorFlow or Gloo is
reported, with the fix (hand-written outputs, in-process)."""

import subprocess

import pytest

from tf_largebatch import install_check

pytestmark = pytest.mark.unit

GOOD = """Horovod v0.28.1:

Available Frameworks:
    [X] TensorFlow
    [ ] PyTorch
    [ ] MXNet

Available Controllers:
    [ ] MPI
    [X] Gloo
"""


def test_horovod_built_without_tensorflow_or_gloo_is_named():
    assert install_check.check_build_output(GOOD) == []
    no_tf = GOOD.replace("[X] TensorFlow", "[ ] TensorFlow")
    assert install_check.check_build_output(no_tf) == [
        "horovod was built without TensorFlow (horovodrun --check-build has no [X] TensorFlow)."]
    no_gloo = GOOD.replace("[X] Gloo", "[ ] Gloo")
    assert "without Gloo" in install_check.check_build_output(no_gloo)[0]


def test_main_fails_with_the_fix_when_the_build_lacks_tensorflow(monkeypatch, capsys):
    fake = subprocess.CompletedProcess([], 0, GOOD.replace("[X] TensorFlow", "[ ] TensorFlow"), "")
    monkeypatch.setattr(install_check.subprocess, "run", lambda *a, **k: fake)
    assert install_check.main() == 1
    err = capsys.readouterr().err
    assert "built without TensorFlow" in err and "launchers/install.sh" in err
