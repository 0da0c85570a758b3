"""Layer types and objectives: LayerNormalization, Activation and binary classification
against a real keras.Model.fit; Dropout's semantics; model files with these layers."""

import keras
import numpy as np
import pytest
from scipy import stats

from conftest import keras_fit_in_order
from transferlab import engine, layers, models, objectives, tasks
from transferlab.layers import Activation, BatchNormalization, Context, Dense, Dropout, LayerNormalization, ModelFileError
from transferlab.orders import shuffle_orders

EPOCHS = 3


@pytest.fixture(scope="module")
def problem():
    return tasks.blobs(2, n_samples=256, n_train=128)


def _engine(arch, initial, task, seed, loss, epochs=EPOCHS, **settings):
    stacked = [tuple(a[None] for a in layer) for layer in initial]
    multipliers = np.ones((1, epochs, len(arch.layers)), np.float32)
    result = engine.train_models(arch.layers, stacked, multipliers, [seed], task.x_train, task.y_train,
                                 task.x_test, task.y_test, engine.TrainingSettings(epochs=epochs, **settings), loss=loss)
    return result, shuffle_orders([seed], epochs, len(task.x_train))[0]


def _assert_equals_keras(arch, initial, task, result, order, loss, y_train, y_test, metrics=("accuracy",)):
    model = models.build_keras_model(arch, initial)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss, metrics=list(metrics))
    history = keras_fit_in_order(model, task.x_train, y_train, order, task.x_test, y_test)
    for layer, (reference, trained) in enumerate(zip(models.keras_weights(model), result.weights, strict=True)):
        for ref, got in zip(reference, trained, strict=True):
            np.testing.assert_allclose(got[0], ref, atol=1e-5, rtol=0, err_msg=f"layer {layer}")
    for name, values in history.items():
        np.testing.assert_allclose(result.curves[name][0], values, atol=1e-5, rtol=1e-5, err_msg=name)


def test_layer_normalization_and_an_activation_layer_equal_keras_fit(problem):
    arch = models.Architecture(2, (Dense(6, "linear", "he_uniform"), LayerNormalization(), Activation("tanh"),
                                   Dense(4, "relu"), Dense(3, "softmax")))
    initial = models.fresh_weights(arch, np.random.default_rng(1))
    initial[1] = (np.linspace(0.5, 1.5, 6, dtype=np.float32), np.linspace(-0.2, 0.2, 6, dtype=np.float32))
    result, order = _engine(arch, initial, problem, 4, "categorical_crossentropy")
    _assert_equals_keras(arch, initial, problem, result, order, "categorical_crossentropy",
                         problem.y_train, problem.y_test)


def test_binary_classification_equals_keras_fit_with_one_sigmoid_unit():
    task = tasks.blobs(5, n_samples=256, n_train=128, centers=2)
    arch = models.mlp(2, (5,), 1, output_activation="sigmoid")
    objective = objectives.for_task("classification", arch.head)
    assert objective.name == "binary_crossentropy"
    initial = models.fresh_weights(arch, np.random.default_rng(2))
    result, order = _engine(arch, initial, task, 6, objective.name)
    y_train, y_test = objective.targets(task.y_train), objective.targets(task.y_test)
    assert y_train.shape == (128, 1) and set(np.unique(y_train)) == {0.0, 1.0}
    _assert_equals_keras(arch, initial, task, result, order, "binary_crossentropy", y_train, y_test)


