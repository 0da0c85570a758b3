"""Adam, AdamW and RMSprop in the engine against a real keras.Model.fit: plain, with
frozen layers and learning-rate multipliers, and across an unfreezing (Keras compiles
again with a fresh optimizer; the engine restarts the optimizer of that model)."""

import keras
import numpy as np
import pytest

from conftest import keras_fit_in_order
from transferlab import engine, models, study, tasks
from transferlab.loading import study_from_dict
from transferlab.store import Store
from transferlab.orders import shuffle_orders

CASES = {
    "adam+clipvalue": (dict(optimizer="adam", learning_rate=0.003, clipvalue=0.05),
                       lambda: keras.optimizers.Adam(0.003, clipvalue=0.05)),
    "adamw+amsgrad+clipnorm": (
        dict(optimizer="adamw", learning_rate=0.002, weight_decay=0.01, beta_1=0.8, amsgrad=True, clipnorm=0.05),
        lambda: keras.optimizers.AdamW(0.002, weight_decay=0.01, beta_1=0.8, amsgrad=True, clipnorm=0.05),
    ),
    "rmsprop centred+momentum": (
        dict(optimizer="rmsprop", learning_rate=0.002, rho=0.8, momentum=0.5, centered=True),
        lambda: keras.optimizers.RMSprop(0.002, rho=0.8, momentum=0.5, centered=True),
    ),
}


EPOCHS = 20  # one epoch count throughout: each optimizer compiles one program for the module


@pytest.fixture(scope="module")
def problem():
    return tasks.blobs(2, n_samples=256, n_train=128)  # 4 batches an epoch: a quick compile


@pytest.fixture(scope="module")
def start():
    arch = models.mlp(2, (5, 5), 3)
    return arch, models.fresh_weights(arch, np.random.default_rng(11))


def _engine(problem, arch, initial, settings, epochs, multipliers=None):
    config = engine.TrainingSettings(epochs=epochs, **settings)
    orders = shuffle_orders([5], epochs, len(problem.x_train))
    if multipliers is None:
        multipliers = np.ones((epochs, len(arch.layers)), np.float32)
    stacked = [tuple(a[None] for a in layer) for layer in initial]
    result = engine.train_models(arch.layers, stacked, multipliers[None], [5], problem.x_train, problem.y_train,
                                 problem.x_test, problem.y_test, config)
    return result, orders[0]


def _assert_same_weights(model, result, atol=1e-5):
    for reference, trained in zip(models.keras_weights(model), result.weights, strict=True):
        for ref, ours in zip(reference, trained, strict=True):
            np.testing.assert_allclose(ours[0], ref, atol=atol, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_equals_keras_fit(problem, start, case):
    """Curves after every epoch (the first included) and the weights after the last."""
    arch, initial = start
    settings, keras_optimizer = CASES[case]
    result, order = _engine(problem, arch, initial, settings, EPOCHS)
    model = models.build_keras_model(arch, initial)
    model.compile(optimizer=keras_optimizer(), loss="categorical_crossentropy", metrics=["accuracy"])
    history = keras_fit_in_order(model, problem.x_train, problem.y_train, order, problem.x_test, problem.y_test)
    _assert_same_weights(model, result)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(result.curves[name][0], history[name], atol=1e-5, rtol=0)


def test_adam_with_a_frozen_layer_and_a_rate_multiplier(problem, start):
    """Layer 0 frozen (bit-identical), the others at multiplier 0.5 of 0.006 = Keras at 0.003."""
    arch, initial = start
    multipliers = np.full((EPOCHS, 3), 0.5, np.float32)
    multipliers[:, 0] = 0
    settings = dict(CASES["adam+clipvalue"][0], learning_rate=0.006)
    result, order = _engine(problem, arch, initial, settings, EPOCHS, multipliers)
    model = models.build_keras_model(arch, initial)
    model.layers[0].trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.003, clipvalue=0.05), loss="categorical_crossentropy")
    keras_fit_in_order(model, problem.x_train, problem.y_train, order, problem.x_test, problem.y_test)
    _assert_same_weights(model, result)
    np.testing.assert_array_equal(result.weights[0][0][0], initial[0][0])


