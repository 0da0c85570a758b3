"""The package's shape, checked: modules import one way (no circles, layers that point down),
reading a study or a results folder loads no JAX, every refusal is one error family, and no
function in `src/` is longer than a screen."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import transferlab
from transferlab import errors

PACKAGE = Path(transferlab.__file__).parent
MAX_FUNCTION_LINES = 80

# Each module's layer; a module imports only from its own layer or those below (the data
# flow: study file → config → plan → executors and the engine → store → statistics and
# report → the runner → the API and the CLI).
LAYERS = {
    0: ["errors", "words", "canonical", "_lazy", "_version", "_backend", "registry", "interrupts", "folder"],
    1: ["scores", "initializers", "layers", "feature_maps", "kernels", "objectives", "optimizers", "orders", "data.read",
        "data.labels", "data.images", "data.select", "data.split", "data.encode", "data.scale", "data.build", "tasks", "heads",
        "models", "strategies"],
    2: ["config"],
    3: ["datasets", "plan", "loading", "sweep"],
    4: ["engine", "transferability", "shards", "executors", "estimate", "throughput"],
    5: ["curves", "store", "migrate", "writer"],
    6: ["stats", "predictability", "speed", "verdict", "plots", "curve_table", "frames", "matrix_report"],
    7: ["reports", "sweep_report", "compare"],
    8: ["study"],
    9: ["api", "", "commands", "cli"],
}
LAYER_OF = {f"transferlab.{name}".rstrip("."): rank for rank, names in LAYERS.items() for name in names}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("transferlab",) + parts).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """Every transferlab module `name` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transferlab"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("transferlab"))
    return {module for module in found if module in modules and module != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer():
    assert set(_modules()) == set(LAYER_OF), "add the new module to LAYERS"


def test_imports_point_down_the_layers_and_form_no_circle():
    graph = _graph()
    upward = [(module, imported) for module, imports in graph.items() for imported in imports
              if LAYER_OF[imported] > LAYER_OF[module]]
    assert not upward, upward
    state: dict[str, str] = {}

    def visit(module, trail):
        state[module] = "open"
        for imported in graph[module]:
            if state.get(imported) == "open":
                raise AssertionError(f"import circle: {' → '.join(trail + [module, imported])}")
            if imported not in state:
                visit(imported, trail + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


def test_the_report_and_compare_never_reach_the_runner():
    graph = _graph()
    for start in ("transferlab.reports", "transferlab.compare", "transferlab.frames"):
        reached, todo = set(), [start]
        while todo:
            for imported in graph[todo.pop()] - reached:
                reached.add(imported)
                todo.append(imported)
        assert not reached & {"transferlab.study", "transferlab.executors", "transferlab.engine"}, (start, reached)


def test_reading_a_study_loads_no_jax(tmp_path):
    """The schema is pure and loading a study (its data too) needs no JAX: only training does."""
    script = """
import sys
import transferlab
from transferlab import config, loading
study = loading.study_from_dict({"name": "x", "source": {"kind": "blobs", "seed": 1},
                                  "target": {"kind": "sklearn", "dataset": "iris", "features": ["petal length (cm)", "petal width (cm)"]},
                                  "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}]})
assert study.strategy_values()[1].freeze == 1
heavy = sorted(m for m in ("jax", "keras", "jaxlib") if m in sys.modules)
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_report_export_and_results_load_neither_jax_nor_keras(tmp_path, small_study_dict):
    """Reading a finished folder needs the report's stack only: the CLI's configuration of
    the process (compile cache included) must not import JAX, and nothing may import Keras."""
    from transferlab import study
    from transferlab.loading import study_from_dict

    out = tmp_path / "out"
    study.run_study(study_from_dict(small_study_dict), out)
    script = f"""
import sys
from transferlab.commands import app
for argv in (["report", {str(out)!r}], ["export", {str(out)!r}, "--out", {str(tmp_path / "exported")!r}]):
    try:
        app(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, None), argv
import transferlab
assert len(transferlab.results({str(out)!r})["runs"]) == 17
heavy = sorted(m for m in ("jax", "jaxlib", "keras", "sklearn") if m in sys.modules)
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _exception_classes():
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                yield path, node.name


def test_every_refusal_is_a_transferlab_error():
    import importlib

    for path, name in _exception_classes():
        module = importlib.import_module(".".join(("transferlab",) + path.relative_to(PACKAGE).with_suffix("").parts))
        cls = getattr(module, name)
        if issubclass(cls, BaseException):
            assert issubclass(cls, errors.TransferlabError), f"{module.__name__}.{name}"
    public = [getattr(errors, name) for name in dir(errors) if name.endswith("Error")]
    assert all(cls.__doc__ for cls in public)
    assert errors.StrategyError("x", "freeze").field == "freeze" == errors.StrategyError("x", "freeze").parameter


def test_no_function_is_longer_than_a_screen():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def test_the_public_api_is_documented_and_typed():
    for name in transferlab.__all__:
        thing = getattr(transferlab, name)
        if name.startswith("__"):
            continue
        assert inspect.getdoc(thing), name
        if inspect.isfunction(thing):
            signature = inspect.signature(thing)
            assert signature.return_annotation is not inspect.Signature.empty, name
            assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()), name


PUBLIC_MODULES = ("api.py", "errors.py", "registry.py")


def test_ruffs_docstring_and_annotation_rules_pass_on_the_public_api():
    """numpy-style docstrings (Parameters, Returns, Raises, Examples) and full annotations;
    docstrings say what a thing is rather than commanding (D401 off)."""
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "D,ANN", "--ignore", "D401",
                           *(str(PACKAGE / name) for name in PUBLIC_MODULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