def test_dropout_keeps_one_minus_rate_of_the_units_scaled_up_in_training_only():
    rate = 0.3
    x = np.ones((400, 50, 4), np.float32)
    keys = np.array([1, 2, 3, 4], np.uint32)  # one key per model (the engine hashes seed, step, layer)
    training, _ = Dropout(rate).forward((), (), x, Context(True, keys=[keys]), 0)
    training = np.asarray(training)
    kept = training != 0
    assert np.allclose(training[kept], 1 / (1 - rate), rtol=1e-6)  # inverted dropout
    test = stats.binomtest(int(kept.sum()), kept.size, 1 - rate)
    assert test.pvalue > 1e-3, (kept.mean(), test.pvalue)
    per_model = kept.reshape(-1, 4).mean(axis=0)
    assert np.all(np.abs(per_model - (1 - rate)) < 0.02)
    flat = kept.reshape(-1, 4).astype(float)  # models, units and rows independent of each other
    assert np.abs(np.corrcoef(flat.T)[np.triu_indices(4, 1)]).max() < 0.03
    assert abs(np.corrcoef(flat[:-1, 0], flat[1:, 0])[0, 1]) < 0.03
    for unit in (0, 49):  # every unit's keep rate over the rows
        assert stats.binomtest(int(kept[:, unit].sum()), kept[:, unit].size, 1 - rate).pvalue > 1e-4
    one, _ = Dropout(rate).forward((), (), x[..., 0], Context(True, keys=[keys[0]]), 0)  # one model's step
    assert np.array_equal(np.asarray(one), training[..., 0])
    evaluation, _ = Dropout(rate).forward((), (), x, Context(False), 0)
    assert np.array_equal(np.asarray(evaluation), x)


def test_dropout_trains_and_is_inactive_in_evaluation(problem):
    """Final metrics are the evaluation of the trained weights without dropout (Keras'
    `evaluate`), and the same seed gives the same masks (a rerun is bit-identical)."""
    arch = models.mlp(2, (8, 8), 3, dropout=0.25)
    assert [spec.short() for spec in arch.layers] == ["8 relu", "dropout 0.25", "8 relu", "dropout 0.25", "3 softmax"]
    initial = models.fresh_weights(arch, np.random.default_rng(3))
    result, _ = _engine(arch, initial, problem, 8, "categorical_crossentropy")
    again, _ = _engine(arch, initial, problem, 8, "categorical_crossentropy")
    assert all(np.array_equal(a, b) for pa, pb in zip(result.weights, again.weights) for a, b in zip(pa, pb))
    model = models.build_keras_model(arch, [tuple(a[0] for a in layer) for layer in result.weights])
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(problem.x_test, problem.y_test, verbose=0, batch_size=len(problem.x_test))
    np.testing.assert_allclose(result.final["test_loss"][0], loss, atol=1e-5)
    np.testing.assert_allclose(result.final["test_accuracy"][0], accuracy, atol=1e-6)


def test_dropout_rate_zero_is_bit_identical_to_no_dropout_layer(problem):
    plain = models.mlp(2, (8, 8), 3)
    with_zero = models.Architecture(2, (plain.layers[0], Dropout(0.0), plain.layers[1], Dropout(0.0), plain.layers[2]))
    initial = models.fresh_weights(plain, np.random.default_rng(3))
    padded = [initial[0], (), initial[1], (), initial[2]]
    assert models.weights_sha256(models.fresh_weights(with_zero, np.random.default_rng(3))) == models.weights_sha256(initial)
    a, _ = _engine(plain, initial, problem, 8, "categorical_crossentropy")
    b, _ = _engine(with_zero, padded, problem, 8, "categorical_crossentropy")
    for ours, theirs in zip(a.weights, [w for w in b.weights if w]):
        assert all(np.array_equal(x, y) for x, y in zip(ours, theirs))
    assert np.array_equal(a.curves["loss"], b.curves["loss"])


