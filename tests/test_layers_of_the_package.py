"""The package's layers, checked on every import statement (function-level ones included):

    recipe (schedules, optimizers, models, layers, callbacks) and data
      → experiment core (tf_largebatch/experiment/)
        → trainers (train: Horovod/TensorFlow; portable_train: one device, any backend)
          → CLIs (curves, plan, install_check, evaluate)

An arrow only points down the list; `distributed` (the Horovod bridge) is used by the
Horovod trainer only, so the core and the portable trainer stay free of Horovod. One
exception: `callbacks.MetricAverage`, for a user's own fit under horovodrun, defaults to the
bridge's weighted mean (imported inside the call, never when the core passes its own). `faults`
(the crash tests' kill hook) is a leaf that every layer may use."""

import ast

import pytest
from helpers import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "tf_largebatch"
RECIPE = ["schedules", "optimizers", "models", "layers", "callbacks", "losses"]
TRAINERS = ["train", "portable_train"]
CLIS = ["curves", "plan", "install_check", "evaluate"]


def imports_of(path):
    """Every tf_largebatch module `path` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name.removeprefix("tf_largebatch.") for name in found
            if name.startswith("tf_largebatch.")}


def top(name):
    """'experiment.runner' → 'experiment'; 'data.layout' → 'data'; 'callbacks' → 'callbacks'."""
    return name.split(".")[0]


@pytest.mark.parametrize("module", RECIPE)
def test_recipe_modules_import_only_the_recipe(module):
    tops = {top(name) for name in imports_of(PACKAGE / f"{module}.py")}
    allowed = set(RECIPE) | ({"distributed"} if module == "callbacks" else set())
    assert tops <= allowed, tops


def test_the_experiment_core_sits_below_the_trainers_and_clis():
    for path in sorted((PACKAGE / "experiment").glob("*.py")):
        tops = {top(name) for name in imports_of(path)}
        assert not tops & {*TRAINERS, *CLIS, "distributed"}, (path.name, tops)


def test_the_experiment_core_reads_no_flag_but_the_config_it_is_given():
    # Only the command line (flags: definitions and from_flags; cli, flagfiles: parsing and
    # --help) touches flags; the rest takes a config.
    for path in sorted((PACKAGE / "experiment").glob("*.py")):
        if path.name in ("flags.py", "cli.py", "flagfiles.py"):
            continue
        tree = ast.parse(path.read_text())
        absl_flags = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                      and node.module == "absl" and any(a.name == "flags" for a in node.names)
                      or isinstance(node, ast.Import) and any(a.name == "absl.flags"
                                                              for a in node.names)]
        assert not absl_flags, path.name
        assert "experiment.flags" not in imports_of(path), path.name


def test_the_data_package_does_not_reach_up():
    for path in sorted((PACKAGE / "data").glob("*.py")):
        tops = {top(name) for name in imports_of(path)}
        assert tops <= {"data", "faults"}, (path.name, tops)


def test_the_fault_hook_is_a_leaf():
    assert imports_of(PACKAGE / "faults.py") == set()


def test_the_portable_trainer_stands_beside_the_horovod_one_not_on_it():
    tops = {top(name) for name in imports_of(PACKAGE / "portable_train.py")}
    assert "train" not in tops and "distributed" not in tops, tops


def test_the_curves_cli_is_not_imported_by_anything_but_tests():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "curves.py":
            assert "curves" not in imports_of(path), path


def module_graph():
    """{module: the package's modules it imports}, over every import statement (function-level
    ones included); `from a import b` counts as importing module a.b where that is a module.
    A submodule's import of its own package (its __init__) is not an edge: Python has begun
    that package already."""
    modules = {".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(
        ".__init__").removesuffix("__init__"): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def circles(graph):
    """The import circles in `graph`, each as a list of modules [a, b, ..., a]."""
    found, done = [], set()

    def visit(node, path):
        if node in path:
            found.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, path + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_the_circle_finder_finds_a_circle_and_no_false_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_module_of_the_package_is_in_an_import_circle():
    assert circles(module_graph()) == []
