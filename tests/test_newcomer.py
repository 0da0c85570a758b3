"""What a newcomer meets first: `--version`, `init`, `--quiet`'s neighbours, refusals of
odd inputs (a non-finite threshold, no Ray cluster, a non-UTF-8 study file, several
mistakes at once, a sweep point that cannot plan, model files that hold code), the
Python API without `configure()`, a sweep's log axis and `compare` across other data."""

import os
import subprocess
import sys

import numpy as np
import pytest

from test_bad_input import TINY, _assert_one_line, _study, _write, invoke
from transferlab import models
from transferlab.errors import ModelFileError
from transferlab.config import as_toml


def test_version_and_init_write_a_study_that_runs(tmp_path):
    from transferlab import __version__

    code, stdout, _ = invoke("--version")
    assert code == 0 and stdout.strip() == f"transferlab {__version__}"
    code, stdout, _ = invoke("init", "--list")
    assert code == 0 and "tutorial " in stdout and "blobs_matrix " in stdout
    code, stdout, stderr = invoke("init", tmp_path / "mine.toml", "--example", "catalogue")
    assert code == 0, stderr
    text = (tmp_path / "mine.toml").read_text()
    assert text.startswith("# A transferlab study, from the example 'catalogue'.") and 'name = "catalogue"' in text
    from transferlab.api import load_study

    assert load_study(tmp_path / "mine.toml").name == "catalogue"
    code, _, stderr = invoke("init", tmp_path / "mine.toml")
    _assert_one_line(code, stderr, f"error: {tmp_path}/mine.toml: exists already; give another name (nothing was "
                                   "written)")
    code, _, stderr = invoke("init", tmp_path / "other.toml", "--example", "nope")
    assert code == 2 and "--example 'nope': not a shipped example; use one of" in stderr


def test_shipped_examples_are_the_repository_examples():
    from importlib import resources
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    for entry in (resources.files("transferlab") / "examples").iterdir():
        assert entry.read_text() == (examples / entry.name).read_text(), entry.name


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_threshold_must_be_finite(tmp_path, value):
    code, _, stderr = invoke("report", tmp_path, "--threshold", value)
    _assert_one_line(code, stderr, f"error: --threshold {float(value)}: give a finite score (e.g. 0.8), as the study "
                                   "file's [report] threshold")


def test_ray_without_a_cluster_is_one_line(tmp_path):
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    study_file = _write(tmp_path, TINY)
    result = subprocess.run([sys.executable, "-m", "transferlab.cli", "run", str(study_file), "--out",
                             str(tmp_path / "out"), "--ray", "auto"], capture_output=True, text=True, env=env,
                            timeout=300)
    _assert_one_line(result.returncode, result.stderr,
                     "error: --ray auto: no Ray cluster is running there; start one with `ray start --head` (and "
                     "`ray start --address HEAD:6379` on each worker), or run without --ray to train here")


def test_a_study_file_that_is_not_utf8(tmp_path):
    (tmp_path / "study.toml").write_bytes(as_toml(TINY).replace("tiny", "caf\u00e9").encode("latin-1"))
    code, _, stderr = invoke("run", tmp_path / "study.toml", "--out", tmp_path / "out")
    assert code == 2 and stderr.strip().startswith(f"error: {tmp_path}/study.toml: not UTF-8 text (byte 0xe9 on line ")
    assert stderr.strip().endswith("); save the study file as UTF-8")


def test_every_problem_is_listed(tmp_path):
    raw = _study(repeats=0)
    raw["training"] = {"epoch": 3, "batch_size": 0}
    code, _, stderr = invoke("run", _write(tmp_path, raw), "--out", tmp_path / "out")
    assert code == 2 and "(and 2 more problems: " in stderr
    for field in ("repeats:", "training.batch_size:", "training.epoch: unknown field"):
        assert field in stderr, field


def test_a_sweep_point_that_cannot_plan_is_named(tmp_path):
    raw = dict(TINY, sweep={"training.epochs": [3, 5]},
               strategies=[{"name": "standalone"}, {"name": "two_stage", "head_epochs": 4}])
    code, _, stderr = invoke("run", _write(tmp_path, raw), "--out", tmp_path / "out")
    assert code == 2 and "sweep point training.epochs=3" in stderr and "head_epochs" in stderr, stderr


