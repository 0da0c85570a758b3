"""The engine against independent references: a real keras.Model.fit, hand-computed SGD
updates, and single-model runs of itself."""

import jax
import keras
import numpy as np
import pytest

from conftest import keras_fit_in_order
from transferlab import engine, models, tasks
from transferlab.orders import shuffle_orders

ACTIVATIONS = ("relu", "relu", "softmax")


@pytest.fixture(scope="module")
def problem():
    return tasks.blobs(2)


def _stack(weights_list):
    return [tuple(np.stack([w[l][i] for w in weights_list]) for i in range(len(weights_list[0][l])))
            for l in range(len(weights_list[0]))]


def _train(problem, weights_list, seeds, epochs, multipliers=None, config=None, layers=ACTIVATIONS, **kwargs):
    config = config or engine.TrainingSettings(epochs=epochs)
    n_layers = len(weights_list[0])
    if multipliers is None:
        multipliers = np.ones((len(weights_list), epochs, n_layers), np.float32)
    orders = shuffle_orders(seeds, epochs, len(problem.x_train))
    result = engine.train_models(
        layers, _stack(weights_list), multipliers, seeds,
        problem.x_train, problem.y_train, problem.x_test, problem.y_test, config, **kwargs,
    )
    return result, orders


SHARED_EPOCHS = 100  # tests of the tutorial's model share this program (compiled once)