def test_every_layer_type_round_trips_through_a_keras_file(tmp_path):
    arch = models.Architecture(4, (Dense(6, "relu", "he_uniform"), BatchNormalization(0.9, 1e-2),
                                   Dropout(0.2), Dense(5, "linear"), LayerNormalization(1e-4), Activation("gelu"),
                                   Dense(1, "sigmoid")))
    weights = models.fresh_weights(arch, np.random.default_rng(0))
    path = tmp_path / "all kinds.keras"
    models.save_model_file(models.build_keras_model(arch, weights), path)
    loaded = models.load_model_file(path)
    assert models.architecture_of(loaded, str(path)) == arch
    assert models.weights_sha256(models.keras_weights(loaded)) == models.weights_sha256(weights)
    assert models.Architecture.from_dict(arch.to_dict()) == arch
    assert arch.n_hidden == 2 and arch.blocks == [[0, 1, 2], [3, 4, 5], [6]]


def test_an_unsupported_layer_is_refused_naming_it_and_the_supported_kinds(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.GaussianNoise(0.1, name="noisy"),
                              keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ModelFileError, match=r"'noisy' is a GaussianNoise.*Dense, BatchNormalization, "
                                                     r"LayerNormalization, Dropout, Activation"):
        models.architecture_of(model, "m.keras")


@pytest.mark.parametrize("entry, message", [
    ({"type": "conv3d", "filters": 3}, r"layers\[0\].type: 'conv3d' is not a layer type; use one of dense"),
    ({"type": "dense"}, r"layers\[0\]: .*units"),
    ({"type": "dropout", "rate": 1.0}, r"layers\[0\]: dropout rate 1.0 must be at least 0 and below 1"),
    ({"type": "dense", "units": 3, "filters": 2}, r"layers\[0\].filters: dense takes activation"),
    ({"type": "activation", "activation": "swishy"}, r"activation 'swishy' is not supported"),
])
def test_bad_layer_tables_get_one_line_naming_the_entry(entry, message):
    with pytest.raises(layers.ModelFileError, match=message):
        layers.from_dict(entry, "layers[0]")


def _layers_study(tmp_path):
    """Two-class tasks (one sigmoid unit), an explicit layer list with LayerNormalization and
    Dropout, Adam: a study file from `run` through `report` to `retrain`."""
    text = """
name = "layers"
seed = 5
repeats = 2
source_repeats = 2

[source]
kind = "blobs"
seed = 1
centers = 2
n_samples = 160
n_train = 96

[target]
kind = "blobs"
seed = 2
centers = 2
n_samples = 160
n_train = 96

[model]
layers = [
  { type = "dense", units = 6, activation = "relu", kernel_initializer = "he_uniform" },
  { type = "layer_normalization" },
  { type = "dropout", rate = 0.25 },
  { type = "dense", units = 4, activation = "tanh" },
]

[training]
epochs = 3
optimizer = "adam"

[[strategies]]
name = "standalone"

[[strategies]]
name = "transfer"
freeze = 1
"""
    path = tmp_path / "layers.toml"
    path.write_text(text)
    return path