@pytest.mark.parametrize("case", ["adam+clipvalue", "rmsprop centred+momentum"])
def test_unfreezing_restarts_the_optimizer_as_keras_compiling_again_does(problem, start, case):
    """The first two layers frozen for 3 epochs, then all train (two_stage, gradual_unfreeze):
    Keras must compile again with a fresh optimizer; its moments and step count start over."""
    arch, initial = start
    settings, keras_optimizer = CASES[case]
    head = 3
    multipliers = np.ones((EPOCHS, 3), np.float32)
    multipliers[:head, :2] = 0
    result, order = _engine(problem, arch, initial, settings, EPOCHS, multipliers)
    model = models.build_keras_model(arch, initial)
    for layer in model.layers[:2]:
        layer.trainable = False
    model.compile(optimizer=keras_optimizer(), loss="categorical_crossentropy")
    keras_fit_in_order(model, problem.x_train, problem.y_train, order[:head], problem.x_test, problem.y_test)
    for layer in model.layers[:2]:
        layer.trainable = True
    model.compile(optimizer=keras_optimizer(), loss="categorical_crossentropy")
    keras_fit_in_order(model, problem.x_train, problem.y_train, order[head:], problem.x_test, problem.y_test)
    _assert_same_weights(model, result)


def test_a_study_with_adam_runs_stores_its_optimizer_and_retrains_alone(tmp_path, small_study_dict):
    small_study_dict["training"].update(optimizer="adam", learning_rate=0.01)
    small_study_dict["strategies"].append({"name": "gradual_unfreeze", "every": 1})
    study.run_study(study_from_dict(small_study_dict), tmp_path)
    with Store.in_folder(tmp_path) as store:
        _, plan = store.stored_plan()
        runs = store.runs_frame(1).set_index(["role", "strategy", "source_index", "repeat"])
    assert plan.training.optimizer == "adam" and plan.training.learning_rate == 0.01
    assert plan.training.beta_2 == 0.999  # Keras' default, filled in and stored
    for key in [("target", "gradual_unfreeze every=1", 1, 2), ("target", "standalone", -1, 0)]:
        alone = study.retrain_run(tmp_path, *key)
        assert alone.final["test_loss"][0] == runs.loc[key, "test_loss"]


def test_clipping_is_active_in_those_cases(problem, start):
    """The clipped cases above would differ without clipping (so the comparison tests it)."""
    arch, initial = start
    for case in ("adamw+amsgrad+clipnorm", "adam+clipvalue"):
        settings = CASES[case][0]
        clipped, _ = _engine(problem, arch, initial, settings, EPOCHS)
        plain = {k: v for k, v in settings.items() if not k.startswith("clip")}
        unclipped, _ = _engine(problem, arch, initial, plain, EPOCHS)
        assert not np.allclose(clipped.weights[0][0], unclipped.weights[0][0], atol=1e-3)


def test_global_clipnorm_over_the_trainable_layers_equals_keras(problem, start):
    """One norm over every trainable gradient of a model; a frozen layer is not part of it."""
    arch, initial = start
    multipliers = np.ones((EPOCHS, 3), np.float32)
    multipliers[:, 0] = 0
    settings = dict(optimizer="sgd", learning_rate=0.05, momentum=0.5, global_clipnorm=0.05)
    result, order = _engine(problem, arch, initial, settings, EPOCHS, multipliers)
    model = models.build_keras_model(arch, initial)
    model.layers[0].trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.5, global_clipnorm=0.05),
                  loss="categorical_crossentropy")
    keras_fit_in_order(model, problem.x_train, problem.y_train, order, problem.x_test, problem.y_test)
    _assert_same_weights(model, result)
    unclipped, _ = _engine(problem, arch, initial, dict(settings, global_clipnorm=0.0), EPOCHS, multipliers)
    assert not np.allclose(result.weights[2][0], unclipped.weights[2][0], atol=1e-3)