@pytest.mark.parametrize("epochs", [1, SHARED_EPOCHS])
def test_engine_equals_keras_fit(problem, epochs):
    arch = models.mlp(2, (5, 5), 3)
    initial = models.fresh_weights(arch, np.random.default_rng(11))
    result, orders = _train(problem, [initial], [5], epochs)

    model = models.build_keras_model(arch, initial)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    history = keras_fit_in_order(model, problem.x_train, problem.y_train, orders[0], problem.x_test, problem.y_test)

    for (k_ref, b_ref), (k, b) in zip(models.keras_weights(model), result.weights):
        np.testing.assert_allclose(k[0], k_ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(b[0], b_ref, atol=1e-5, rtol=0)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(result.curves[name][0], history[name], atol=1e-5, rtol=0)
    evaluated = model.evaluate(problem.x_test, problem.y_test, verbose=0, return_dict=True)
    assert result.final["test_accuracy"][0] == pytest.approx(evaluated["accuracy"], abs=1e-6)
    assert result.final["test_loss"][0] == pytest.approx(evaluated["loss"], abs=1e-5)


def test_engine_equals_keras_fit_with_momentum_and_partial_batches():
    problem = tasks.blobs(2, n_samples=200, n_train=100)  # 4 batches of 24 and one of 4
    arch = models.mlp(2, (4, 6), 3, activation="tanh", kernel_initializer="glorot_uniform")
    initial = models.fresh_weights(arch, np.random.default_rng(3))
    config = engine.TrainingSettings(epochs=5, batch_size=24, learning_rate=0.01, momentum=0.9, nesterov=True)
    orders = shuffle_orders([9], 5, 100)
    result = engine.train_models(("tanh", "tanh", "softmax"), _stack([initial]), np.ones((1, 5, 3), np.float32),
                                 [9], problem.x_train, problem.y_train, problem.x_test, problem.y_test, config)
    model = models.build_keras_model(arch, initial)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    keras_fit_in_order(model, problem.x_train, problem.y_train, orders[0], problem.x_test, problem.y_test, batch_size=24)
    for (k_ref, _), (k, _) in zip(models.keras_weights(model), result.weights):
        np.testing.assert_allclose(k[0], k_ref, atol=1e-5, rtol=0)


def test_frozen_layers_stay_bit_identical_and_others_move(problem):
    arch = models.mlp(2, (5, 5), 3)
    source = models.fresh_weights(arch, np.random.default_rng(0))
    multipliers = np.ones((3, SHARED_EPOCHS, 3), np.float32)
    multipliers[0, :, :1] = 0  # freeze=1
    multipliers[1, :, :2] = 0  # freeze=2
    result, _ = _train(problem, [source] * 3, [1, 2, 3], SHARED_EPOCHS, multipliers)
    for model, frozen in enumerate([1, 2, 0]):
        for layer, (kernel, bias) in enumerate(result.weights):
            if layer < frozen:
                assert np.array_equal(kernel[model], source[layer][0])
                assert np.array_equal(bias[model], source[layer][1])
            else:
                assert not np.array_equal(kernel[model], source[layer][0])


def test_a_layer_with_multiplier_moves_like_sgd_at_that_rate(problem):
    """One step, multiplier 0.1 on the first layer: equals a hand-computed SGD update
    with learning rate 0.001 on that layer (gradient from Keras' own loss via jax.grad)."""
    import jax
    import jax.numpy as jnp

    arch = models.mlp(2, (5, 5), 3)
    initial = models.fresh_weights(arch, np.random.default_rng(4))
    small = tasks.Task("one-batch", problem.x_train[:32], problem.y_train[:32], problem.x_test, problem.y_test)
    multipliers = np.array([[[0.1, 1.0, 1.0]]], np.float32)
    orders = np.arange(32)[None, None, :]
    result = engine.train_models(ACTIVATIONS, _stack([initial]), multipliers, [0], small.x_train, small.y_train,
                                 small.x_test, small.y_test, engine.TrainingSettings(epochs=1), orders=orders)

    def loss(params):
        model = models.build_keras_model(arch)
        trainable = [v for pair in params for v in pair]
        predictions, _ = model.stateless_call(trainable, [], jnp.asarray(small.x_train))
        return jnp.mean(keras.losses.categorical_crossentropy(small.y_train, predictions))

    grads = jax.grad(loss)([(jnp.asarray(k), jnp.asarray(b)) for k, b in initial])
    for layer, rate in enumerate([0.001, 0.01, 0.01]):
        expected = initial[layer][0] - np.float32(rate) * np.asarray(grads[layer][0])
        np.testing.assert_allclose(result.weights[layer][0][0], expected, atol=1e-7, rtol=0)


def test_l2_penalty_adds_the_analytic_gradient(problem):
    """loss + α/2‖w − a‖²: one step moves the kernel by an extra −lr·α·(w − a)."""
    arch = models.mlp(2, (5, 5), 3)
    initial = models.fresh_weights(arch, np.random.default_rng(5))
    anchor = models.fresh_weights(arch, np.random.default_rng(6))
    multipliers = np.ones((1, 1, 3), np.float32)
    orders = np.arange(32)[None, None, :]
    args = (ACTIVATIONS, _stack([initial]), multipliers, [0], problem.x_train[:32], problem.y_train[:32],
            problem.x_test, problem.y_test, engine.TrainingSettings(epochs=1))
    plain = engine.train_models(*args, orders=orders)
    alpha = np.array([[0.5, 0.0, 2.0]], np.float32)
    pulled = engine.train_models(*args, anchors=[np.stack([a[0]]) for a in anchor], penalties=alpha, orders=orders)
    for layer in range(3):
        extra = -0.01 * alpha[0, layer] * (initial[layer][0] - anchor[layer][0])
        np.testing.assert_allclose(pulled.weights[layer][0][0] - plain.weights[layer][0][0], extra, atol=1e-7)


def test_a_shard_equals_its_models_trained_one_by_one(problem):
    arch = models.mlp(2, (5, 5), 3)
    initial = [models.fresh_weights(arch, np.random.default_rng(s)) for s in range(5)]
    seeds = [10, 11, 12, 13, 14]
    multipliers = np.ones((5, SHARED_EPOCHS, 3), np.float32)
    multipliers[2, :, 0] = 0
    shard, _ = _train(problem, initial, seeds, SHARED_EPOCHS, multipliers)
    for i in range(5):
        alone, _ = _train(problem, [initial[i]], [seeds[i]], SHARED_EPOCHS, multipliers[i : i + 1])
        np.testing.assert_allclose(alone.final["test_accuracy"][0], shard.final["test_accuracy"][i], atol=1e-6)
        for (k_alone, _), (k_shard, _) in zip(alone.weights, shard.weights):
            np.testing.assert_allclose(k_alone[0], k_shard[i], atol=1e-6, rtol=0)
        np.testing.assert_allclose(alone.curves["val_loss"][0], shard.curves["val_loss"][i], atol=1e-6)


def test_each_seed_gives_its_own_shuffle_and_the_same_seed_the_same():
    a = shuffle_orders([1, 2, 1], 3, 50)
    assert np.array_equal(a[0], a[2]) and not np.array_equal(a[0], a[1])
    assert all(sorted(order) == list(range(50)) for order in a.reshape(-1, 50))
    assert not np.array_equal(a[0, 0], a[0, 1])  # reshuffled every epoch


def _compare_with_keras(arch, initial, problem, orders, result, metrics, loss, frozen=()):
    model = models.build_keras_model(arch, initial)
    for index in frozen:
        model.layers[index].trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss, metrics=metrics)
    history = keras_fit_in_order(model, problem.x_train, problem.y_train, orders[0], problem.x_test, problem.y_test)
    for layer, (reference, trained) in enumerate(zip(models.keras_weights(model), result.weights)):
        for ref, got in zip(reference, trained):
            np.testing.assert_allclose(got[0], ref, atol=2e-5, rtol=0, err_msg=f"layer {layer}")
    for name, values in history.items():
        name = name.replace("r2_score", "r2")  # keras.metrics.R2Score's history name
        np.testing.assert_allclose(result.curves[name][0], values, atol=2e-5, rtol=1e-5, err_msg=name)
    return model


