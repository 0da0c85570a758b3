"""Bad input through the CLI, table-driven: each case gets exit code 2, exactly one line on
stderr that names the file, field, row or layer and says what to do, no traceback, and
leaves the output folder byte for byte as it was."""

import hashlib
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from transferlab import models
from transferlab.commands import app
from transferlab.config import as_toml

TINY = {
    "name": "tiny",
    "seed": 3,
    "repeats": 2,
    "source": {"kind": "blobs", "seed": 1, "n_samples": 120, "n_train": 60},
    "target": {"kind": "blobs", "seed": 2, "n_samples": 120, "n_train": 60},
    "training": {"epochs": 2},
    "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}],
}


def _study(**changes) -> dict:
    raw = {key: (dict(value) if isinstance(value, dict) else value) for key, value in TINY.items()}
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        table = raw
        for parent in parents:
            table = table[parent]
        table[leaf] = value
    return raw


def _folder_digest(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(folder.rglob("*"))
    }


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny study (its study file, its folder), shared by the cases that need one."""
    root = tmp_path_factory.mktemp("finished")
    study_file = root / "tiny.toml"
    study_file.write_text(as_toml(TINY))
    code, _, err = invoke("run", study_file, "--out", root / "out", "--quiet")
    assert code == 0, err
    return study_file, root / "out"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    good = models.mlp(2, (5, 5), 3)
    weights = models.fresh_weights(good, np.random.default_rng(0))
    models.save_model_file(models.build_keras_model(good, weights), root / "good.keras")
    models.save_model_file(models.build_keras_model(models.mlp(4, (5, 5), 3)), root / "wide.keras")
    (root / "text.keras").write_text("hello")
    (root / "folder.keras").mkdir()
    import keras

    unsafe = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(3)])
    unsafe.save(root / "unsafe.keras")
    return root


def _write(tmp_path, raw, name="study.toml") -> Path:
    path = tmp_path / name
    path.write_text(as_toml(raw) if isinstance(raw, dict) else raw)
    return path


def _unsafe_name(name: str) -> str:
    """The one-line refusal of a study name that cannot name a folder."""
    return (f"{{dir}}/study.toml: name {name!r} is not a safe folder name (it names the output folder): use 1 to 100 "
            "letters, digits, spaces, '.', '_' or '-', starting with a letter or digit and ending with neither a dot "
            "nor a space")


# (id, study-file content or None, expected message with {dir} for tmp_path)
STUDY_FILE_CASES = [
    ("not-toml", "name = \n", "{dir}/study.toml: not valid TOML: Invalid value (at line 1, column 8)"),
    ("missing-name", {k: v for k, v in TINY.items() if k != "name"}, "{dir}/study.toml: name: missing; this field is required"),
    ("name-escapes-folder", _study(name="../x"), _unsafe_name("../x")),
    ("name-empty", _study(name=""), _unsafe_name("")),
    ("name-too-long", _study(name="a" * 300), _unsafe_name("a" * 300)),
    ("epochs-ceiling", _study(**{"training.epochs": 10**9}),
     "{dir}/study.toml: training.epochs: 1000000000 is above the ceiling of 100000 (every epoch's curves are "
     "stored for every run)"),
    ("samples-ceiling", _study(**{"source.n_samples": 10**9}),
     "{dir}/study.toml: source.n_samples: 1000000000 is above the ceiling of 10000000 (the data are generated in memory)"),
    ("repeats-ceiling", _study(repeats=10**9),
     "{dir}/study.toml: repeats: 1000000000 is above the ceiling of 100000 (each run is planned in the database "
     "before training)"),
    ("width-ceiling", _study(model={"hidden": [1000000]}),
     "{dir}/study.toml: model.hidden[0]: 1000000 is above the ceiling of 65536 (one layer that wide needs gigabytes "
     "per model)"),
    ("values-ceiling", _study(**{"target.n_samples": 9_000_000, "target.n_features": 100}),
     "{dir}/study.toml: target: n_samples × n_features is 900,000,000; at most 200,000,000 values fit a task (they "
     "are generated in memory): use fewer samples or features"),
    ("learning-rate-inf", "name = 'x'\n[source]\nseed = 1\n[target]\nseed = 2\n[training]\nlearning_rate = inf\n"
     "[[strategies]]\nname = 'standalone'\n", "{dir}/study.toml: training.learning_rate: Input should be a finite number, got float inf"),
    ("learning-rate-nan", "name = 'x'\n[source]\nseed = 1\n[target]\nseed = 2\n[training]\nlearning_rate = nan\n"
     "[[strategies]]\nname = 'standalone'\n", "{dir}/study.toml: training.learning_rate: Input should be a finite number, got float nan"),
    ("seed-negative", _study(**{"target.seed": -1}),
     "{dir}/study.toml: target.seed: Input should be greater than or equal to 0"),
    ("seed-too-big", _study(**{"source.seed": 2**32}),
     "{dir}/study.toml: source.seed: 4294967296 is above the ceiling of 4294967295 (seeds are 32-bit, as scikit-learn "
     "and NumPy take them)"),
    ("unknown-field", _study(epochs=5), "{dir}/study.toml: epochs: unknown field; check the spelling against the "
     "study-file format in the README"),
    ("freeze-out-of-range", _study(strategies=[{"name": "transfer", "freeze": 3}]),
     "{dir}/study.toml: strategies[0].freeze: 3 is outside 0..2 (the source has 2 hidden layers)"),
    ("strategy-float-inf", "name = 'x'\n[source]\nseed = 1\n[target]\nseed = 2\n[[strategies]]\nname = 'finetune'\n"
     "lr = inf\n", "{dir}/study.toml: strategies[0].lr: Input should be a finite number, got float inf"),
    ("strategy-int-huge", _study(strategies=[{"name": "insert_layer", "after": 1, "units": 10**8}]),
     "{dir}/study.toml: strategies[0].units: 100000000 is above the ceiling of 65536 (one layer that wide needs gigabytes per model)"),
    ("model-table-with-model-file", _study(source={"model_file": "m.keras"}, model={"hidden": [5]}),
     "{dir}/study.toml: model: the architecture comes from source.model_file; remove the [model] table"),
    ("brackets-kept", None, "{dir}/study[v2].toml: study file not found"),
    ("parameter-of-another-optimizer", _study(training={"optimizer": "sgd", "beta_1": 0.5}),
     "{dir}/study.toml: training.beta_1: sgd has no parameter beta_1 (its parameters: learning_rate, momentum, "
     "nesterov, weight_decay); remove it or choose an optimizer that takes it"),
    ("unknown-optimizer", _study(training={"optimizer": "nadam"}),
     "{dir}/study.toml: training.optimizer: Input should be 'sgd', 'adam', 'adamw' or 'rmsprop'"),
    ("two-clippings", _study(training={"optimizer": "adam", "clipnorm": 1.0, "clipvalue": 0.5}),
     "{dir}/study.toml: training: give one of clipnorm, clipvalue and global_clipnorm, not clipnorm and clipvalue "
     "(Keras takes one)"),
    ("name-trailing-dot", _study(name="study."), _unsafe_name("study.")),
    ("name-with-a-slash", _study(name="a/b"), _unsafe_name("a/b")),
]


@pytest.mark.parametrize("case_id, content, expected", STUDY_FILE_CASES, ids=[c[0] for c in STUDY_FILE_CASES])
def test_study_file_errors(tmp_path, case_id, content, expected):
    study_file = _write(tmp_path, content) if content is not None else tmp_path / "study[v2].toml"
    out = tmp_path / "out"
    code, stdout, stderr = invoke("run", study_file, "--out", out)
    _assert_one_line(code, stderr, "error: " + expected.format(dir=tmp_path))
    assert not out.exists()


def _command(command: str, study_file: Path, folder: Path) -> tuple:
    """`run STUDY --out FOLDER` or `report FOLDER`: both must refuse the same bad folders."""
    return ("run", study_file, "--out", folder) if command == "run" else ("report", folder)


def _on_folder(command: str, study_file: Path, folder: Path):
    return invoke(*_command(command, study_file, folder))


def _edit_database(folder: Path, sql: str, params=(), unchecked: bool = False) -> None:
    """Change a results database by hand, as a user might, and fold the change into the file."""
    db = sqlite3.connect(folder / "results.sqlite")
    if unchecked:
        db.execute("PRAGMA ignore_check_constraints = ON")
    db.execute(sql, params)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _refused_unchanged(folder: Path, args: tuple, expected: str) -> None:
    """The command `args` exits 2 with exactly `expected` as its one line, and `folder` is
    byte for byte as it was."""
    before = _folder_digest(folder)
    code, _, stderr = invoke(*args)
    _assert_one_line(code, stderr, expected)
    assert _folder_digest(folder) == before


def _assert_one_line(code, stderr, expected, exit_code=2):
    assert code == exit_code, stderr
    assert "Traceback" not in stderr
    assert stderr.strip() == expected, stderr


def _model_study(tmp_path, file_name, model_files) -> Path:
    raw = _study(source={"model_file": str(model_files / file_name)})
    raw["source_repeats"] = 1
    return _write(tmp_path, raw)


MODEL_FILE_CASES = [
    ("not-a-keras-archive", "text.keras", "{models}/text.keras: not a Keras archive (a .keras file is a zip written "
     "by model.save); re-save the model with model.save('x.keras')"),
    ("a-folder", "folder.keras", "{models}/folder.keras: is a folder, not a model file; give the path of a .keras file"),
    ("missing", "nothere.keras", "{models}/nothere.keras: model file not found"),
    ("does-not-fit", "wide.keras", "{study}: strategies[1]: transfer freeze=1 reuses the source's first layer, which "
     "takes 4 features, but the target has 2 (x0, x1); use new_input (a fresh first layer on the target's features) "
     "or standalone, or give both tasks the same features (source model wide.keras: 4 → 5 relu → 5 relu → 3 softmax)"),
    ("unsafe-lambda", "unsafe.keras", "{models}/unsafe.keras: layer 'lambda' is a Lambda layer (Python code); only "
     "Keras' built-in layers and activations load (nothing in a model file is executed): rebuild the model from "
     "standard layers"),
]


@pytest.mark.parametrize("case_id, file_name, expected", MODEL_FILE_CASES, ids=[c[0] for c in MODEL_FILE_CASES])
def test_model_file_errors(tmp_path, model_files, case_id, file_name, expected):
    study_file = _model_study(tmp_path, file_name, model_files)
    code, _, stderr = invoke("run", study_file, "--out", tmp_path / "out")
    _assert_one_line(code, stderr, "error: " + expected.format(models=model_files, study=study_file))
    assert not (tmp_path / "out").exists()


def test_out_is_an_existing_file(tmp_path, finished):
    study_file, _ = finished
    (tmp_path / "taken").write_text("mine")
    code, _, stderr = invoke("run", study_file, "--out", tmp_path / "taken")
    _assert_one_line(code, stderr, f"error: {tmp_path}/taken: exists and is not a folder; choose another --out")
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_database_that_is_random_bytes(tmp_path, finished, command):
    study_file, _ = finished
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_bytes(np.random.default_rng(0).bytes(5000))
    _refused_unchanged(out, _command(command, study_file, out),
                       f"error: {out}/results.sqlite: not a transferlab results database (file is not a "
                       "database); move it away or choose another --out (nothing was changed)")


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_database_that_is_a_folder(tmp_path, finished, command):
    study_file, _ = finished
    out = tmp_path / "out"
    (out / "results.sqlite").mkdir(parents=True)
    code, _, stderr = _on_folder(command, study_file, out)
    _assert_one_line(code, stderr, f"error: {out}/results.sqlite: is a folder, not a results database; move it away "
                     "or choose another --out")


def test_report_of_an_empty_folder(tmp_path):
    code, _, stderr = invoke("report", tmp_path)
    _assert_one_line(code, stderr, f"error: {tmp_path}: no results.sqlite here; run a study into this folder first")


def _copy(folder: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(folder, to)
    return to


def test_a_run_row_with_an_unknown_status(tmp_path, finished):
    _, out = finished
    copy = _copy(out, tmp_path / "copy")
    _edit_database(copy, "UPDATE runs SET status = 'weird' WHERE id = 3", unchecked=True)
    _refused_unchanged(copy, ("report", copy),
                       f"error: {copy}/results.sqlite: run 3 has status 'weird', which is none of planned, done, "
                       "diverged; the database was edited — restore it or rerun into a new folder")


def test_a_folder_holding_another_study(tmp_path, finished):
    _, out = finished
    copy = _copy(out, tmp_path / "copy")
    other = _write(tmp_path, _study(repeats=3))
    _refused_unchanged(copy, ("run", other, "--out", copy),
                       f"error: {copy}/results.sqlite: this folder holds study 'tiny' with a different "
                       "configuration (repeats: 2 → 3); choose another --out folder (nothing here was changed)")


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_changed_source_model_file_is_refused_when_everything_is_done(tmp_path, finished, command):
    study_file, out = finished
    copy = _copy(out, tmp_path / "copy")
    # point the record at the copy's file
    _edit_database(copy, "UPDATE source_models SET file = replace(file, ?, ?)", (str(out), str(copy)))
    source = copy / "sources" / "source_000.keras"
    source.write_bytes(source.read_bytes() + b"x")
    before = _folder_digest(copy)
    code, _, stderr = _on_folder(command, study_file, copy)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.startswith(f"error: {source.resolve()}: SHA-256 is ") and stderr.count("\n") == 1
    assert stderr.strip().endswith("the file changed since it was used — restore it or start a new output folder")
    assert _folder_digest(copy) == before


def test_a_study_that_would_not_fit_in_memory_is_refused(tmp_path):
    raw = _study(repeats=100_000, source_repeats=10_000)
    code, stdout, stderr = invoke("run", _write(tmp_path, raw), "--out", tmp_path / "out")
    assert code == 2 and "Traceback" not in stderr and stderr.count("\n") == 1
    assert "the estimated peak memory (" in stderr and "pass --force to start anyway" in stderr
    assert "plan: 1,000,110,000 runs" in stdout
    assert not (tmp_path / "out").exists()


def test_an_old_schema_database_is_refused(tmp_path, finished):
    study_file, _ = finished
    out = tmp_path / "out"
    out.mkdir()
    old = sqlite3.connect(out / "results.sqlite")
    old.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY)")
    old.execute("PRAGMA user_version = 2")
    old.commit()
    old.close()
    _refused_unchanged(out, ("run", study_file, "--out", out),
                       f"error: {out}/results.sqlite: written by another version of transferlab (database "
                       "schema 2, this version uses 7); choose a new --out folder (nothing here was changed)")


def test_a_folder_given_as_study_file(tmp_path):
    code, _, stderr = invoke("run", tmp_path)
    _assert_one_line(code, stderr, f"error: {tmp_path}: is a folder; give the path of a study file (TOML)")


@pytest.mark.parametrize("name", ["my study", "étude-2", "v1.2_final"])
def test_safe_names_are_accepted(name):
    from transferlab.loading import study_from_dict

    assert study_from_dict(_study(name=name)).name == name


def test_one_feature_task_runs_to_its_report(tmp_path):
    raw = _study(**{"source.n_features": 1, "target.n_features": 1})
    code, stdout, stderr = invoke("run", _write(tmp_path, raw), "--out", tmp_path / "out", "--quiet")
    assert code == 0, stderr
    assert (tmp_path / "out" / "tasks.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def read_only(tmp_path):
    """Make a folder read-only even for root (`chattr +i`), or skip where that is impossible."""
    import shutil
    import subprocess

    made = []

    def lock(folder: Path) -> Path:
        if os.geteuid() != 0:
            folder.chmod(0o555)
        elif not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)]).returncode:
            pytest.skip("cannot make a folder read-only for root here")
        made.append(folder)
        return folder

    yield lock
    for folder in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)])
        folder.chmod(0o755)


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_read_only_output_folder(tmp_path, finished, read_only, command):
    study_file, out = finished
    copy = read_only(_copy(out, tmp_path / "copy"))
    before = _folder_digest(copy)
    code, _, stderr = _on_folder(command, study_file, copy)
    advice = "choose a writable --out" if command == "run" else "make it writable, or copy the folder and report the copy"
    assert code == 2 and "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"error: {copy}") and stderr.strip().endswith(advice), stderr
    assert _folder_digest(copy) == before


def test_one_run_per_group_prints_no_warnings(tmp_path):
    import warnings

    raw = _study(repeats=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, stderr = invoke("run", _write(tmp_path, raw), "--out", tmp_path / "out", "--quiet")
    assert code == 0, stderr
    assert stderr == "" and "Warning" not in stdout
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


def test_a_keras_backend_forced_elsewhere(tmp_path, finished):
    import subprocess
    import sys

    study_file, _ = finished
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run([sys.executable, "-m", "transferlab.cli", "run", str(study_file), "--out",
                             str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    _assert_one_line(result.returncode, result.stderr, "error: KERAS_BACKEND=torch is set, but transferlab trains "
                     "on the JAX backend; unset KERAS_BACKEND or set KERAS_BACKEND=jax.")
    assert not (tmp_path / "out").exists()