def test_a_layer_list_study_with_a_binary_head_runs_reports_and_retrains(tmp_path):
    from typer.testing import CliRunner

    from transferlab import study
    from transferlab.commands import app
    from transferlab.store import Store

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(_layers_study(tmp_path)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and "transfer freeze=1" in (out / "report.html").read_text()
    with Store.in_folder(out) as store:
        _, plan = store.stored_plan()
        runs = store.runs_frame(1).set_index(["role", "strategy", "source_index", "repeat"])
        metrics = store.metrics_frame(1)
    arch = plan.directions[0].source_arch
    assert arch.describe() == "2 → 6 relu → LN → dropout 0.25 → 4 tanh → 1 sigmoid" and arch.n_hidden == 2
    assert set(metrics["name"]) == {"loss", "accuracy"} and set(metrics["split"]) == {"train", "test"}
    assert runs["test_accuracy"].between(0, 1).all() and runs["test_r2"].isna().all()
    key = ("target", "transfer freeze=1", 1, 1)
    alone = study.retrain_run(out, *key)
    assert alone.final["test_loss"][0] == runs.loc[key, "test_loss"]
    run_id = runs.loc[key, "run_id"]
    stored = metrics[(metrics["run_id"] == run_id) & (metrics["split"] == "test") & (metrics["name"] == "loss")]
    assert np.array_equal(stored["value"].to_numpy(), alone.curves["val_loss"][0].astype(float))
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output


def test_a_metric_the_schema_does_not_name_needs_no_schema_change(tmp_path, small_study_dict):
    """Final metrics are rows (run, split, name, value) and a run's curves name their rows: a
    new metric is a new name, not a new column."""
    from transferlab import study
    from transferlab.loading import study_from_dict
    from transferlab import curves as curve_arrays
    from transferlab.store import Store

    small_study_dict["training"]["epochs"] = 1
    study.run_study(study_from_dict(small_study_dict), tmp_path)
    with Store.in_folder(tmp_path) as store:
        store._db.execute("INSERT INTO final_metrics VALUES (1, 'test', 'top2_accuracy', 0.5)")
        names, values = curve_arrays.decode(*store._db.execute(
            'SELECT names, epochs, "values" FROM curves WHERE run_id = 1').fetchone())
        extended = {**{name: values[i][None] for i, name in enumerate(names)}, "val_top2_accuracy": np.array([[0.25]])}
        store._db.execute('UPDATE curves SET names = ?, epochs = ?, "values" = ? WHERE run_id = 1',
                          curve_arrays.encode(extended, 0))
        runs = store.runs_frame(1)
        curves = store.curves_frame(1)
    assert runs.loc[runs["run_id"] == 1, "test_top2_accuracy"].item() == 0.5
    assert curves["val_top2_accuracy"].dropna().tolist() == [0.25]


def test_importing_changes_nothing_and_configure_does_it_once(tmp_path):
    """No module sets the Keras backend, XLA flags or the compile cache on import, and
    `import transferlab.stats` does not import JAX; `transferlab.configure()` does it all."""
    import os
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "for key in ('KERAS_BACKEND', 'XLA_FLAGS', 'TRANSFERLAB_CACHE_DIR'): os.environ.pop(key, None)\n"
        "import transferlab.stats\n"
        "print('jax' in sys.modules)\n"
        "import transferlab.engine, transferlab.models, transferlab.study\n"
        "print(os.environ.get('KERAS_BACKEND'), os.environ.get('XLA_FLAGS'))\n"
        "import jax\n"
        "print(jax.config.jax_compilation_cache_dir)\n"
        "transferlab.configure(); transferlab.configure()\n"
        "print(os.environ['KERAS_BACKEND'], len(jax.devices('cpu')) == len(os.sched_getaffinity(0)))\n"
        "print(jax.config.jax_compilation_cache_dir.endswith('xla'))\n"
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))  # the compile cache goes here, not the user's
    for inherited in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "TRANSFERLAB_CACHE_DIR"):
        env.pop(inherited, None)  # this process's configure() set them; the child starts unconfigured
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "transferlab" / "xla").is_dir()
    assert result.stdout.split("\n")[:5] == ["False", "None None", "None", "jax True", "True"]