BN_EPOCHS = 4  # one epoch count for every BatchNormalization test: one compiled program


def test_batch_normalization_equals_keras_fit(problem):
    arch = models.mlp(2, (5, 5), 3, batch_norm=True)
    assert [type(s).__name__ for s in arch.layers] == ["Dense", "BatchNormalization"] * 2 + ["Dense"]
    initial = models.fresh_weights(arch, np.random.default_rng(8))
    result, orders = _train(problem, [initial], [4], BN_EPOCHS, layers=arch.layers)
    _compare_with_keras(arch, initial, problem, orders, result, ["accuracy"], "categorical_crossentropy")
    assert not np.array_equal(result.weights[1][2][0], initial[1][2])  # moving mean moved


def test_a_frozen_batch_normalization_layer_runs_in_inference_mode_like_keras(problem):
    arch = models.mlp(2, (5, 5), 3, batch_norm=True)
    initial = models.fresh_weights(arch, np.random.default_rng(9))
    initial[1] = (initial[1][0] * 1.5, initial[1][1] + 0.2, initial[1][2] + 0.3, initial[1][3] * 2.0)
    multipliers = np.ones((1, BN_EPOCHS, 5), np.float32)
    multipliers[0, :, :2] = 0  # the first Dense and its BatchNormalization frozen
    result, orders = _train(problem, [initial], [6], BN_EPOCHS, multipliers, layers=arch.layers)
    _compare_with_keras(arch, initial, problem, orders, result, ["accuracy"], "categorical_crossentropy",
                        frozen=(0, 1))
    for array, start in zip(result.weights[1], initial[1]):
        assert np.array_equal(array[0], start)  # gamma, beta and moving statistics untouched


