"""Wide layers and many rows: the per-model layout (vmapped matrix products, scanned
batches, evaluation in row chunks, row orders drawn a chunk of epochs at a time) against
a real keras.Model.fit."""

import time

import keras
import numpy as np

from conftest import keras_fit_in_order
from transferlab import engine, models, tasks
from transferlab.layers import BatchNormalization, Dense, LayerNormalization
from transferlab.orders import shuffle_orders


def _fit_both(arch, initial, task, settings, keras_optimizer, epochs, frozen=(), seed=3):
    multipliers = np.ones((1, epochs, len(arch.layers)), np.float32)
    multipliers[0, :, list(frozen)] = 0.0
    stacked = [tuple(a[None] for a in layer) for layer in initial]
    started = time.perf_counter()
    result = engine.train_models(arch.layers, stacked, multipliers, [seed], task.x_train, task.y_train, task.x_test,
                                 task.y_test, engine.TrainingSettings(epochs=epochs, **settings))
    seconds = time.perf_counter() - started
    model = models.build_keras_model(arch, initial)
    for index in frozen:
        model.layers[index].trainable = False
    model.compile(optimizer=keras_optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    order = shuffle_orders([seed], epochs, len(task.x_train))[0]
    history = keras_fit_in_order(model, task.x_train, task.y_train, order, task.x_test, task.y_test,
                                 batch_size=settings.get("batch_size", 32))
    return result, model, history, seconds


def _assert_close(result, model, history, atol):
    for layer, (reference, trained) in enumerate(zip(models.keras_weights(model), result.weights, strict=True)):
        for ref, got in zip(reference, trained, strict=True):
            np.testing.assert_allclose(got[0], ref, atol=atol, rtol=0, err_msg=f"layer {layer}")
    for name, values in history.items():
        np.testing.assert_allclose(result.curves[name][0], values, atol=atol, rtol=1e-5, err_msg=name)


def test_hidden_256_256_on_512_features_and_20000_rows_equals_keras_fit():
    task = tasks.blobs(4, n_samples=21_000, n_train=20_000, n_features=512, centers=3, cluster_std=8.0)
    arch = models.mlp(512, (256, 256), 3)
    plan = engine.layer_plan(arch.layers)
    assert engine.per_model_layout(plan, 512) and engine.batches_per_group(plan, 512, 32) == 1
    assert engine.models_per_block(plan, 512) < engine.MODELS_PER_BLOCK  # one run pads to few copies
    initial = models.fresh_weights(arch, np.random.default_rng(0))
    result, model, history, seconds = _fit_both(arch, initial, task, {}, keras.optimizers.SGD(0.01), epochs=2)
    _assert_close(result, model, history, atol=1e-4)
    print(f"hidden [256, 256], 512 features, 20,000 rows, 2 epochs: {seconds:.1f} s with compilation")


def test_wide_layers_with_normalisation_adam_clipping_and_a_frozen_layer_equal_keras_fit():
    task = tasks.blobs(6, n_samples=300, n_train=200, n_features=20, centers=4)
    arch = models.Architecture(20, (Dense(24, "relu", "he_uniform"), BatchNormalization(), Dense(32, "tanh"),
                                    LayerNormalization(), Dense(4, "softmax")))
    assert engine.per_model_layout(engine.layer_plan(arch.layers), 20)
    initial = models.fresh_weights(arch, np.random.default_rng(1))
    settings = dict(optimizer="adam", learning_rate=0.003, clipnorm=0.5, batch_size=48)
    result, model, history, _ = _fit_both(arch, initial, task, settings,
                                          keras.optimizers.Adam(0.003, clipnorm=0.5), epochs=3, frozen=(0,))
    _assert_close(result, model, history, atol=1e-5)
