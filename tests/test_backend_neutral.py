"""The recipe's modules use only `keras` and `keras.ops`, so they run on Keras's JAX backend
too (the GPU protocol uses it where TensorFlow is not installed)."""

import ast

import pytest
from helpers import ROOT

KERAS_ONLY = ["callbacks", "layers", "models", "optimizers", "schedules"]


@pytest.mark.parametrize("module", KERAS_ONLY)
def test_module_imports_no_tensorflow_or_horovod(module):
    tree = ast.parse((ROOT / "tf_largebatch" / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"keras", "logging", "math", "tf_largebatch"}, imported