def test_bn_frozen_train_uses_batch_statistics_but_keeps_gamma_and_beta(problem):
    arch = models.mlp(2, (5, 5), 3, batch_norm=True)
    initial = models.fresh_weights(arch, np.random.default_rng(9))
    multipliers = np.ones((1, BN_EPOCHS, 5), np.float32)
    multipliers[0, :, :2] = 0
    inference, _ = _train(problem, [initial], [6], BN_EPOCHS, multipliers, layers=arch.layers)
    train, _ = _train(problem, [initial], [6], BN_EPOCHS, multipliers, layers=arch.layers, bn_frozen="train")
    gamma, beta, moving_mean, _ = train.weights[1]
    assert np.array_equal(gamma[0], initial[1][0]) and np.array_equal(beta[0], initial[1][1])
    assert not np.array_equal(moving_mean[0], initial[1][2])  # the statistics kept moving
    assert not np.allclose(train.weights[2][0], inference.weights[2][0])  # and training differs


@pytest.fixture(scope="module")
def regression_problem():
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=300, n_features=3, noise=5.0, random_state=4)
    y = ((y - y[:200].mean()) / y[:200].std())[:, None]
    x, y = x.astype(np.float32), y.astype(np.float32)
    return tasks.Task("regression", x[:200], y[:200], x[200:], y[200:], kind="regression")


def test_regression_equals_keras_fit_with_mse_mae_and_r2(regression_problem):
    from sklearn.metrics import r2_score

    problem = regression_problem
    arch = models.mlp(3, (5, 5), 1, output_activation="linear")
    initial = models.fresh_weights(arch, np.random.default_rng(2))
    result, orders = _train(problem, [initial], [3], 6, layers=arch.layers, loss="mean_squared_error")
    assert set(result.curves) == {"loss", "mae", "r2", "val_loss", "val_mae", "val_r2"}
    model = _compare_with_keras(arch, initial, problem, orders, result, ["mae", keras.metrics.R2Score()],
                                "mean_squared_error")
    predictions = np.asarray(model.predict(problem.x_test, verbose=0))
    assert result.final["test_r2"][0] == pytest.approx(r2_score(problem.y_test, predictions), abs=1e-5)
    assert result.final["test_mae"][0] == pytest.approx(np.abs(problem.y_test - predictions).mean(), abs=1e-5)
    assert result.final["test_loss"][0] == pytest.approx(np.square(problem.y_test - predictions).mean(), abs=1e-5)


def test_learning_rate_and_momentum_are_runtime_inputs():
    """Another learning rate or momentum reuses the compiled program (no trace, no compile)
    and still equals Keras."""
    problem = tasks.blobs(2, n_samples=192, n_train=96)  # 3 batches an epoch: a quick compile
    arch = models.mlp(2, (5, 5), 3)
    initial = models.fresh_weights(arch, np.random.default_rng(21))
    _train(problem, [initial], [4], 3, config=engine.TrainingSettings(epochs=3, learning_rate=0.01, momentum=0.5))
    built = engine.compiled_programs()
    events, listening = [], [True]
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kwargs: events.append(event) if listening[0] and event in _TRACE_AND_COMPILE else None
    )
    settings = ((0.05, 0.9), (0.002, 0.1))
    results = [_train(problem, [initial], [4], 3, config=engine.TrainingSettings(epochs=3, learning_rate=rate, momentum=m))
               for rate, m in settings]
    listening[0] = False
    assert engine.compiled_programs() == built and events == []
    for (rate, momentum), (result, orders) in zip(settings, results):
        model = models.build_keras_model(arch, initial)
        model.compile(optimizer=keras.optimizers.SGD(rate, momentum=momentum), loss="categorical_crossentropy")
        keras_fit_in_order(model, problem.x_train, problem.y_train, orders[0], problem.x_test, problem.y_test)
        for (k_ref, b_ref), (k, b) in zip(models.keras_weights(model), result.weights):
            np.testing.assert_allclose(k[0], k_ref, atol=1e-5, rtol=0)
            np.testing.assert_allclose(b[0], b_ref, atol=1e-5, rtol=0)


_TRACE_AND_COMPILE = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")