@pytest.fixture(scope="module")
def code_models(tmp_path_factory):
    import keras

    root = tmp_path_factory.mktemp("code")

    def square(x):
        return x * x

    keras.Sequential([keras.Input((2,)), keras.layers.Dense(5, activation=square, name="hidden"),
                      keras.layers.Dense(3, activation="softmax")]).save(root / "activation.keras")

    @keras.saving.register_keras_serializable(package="mine")
    class MyDense(keras.layers.Dense):
        pass

    keras.Sequential([keras.Input((2,)), MyDense(5, name="custom"),
                      keras.layers.Dense(3, activation="softmax")]).save(root / "custom.keras")
    return root


@pytest.mark.parametrize("file_name, problem", [
    ("activation.keras", "the activation of layer 'hidden' names a Python function ('square')"),
    ("custom.keras", "layer 'custom' is a custom class (mine>MyDense)"),
])
def test_model_files_with_code_name_the_layer(code_models, file_name, problem):
    with pytest.raises(ModelFileError) as caught:
        models.load_model_file(code_models / file_name)
    assert str(caught.value) == (f"{code_models}/{file_name}: {problem}; only Keras' built-in layers and activations "
                                 "load (nothing in a model file is executed): rebuild the model from standard layers")


SCRIPT = """
import sys
from transferlab import loading, study, reports
import transferlab
cfg = loading.study_from_dict({raw!r})
study.run_study(cfg, sys.argv[1])
print(reports.build_report(sys.argv[1]).directions[0].summary.shape[0], len(transferlab.results(sys.argv[1])["runs"]))
"""


def test_the_python_api_needs_no_configure(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(raw=TINY), str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "5"]  # 2 strategies; 1 source model + 2 × 2 target runs


def test_a_sweep_log_axis_is_labelled_with_the_swept_values():
    from matplotlib.figure import Figure

    from transferlab.plots import _log_ticks

    ax = Figure().subplots()
    ax.plot([10, 20, 30, 45, 60], np.arange(5))
    _log_ticks(ax, [10, 20, 30, 45, 60])
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "20", "30", "45", "60"]


def test_compare_warns_when_the_tasks_differ(tmp_path):
    first = _write(tmp_path, TINY, "a.toml")
    second = _write(tmp_path, _study(**{"target.seed": 5}), "b.toml")
    for path, out in ((first, "a"), (second, "b")):
        code, _, stderr = invoke("run", path, "--out", tmp_path / out, "--quiet")
        assert code == 0, stderr
    code, stdout, stderr = invoke("compare", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "c.csv")
    assert code == 0, stderr
    assert "warning: the target tasks differ (blobs(seed=2), fingerprint " in " ".join(stdout.split())


def test_one_of_a_thing_is_singular():
    from transferlab.data.split import split_rows
    from transferlab.heads import Classes, match_head

    assert split_rows(5, "first", 0, n_train=1).description == "first 1 row train, the rest test"
    sigmoid, softmax = models.output_layer(1, "sigmoid"), models.output_layer(3, "softmax")
    note = match_head(softmax, sigmoid, Classes(None, ("a", "b"))).note
    assert "the target needs 1 sigmoid unit, the source has 3 softmax units" in note


OTHER_BACKEND = """
import os, sys
os.environ["KERAS_BACKEND"] = "numpy"
import keras
del os.environ["KERAS_BACKEND"]
from transferlab import loading, study
try:
    study.run_study(loading.study_from_dict({raw!r}), sys.argv[1])
except Exception as error:
    print(type(error).__name__, error)
"""


def test_keras_imported_with_another_backend_is_one_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run([sys.executable, "-c", OTHER_BACKEND.format(raw=TINY), str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.stdout.strip() == ("BackendError keras was imported before transferlab with the 'numpy' backend "
                                     "(from ~/.keras/keras.json?); set KERAS_BACKEND=jax before importing keras."), \
        result.stdout + result.stderr
    assert not (tmp_path / "out").exists()
