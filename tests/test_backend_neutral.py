"""The recipe's modules use only `keras` and `keras.ops`, so they run on Keras's JAX backend
too (the GPU protocol uses it where TensorFlow is not installed)."""

import ast

import pytest
from helpers import ROOT

pytestmark = pytest.mark.unit

KERAS_ONLY = ["callbacks", "layers", "losses", "models", "optimizers", "schedules"]


@pytest.mark.parametrize("module", KERAS_ONLY)
def test_module_imports_no_tensorflow_or_horovod(module):
    tree = ast.parse((ROOT / "tf_largebatch" / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    allowed = {"keras", "logging", "math", "os", "re", "tf_largebatch", "warnings"}
    assert imported <= allowed, imported


def top_level_imports(module):
    """Modules imported when `module` is imported (statements outside functions and classes)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists()}
    return found


@pytest.mark.parametrize("entry", ["tf_largebatch.portable_train", "tf_largebatch.data.arrays",
                                   "tf_largebatch.experiment.checkpointing",
                                   "tf_largebatch.experiment.run_log",
                                   "tf_largebatch.experiment.runner"])
def test_the_portable_trainers_modules_load_without_tensorflow_or_horovod(entry):
    """What KERAS_BACKEND=jax loads on a GPU host without TensorFlow (their TensorFlow-only
    parts, `Checkpointer` and Horovod averaging, import it inside the function that needs it)."""
    seen, todo, external = set(), [entry], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in top_level_imports(module):
            if name.startswith("tf_largebatch"):
                todo.append(name)
            else:
                external.add(name.split(".")[0])
    if entry == "tf_largebatch.portable_train":  # the walk follows the package's own imports
        assert "tf_largebatch.experiment.runner" in seen
        assert "tf_largebatch.train" not in seen  # the Horovod trainer is not underneath it
    assert not external & {"tensorflow", "horovod", "tensorflow_datasets"}, external
