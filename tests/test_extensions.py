"""Open extension points: a user's own strategy and layer type, through every documented path
(a file given to `--extension`, `register_strategy` in Python, an installed entry point),
the contracts that fail when a class is defined, and a folder that names the extension it
needs when it is missing."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import transferlab
from transferlab import layers, models, registry, strategies
from transferlab.errors import ExtensionError
from transferlab.layers import Dense
from transferlab.orders import shuffle_orders
from transferlab.plan import RunSpec
from transferlab.shards import initial_weights
from transferlab.store import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# A strategy written the way the docs show, in a user's own file: every layer of the source
# at half the learning rate, the output layer fresh (not the shipped shrink_perturb example).
HALF_RATE = '''
from dataclasses import dataclass, replace
from typing import ClassVar

import transferlab
from transferlab.strategies import NewHead

__version__ = "0.3"


@transferlab.register_strategy
@dataclass(frozen=True)
class HalfRate(transferlab.Strategy):
    """Reuse the hidden layers, fresh output layer; hidden layers train at `factor` × the rate."""

    factor: float = 0.5
    name: ClassVar[str] = "half_rate"
    summary: ClassVar[str] = "reuse the hidden layers at factor × the learning rate; a fresh output layer"

    def recipe(self, source, head, epochs, n_inputs=None, classes=None):
        start = NewHead(freeze=0).recipe(source, head, epochs, n_inputs, classes)
        multipliers = start.multipliers.copy()
        multipliers[:, :-1] *= self.factor
        return replace(start, multipliers=multipliers)
'''

STUDY = '''
name = "mine"
seed = 4
repeats = 2
source_repeats = 2

[source]
kind = "sklearn"
dataset = "wine"
classes = ["class_0", "class_1"]

[target]
kind = "sklearn"
dataset = "wine"
classes = ["class_1", "class_2"]

[training]
epochs = 3
batch_size = 16

[[strategies]]
name = "standalone"

[[strategies]]
name = "half_rate"
factor = 0.25
'''


@pytest.fixture(autouse=True)
def _registries_as_they_were():
    """What a test registers is gone after it: other tests in this worker see the catalogue."""
    before = {registry_: set(registry_.names()) for registry_ in (strategies.REGISTRY, layers.REGISTRY)}
    yield
    for registry_, names in before.items():
        for name in set(registry_.names()) - names:
            registry_.unregister(name)


def _cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "transferlab.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "TRANSFERLAB_EXTENSIONS": "", **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def user_study(tmp_path_factory):
    """A user's strategy file, a study naming it, run through the CLI with `--extension`."""
    root = tmp_path_factory.mktemp("extension")
    (root / "half_rate.py").write_text(HALF_RATE)
    (root / "study.toml").write_text(STUDY)
    done = _cli("--extension", "half_rate.py", "run", "study.toml", "--out", "out", "--quiet", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def test_a_users_strategy_runs_beside_the_catalogue_through_the_cli(user_study):
    transferlab.load_extension(str(user_study / "half_rate.py"))  # reading the plan needs it, as any reader does
    with Store.in_folder(user_study / "out", readonly=True) as store:
        study_id, plan = store.stored_plan()
        runs = store.runs_frame(study_id)
    assert set(runs.loc[runs.role == "target", "strategy"]) == {"standalone", "half_rate factor=0.25"}
    assert (runs.status == "done").all()
    assert plan.extensions == {"half_rate": {"kind": "strategy", "module": "half_rate", "version": "0.3"}}
    recipe = plan.directions[0].recipes["half_rate factor=0.25"]
    assert set(recipe.multipliers[:, 0]) == {0.25} and set(recipe.multipliers[:, -1]) == {1.0}
    assert "half_rate factor=0.25" in (user_study / "out" / "report.html").read_text()


def test_reporting_resuming_or_retraining_without_the_extension_is_one_line(user_study):
    for args in (["report", "out"],):  # export, compare and retrain read the stored plan the same way
        done = _cli(*args, cwd=user_study)
        assert done.returncode == 2, (args, done.stderr)
        line = done.stderr.strip()
        assert "\n" not in line and "'half_rate' from half_rate (version 0.3)" in line, line
    done = _cli("run", "study.toml", "--out", "out", cwd=user_study)  # the study file names it too
    assert done.returncode == 2 and "unknown strategy 'half_rate'" in done.stderr and "--extension" in done.stderr
    assert "\n" not in done.stderr.strip()
    again = _cli("--extension", "half_rate.py", "report", "out", cwd=user_study)
    assert again.returncode == 0, again.stderr
    resumed = _cli("run", "study.toml", "--out", "out", "--extension", str(user_study / "half_rate.py"), cwd=user_study)
    assert resumed.returncode == 0 and "8 runs were already done, trained 0" in resumed.stdout, resumed.stdout


def test_a_stored_run_of_a_users_strategy_retrains_to_the_same_numbers(user_study):
    from transferlab import study

    transferlab.load_extension(str(user_study / "half_rate.py"))
    with Store.in_folder(user_study / "out", readonly=True) as store:
        study_id, _ = store.stored_plan()
        stored = store.runs_frame(study_id).set_index(["strategy", "source_index", "repeat"])
    result = study.retrain_run(user_study / "out", "target", "half_rate factor=0.25", 1, 0)
    assert float(result.final["test_accuracy"][0]) == stored.loc[("half_rate factor=0.25", 1, 0), "test_accuracy"]


def test_the_python_api_runs_a_registered_strategy_value(tmp_path):
    shrink = transferlab.load_extension(str(EXAMPLES / "shrink_perturb.py"))
    ShrinkPerturb = strategies.strategy_class("shrink_perturb")
    assert shrink == "shrink_perturb" and ShrinkPerturb.__module__ == "shrink_perturb"
    raw = {"name": "api", "seed": 2, "repeats": 2, "source_repeats": 1, "training": {"epochs": 2},
           "source": {"kind": "blobs", "seed": 5, "n_samples": 120, "n_train": 60},
           "target": {"kind": "blobs", "seed": 6, "n_samples": 120, "n_train": 60},
           "strategies": [strategies.Standalone(), ShrinkPerturb(shrink=0.3, perturb=0.05)]}
    results = transferlab.run(raw, tmp_path / "out", report=False)
    assert set(results.runs.strategy) == {"source model", "standalone", "shrink_perturb shrink=0.3 perturb=0.05"}
    assert list(results.verdict.strategy) == ["shrink_perturb shrink=0.3 perturb=0.05"]
    assert results["summary"] is results.summary and len(results) == 8


def test_shrink_and_perturb_starts_from_shrunk_source_weights_plus_fresh_ones():
    """`w = λ · w_source + σ · w_fresh` (Ash & Adams 2020) for every trainable array, the
    fresh draw being the run's own, as `standalone` would draw it."""
    transferlab.load_extension(str(EXAMPLES / "shrink_perturb.py"))
    strategy = strategies.strategy_class("shrink_perturb")(shrink=0.4, perturb=0.1)
    source_arch = models.mlp(3, (6, 4), 2, output_activation="softmax", batch_norm=True)
    recipe = strategy.recipe(source_arch, source_arch.head, epochs=3)
    source = models.fresh_weights(source_arch, np.random.default_rng(0))
    source = [tuple(array + 0.5 for array in arrays) for arrays in source]  # moving statistics ≠ fresh ones
    run = RunSpec("target", strategy, 0, 0, 11)
    started = initial_weights(recipe, run, {0: source})
    fresh = models.fresh_weights(recipe.arch, np.random.default_rng(np.random.SeedSequence(11, spawn_key=(0,))))
    for spec, got, was, drawn in zip(recipe.arch.layers, started, source, fresh):
        for index, array in enumerate(got):
            expected = 0.4 * was[index] + 0.1 * drawn[index] if index < spec.n_trainable else was[index]
            np.testing.assert_allclose(array, expected, rtol=1e-6)
    assert recipe.record()[0]["origin"] == "source layer 0 ×0.4 + fresh ×0.1"


def test_an_installed_entry_point_adds_a_strategy_study_files_can_name(user_study, tmp_path):
    site = tmp_path / "site"
    package = site / "mystrategies"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(HALF_RATE.replace("@transferlab.register_strategy\n", ""))
    info = site / "mystrategies-2.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mystrategies\nVersion: 2.1\n")
    (info / "top_level.txt").write_text("mystrategies\n")
    (info / "entry_points.txt").write_text("[transferlab.strategies]\nhalf_rate = mystrategies:HalfRate\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listed = _cli("strategies", cwd=user_study, env=env)
    assert listed.returncode == 0 and "half_rate" in listed.stdout, listed.stderr
    done = _cli("run", "study.toml", "--out", "installed", "--quiet", cwd=user_study, env=env)
    assert done.returncode == 0, done.stderr
    with Store.in_folder(user_study / "installed", readonly=True) as store:  # read as stored: not installed here
        assert store.study()["plan"]["extensions"]["half_rate"] == {"kind": "strategy", "module": "mystrategies",
                                                                    "version": "2.1"}


def test_a_strategy_that_breaks_the_contract_fails_when_it_is_defined():
    with pytest.raises(TypeError, match="NoRecipe must define recipe"):
        @dataclasses.dataclass(frozen=True)
        class NoRecipe(transferlab.Strategy):
            name: ClassVar[str] = "no_recipe"
            summary: ClassVar[str] = "forgets its one duty"
    with pytest.raises(TypeError, match="Nameless must define name"):
        class Nameless(transferlab.Strategy):
            def recipe(self, source, head, epochs, n_inputs=None, classes=None):
                return None

    @dataclasses.dataclass(frozen=True)
    class Terse(transferlab.Strategy):
        """Start from the source.

        More words here.
        """

        name: ClassVar[str] = "terse"

        def recipe(self, source, head, epochs, n_inputs=None, classes=None):
            return strategies.Transfer().recipe(source, head, epochs, n_inputs, classes)

    assert Terse.summary == "Start from the source" and Terse().label == "terse"


def test_a_recipe_that_breaks_the_contract_is_one_line_naming_it(tmp_path):
    (tmp_path / "old_style.py").write_text(HALF_RATE.replace("def recipe(self, source, head, epochs, n_inputs=None, "
                                                             "classes=None):", "def recipe(self, source, head):"))
    (tmp_path / "study.toml").write_text(STUDY)
    done = _cli("--extension", "old_style.py", "run", "study.toml", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2 and "\n" not in done.stderr.strip(), done.stderr
    assert "strategies[1]: old_style.HalfRate.recipe failed" in done.stderr
    assert "recipe(source, head, epochs, n_inputs, classes)" in done.stderr


def test_register_strategy_refuses_what_a_study_file_could_not_use():
    class Base(transferlab.Strategy, abstract=True):
        summary: ClassVar[str] = "s"

        def recipe(self, source, head, epochs, n_inputs=None, classes=None):
            return strategies.Standalone().recipe(source, head, epochs, n_inputs)

    @dataclasses.dataclass
    class Mutable(Base):
        name: ClassVar[str] = "mutable"

    @dataclasses.dataclass(frozen=True)
    class Listy(Base):
        widths: list = dataclasses.field(default_factory=list)
        name: ClassVar[str] = "listy"

    @dataclasses.dataclass(frozen=True)
    class Taken(Base):
        name: ClassVar[str] = "transfer"

    @dataclasses.dataclass(frozen=True)
    class BadName(Base):
        name: ClassVar[str] = "Half Rate"

    for cls, message in ((Mutable, "must be a frozen dataclass"), (Listy, "widths: a strategy parameter must be"),
                         (Taken, "the strategy name 'transfer' is taken by transferlab.strategies.Transfer"),
                         (BadName, "strategy name 'Half Rate' must be")):
        with pytest.raises(ExtensionError, match=message):
            transferlab.register_strategy(cls)
        assert strategies.strategy_class(cls.name) is not cls
    with pytest.raises(ExtensionError, match="is not a Strategy subclass"):
        transferlab.register_strategy(int)


def test_a_layer_that_breaks_the_contract_fails_when_it_is_defined():
    """A layer that forgets `forward` used to become an identity layer silently."""
    with pytest.raises(TypeError, match="NoForward must define forward"):
        @dataclasses.dataclass(frozen=True)
        class NoForward(layers.WeightlessLayer):
            type: ClassVar[str] = "no_forward"
            keras_class: ClassVar[str] = "NoForward"

            def to_keras(self, name):
                return None

            @classmethod
            def from_keras(cls, layer, source):
                return cls()
    with pytest.raises(TypeError, match="Wide must define fresh, weight_shapes, output_width"):
        class Wide(transferlab.Layer):
            type: ClassVar[str] = "wide"
            keras_class: ClassVar[str] = "Wide"

            def forward(self, params, state, x, ctx, index):
                return x, state

            def to_keras(self, name):
                return None

            @classmethod
            def from_keras(cls, layer, source):
                return cls()


SCALE = '''
from dataclasses import dataclass
from typing import ClassVar

import keras

import transferlab
from transferlab.errors import ModelFileError
from transferlab.layers import WeightlessLayer


@transferlab.register_layer
@dataclass(frozen=True)
class Scale(WeightlessLayer):
    """Multiply by a constant: Keras' `Rescaling(scale)`."""

    factor: float
    type: ClassVar[str] = "scale"
    keras_class: ClassVar[str] = "Rescaling"

    def forward(self, params, state, x, ctx, index):
        return x * self.factor, state

    def to_keras(self, name):
        return keras.layers.Rescaling(self.factor, name=name)

    @classmethod
    def from_keras(cls, layer, source):
        if layer.offset != 0:
            raise ModelFileError(f"{source}: layer {layer.name!r}: Rescaling with an offset is not supported")
        return cls(float(layer.scale))
'''


def test_a_users_layer_type_trains_as_keras_fit_trains_it_and_round_trips(tmp_path):
    """A registered layer: weights and every curve equal to `keras.Model.fit` with Keras' own
    layer in its place, the `.keras` round trip, and a study that names it in `layers`."""
    import keras

    from conftest import keras_fit_in_order
    from transferlab import engine, tasks

    transferlab.configure()
    (tmp_path / "scale_layer.py").write_text(SCALE)
    transferlab.load_extension(str(tmp_path / "scale_layer.py"))
    spec = layers.from_dict({"type": "scale", "factor": 0.5})
    arch = models.Architecture(2, (Dense(4, "relu"), spec, models.output_layer(3, "softmax")))
    initial = models.fresh_weights(arch, np.random.default_rng(1))
    task = tasks.blobs(3, n_samples=160, n_train=96)
    stacked = [tuple(a[None] for a in layer) for layer in initial]
    result = engine.train_models(arch.layers, stacked, np.ones((1, 3, 3), np.float32), [5], task.x_train,
                                 task.y_train, task.x_test, task.y_test, engine.TrainingSettings(epochs=3))
    model = models.build_keras_model(arch, initial)
    assert isinstance(model.layers[1], keras.layers.Rescaling)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    history = keras_fit_in_order(model, task.x_train, task.y_train, shuffle_orders([5], 3, 96)[0],
                                 task.x_test, task.y_test)
    for reference, trained in zip(models.keras_weights(model), result.weights, strict=True):
        for ref, got in zip(reference, trained, strict=True):
            np.testing.assert_allclose(got[0], ref, atol=1e-5)
    for name, values in history.items():
        np.testing.assert_allclose(result.curves[name][0], values, atol=1e-5, rtol=1e-5, err_msg=name)
    path = tmp_path / "scaled.keras"
    models.save_model_file(model, path)
    assert models.architecture_of(models.load_model_file(path), source=str(path)) == arch
    raw = {"name": "scaled", "seed": 1, "repeats": 1, "source_repeats": 1, "training": {"epochs": 2},
           "source": {"kind": "blobs", "seed": 1, "n_samples": 100, "n_train": 50},
           "target": {"kind": "blobs", "seed": 2, "n_samples": 100, "n_train": 50},
           "model": {"layers": [{"type": "dense", "units": 4, "activation": "relu"}, {"type": "scale", "factor": 0.5}]},
           "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}]}
    results = transferlab.run(raw, tmp_path / "out", report=False)
    assert (results.runs.status == "done").all()
    with Store.in_folder(tmp_path / "out", readonly=True) as store:
        assert store.stored_plan()[1].extensions == {"scale": {"kind": "layer type", "module": "scale_layer",
                                                               "version": "unversioned"}}


def test_origin_names_transferlabs_own_classes_as_none():
    assert registry.origin(strategies.Transfer) is None and registry.origin(layers.Dense) is None


def test_a_missing_extension_file_or_module_is_one_line(tmp_path):
    with pytest.raises(ExtensionError, match="nothere.py: extension file not found"):
        transferlab.load_extension(str(tmp_path / "nothere.py"))
    with pytest.raises(ExtensionError, match="no_such_module_xyz: cannot import the extension module"):
        transferlab.load_extension("no_such_module_xyz")
    (tmp_path / "broken_ext.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ExtensionError, match="the extension failed to import: RuntimeError: boom"):
        transferlab.load_extension(str(tmp_path / "broken_ext.py"))
    assert "broken_ext" not in sys.modules


def test_extension_may_come_before_or_after_the_command():
    from transferlab.cli import extensions_first

    assert extensions_first(["transferlab", "run", "s.toml", "--extension", "mine.py", "--out", "o"]) == [
        "transferlab", "--extension", "mine.py", "run", "s.toml", "--out", "o"]
    assert extensions_first(["transferlab", "-x", "a.py", "report", "out", "--extension=b.py"]) == [
        "transferlab", "-x", "a.py", "--extension=b.py", "report", "out"]
    assert extensions_first(["transferlab", "run", "s.toml"]) == ["transferlab", "run", "s.toml"]