def test_every_strategy_applies_to_an_architecture_of_every_layer_type(tmp_path):
    """The whole catalogue on Dense → BN → Dropout → Dense → LN → Activation → head: each
    strategy's recipe counts hidden layers by Dense layer, and the study trains and reports."""
    from transferlab import study
    from transferlab.loading import study_from_dict
    from transferlab.strategies import CATALOGUE
    from transferlab.store import Store

    layers_ = [{"type": "dense", "units": 6, "activation": "relu"}, {"type": "batch_normalization"},
               {"type": "dropout", "rate": 0.1}, {"type": "dense", "units": 5}, {"type": "layer_normalization"},
               {"type": "activation", "activation": "tanh"}]
    small = {"n_samples": 120, "n_train": 64}
    short = {"two_stage": {"head_epochs": 1}, "gradual_unfreeze": {"every": 1}}  # for 3 epochs
    entries = [{"name": name, **short.get(name, {})} for name in {cls.name: cls for cls in CATALOGUE}] + [{"name": "transfer", "freeze": 2}]
    raw = {"name": "all", "seed": 1, "repeats": 1, "source_repeats": 1, "source": {"seed": 1, **small},
           "target": {"seed": 2, **small}, "model": {"layers": layers_}, "training": {"epochs": 3},
           "strategies": entries}
    config = study_from_dict(raw)
    (forward,) = study.study_directions(config)
    records = {label: recipe.record() for label, recipe in forward.recipes.items()}
    frozen = [row["kind"] for row in records["transfer freeze=2"] if row["learning_rate"] == "×0"]
    assert frozen == ["Dense(6, relu)", "BatchNormalization", "Dropout(0.1)", "Dense(5, linear)",
                      "LayerNormalization", "Activation(tanh)"]
    inserted = forward.recipes["insert_layer after=1 5 relu"].arch
    assert inserted.describe() == "2 → 6 relu → BN → dropout 0.1 → 5 relu → 5 linear → LN → tanh → 3 softmax"
    # train the strategies that share the source's architecture (one compiled program)
    shared = [e for e in entries if e["name"] not in ("insert_layer", "l2sp")]
    study.run_study(study_from_dict(dict(raw, strategies=shared)), tmp_path)
    with Store.in_folder(tmp_path) as store:
        runs = store.runs_frame(1)
    assert (runs["status"] == "done").all() and len(runs) == 1 + len(shared)


def test_a_two_class_model_file_with_a_softmax_head_keeps_it(tmp_path):
    """Two classes default to one sigmoid unit, but a user's model with two softmax units
    is reused as it is (no new head)."""
    from transferlab import study
    from transferlab.loading import study_from_dict

    arch = models.mlp(2, (4,), 2)
    path = tmp_path / "two.keras"
    models.save_model_file(models.build_keras_model(arch, models.fresh_weights(arch, np.random.default_rng(0))), path)
    raw = {"name": "file", "seed": 1, "repeats": 1, "source": {"model_file": str(path)},
           "target": {"seed": 2, "centers": 2, "n_samples": 100, "n_train": 60},
           "training": {"epochs": 1}, "strategies": [{"name": "transfer", "freeze": 1}]}
    (forward,) = study.plan_study(study_from_dict(raw)).directions
    assert forward.recipes["transfer freeze=1"].arch == arch  # its units by position, and the note says why
    assert "class names are unknown (unit 0 → 0, unit 1 → 1)" in forward.notice
    raw["target"]["centers"] = 3  # three classes: a fresh 3-unit softmax head
    (other,) = study.plan_study(study_from_dict(raw)).directions
    assert other.recipes["transfer freeze=1"].arch.head == Dense(3, "softmax") and "new_head" in other.notice


def test_functional_chains_load_and_branches_or_regularisers_are_refused(tmp_path):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="relu", name="a")(inputs)
    chain = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(hidden))
    assert models.architecture_of(chain, "chain.keras").describe() == "3 → 4 relu → 2 softmax"
    skip = keras.layers.Concatenate(name="join")([hidden, inputs])
    branched = keras.Model(inputs, keras.layers.Dense(2, name="out2")(skip))
    with pytest.raises(ModelFileError, match="branched.keras: layer 'join' is a Concatenate"):
        models.architecture_of(branched, "branched.keras")
    shared = keras.layers.Dense(3, name="twice")
    twice = keras.Model(inputs, keras.layers.Dense(2, name="out3")(shared(shared(inputs))))
    with pytest.raises(ModelFileError, match="layer 'twice' is not fed by the layer before it"):
        models.architecture_of(twice, "twice.keras")
    regularised = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, kernel_regularizer="l2", name="reg"),
                                    keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ModelFileError, match="layer 'reg' has a kernel_regularizer; transferlab trains without"):
        models.architecture_of(regularised, "reg.keras")
