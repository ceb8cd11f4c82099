"""The install check names a horovod built without TensorFlow or Gloo, with the fix
(in-process, the build's answers given by hand)."""

import sys
import types

import horovod
import pytest

from tf_largebatch import install_check

pytestmark = pytest.mark.unit


def test_horovod_built_without_tensorflow_or_gloo_is_named():
    assert install_check.build_problems(None, True) == []
    missing = ImportError("Extension horovod.tensorflow has not been built")
    assert install_check.build_problems(missing, False) == [
        "horovod was built without TensorFlow (Extension horovod.tensorflow has not been "
        "built)."]
    assert install_check.build_problems(None, False) == [
        "horovod was built without Gloo (horovod.tensorflow.gloo_built() is False)."]


@pytest.mark.parametrize("lacks", ["Gloo", "TensorFlow"])
def test_main_fails_with_the_fix_when_the_build_lacks_tensorflow_or_gloo(monkeypatch, capsys,
                                                                         lacks):
    # A horovod whose TensorFlow extension imports but lacks Gloo, or one whose extension
    # does not import at all (the module None in sys.modules: `import` raises ImportError).
    fake = types.SimpleNamespace(gloo_built=lambda: False) if lacks == "Gloo" else None
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", fake)
    # `import horovod.tensorflow as hvd` reads the attribute, once another test imported it.
    monkeypatch.setattr(horovod, "tensorflow", fake, raising=False)
    assert install_check.main() == 1
    err = capsys.readouterr().err
    assert f"built without {lacks}" in err
    assert "launchers/install.sh" in err
