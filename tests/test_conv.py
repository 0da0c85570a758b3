"""Convolutional networks: each layer type against Keras `fit`, shapes and their messages,
`.keras` round trips, and a CNN study from run to interrupt, resume, report, retrain and
`results()`."""

import numpy as np
import pytest
from conftest import keras_fit_in_order
from typer.testing import CliRunner

import transferlab
from transferlab import config, engine, initializers, kernels, layers, models, study
from transferlab.commands import app
from transferlab.errors import ModelFileError
from transferlab.api import load_study
from transferlab.orders import shuffle_orders

keras = pytest.importorskip("keras")
EPOCHS = 2


def L(**entry):
    return layers.from_dict(entry)


@pytest.fixture(scope="module")
def images():
    """Digits as 8×8×1 images: 96 training rows (three batches, the last partial), 40 test rows."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = np.eye(10, dtype=np.float32)[digits.target]
    return x[:90], y[:90], x[90:130], y[90:130]


@pytest.fixture(scope="module")
def sequences():
    """Length-12 sequences of 2 channels, 3 classes (a sine's frequency)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 100)
    t = np.arange(12)[None, :]
    x = np.stack([np.sin(t * (labels[:, None] + 1) * 0.5), rng.normal(0, 0.3, (100, 12))], axis=-1)
    return x[:70].astype(np.float32), np.eye(3, dtype=np.float32)[labels[:70]], x[70:].astype(np.float32), \
        np.eye(3, dtype=np.float32)[labels[70:]]


def _train_and_compare(arch, data, frozen=(), seed=0):
    """Train 3 models of `arch` in one call; model 0 must equal a real `keras.Model.fit`
    (weights and every curve to 1e-5)."""
    x_train, y_train, x_test, y_test = data
    initial = [models.fresh_weights(arch, np.random.default_rng(seed + i)) for i in range(3)]
    stacked = [tuple(np.stack([w[layer][i] for w in initial]) for i in range(len(initial[0][layer])))
               for layer in range(len(arch.layers))]
    multipliers = np.ones((3, EPOCHS, len(arch.layers)), np.float32)
    multipliers[:, :, list(frozen)] = 0.0
    seeds = [seed + 11, seed + 12, seed + 13]
    result = engine.train_models(arch.layers, stacked, multipliers, seeds, x_train, y_train, x_test, y_test,
                                 engine.TrainingSettings(epochs=EPOCHS))
    model = models.build_keras_model(arch, initial[0])
    for index in frozen:
        model.layers[index].trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    history = keras_fit_in_order(model, x_train, y_train, shuffle_orders(seeds, EPOCHS, len(x_train))[0], x_test,
                                 y_test)
    for layer, (reference, trained) in enumerate(zip(models.keras_weights(model), result.weights)):
        for ref, got in zip(reference, trained):
            np.testing.assert_allclose(got[0], ref, atol=1e-5, rtol=0, err_msg=f"layer {layer}")
    for name, values in history.items():
        np.testing.assert_allclose(result.curves[name][0], values, atol=1e-5, rtol=1e-5, err_msg=name)
    return result, initial


def test_conv2d_valid_and_same_strides_pooling_and_batch_norm_equal_keras_fit(images):
    arch = models.Architecture((8, 8, 1), (
        L(type="conv2d", filters=4, kernel_size=3, activation="relu"),
        L(type="batch_normalization"),
        L(type="max_pooling2d", pool_size=2),
        L(type="conv2d", filters=3, kernel_size=2, strides=2, padding="same", use_bias=False),
        L(type="average_pooling2d", pool_size=2, strides=1, padding="same"),
        L(type="flatten"), layers.Dense(6, "relu"), layers.Dense(10, "softmax")))
    assert arch.layer_shapes == [(8, 8, 1), (6, 6, 4), (6, 6, 4), (3, 3, 4), (2, 2, 3), (2, 2, 3), (12,), (6,), (10,)]
    result, initial = _train_and_compare(arch, images)
    assert not np.array_equal(result.weights[1][2][0], initial[0][1][2])  # moving mean over the feature maps moved


def test_dilation_layer_norm_global_max_and_a_frozen_conv_equal_keras_fit(images):
    arch = models.Architecture((8, 8, 1), (
        L(type="conv2d", filters=4, kernel_size=2, dilation_rate=2, activation="tanh", kernel_initializer="he_normal"),
        L(type="layer_normalization"),
        L(type="conv2d", filters=5, kernel_size=3, padding="same", activation="elu"),
        L(type="activation", activation="softmax"),  # over each position's channels, as Keras
        L(type="global_max_pooling2d"), layers.Dense(10, "softmax")))
    result, initial = _train_and_compare(arch, images, frozen=(0,), seed=3)
    for got, start in zip(result.weights[0], initial[0][0]):
        assert np.array_equal(got[0], start)  # frozen: bit for bit
    assert not np.array_equal(result.weights[2][0][0], initial[0][2][0])


def test_conv1d_pooling_and_a_frozen_batch_norm_on_sequences_equal_keras_fit(sequences):
    arch = models.Architecture((12, 2), (
        L(type="conv1d", filters=4, kernel_size=3, activation="relu"),
        L(type="batch_normalization"),
        L(type="max_pooling1d", pool_size=2),
        L(type="conv1d", filters=4, kernel_size=2, strides=2, padding="same"),
        L(type="average_pooling1d", pool_size=2, padding="same"),
        L(type="global_average_pooling1d"), layers.Dense(3, "softmax")))
    result, initial = _train_and_compare(arch, sequences, frozen=(1,), seed=5)
    for got, start in zip(result.weights[1], initial[0][1]):
        assert np.array_equal(got[0], start)  # a frozen BatchNormalization runs on its moving statistics


@pytest.mark.parametrize("shape, window, strides, padding, dilation", [
    ((7, 9, 3), (3, 2), (2, 1), "same", (1, 1)), ((8, 8, 2), (3, 3), (1, 1), "valid", (2, 2)),
    ((8, 8, 2), (2, 2), (3, 3), "valid", (1, 1)), ((11, 2), (3,), (2,), "same", (1,)), ((11, 2), (2,), (1,), "same", (3,)),
])
def test_both_lowerings_and_their_gradients_give_keras_numbers(shape, window, strides, padding, dilation, monkeypatch):
    """The dense-equivalent matrix, patches × matrix (with its own backward pass) and XLA's
    convolution, each against
    Keras' `ops.conv`; the gradients of x and the kernel against JAX's own of Keras' op."""
    import jax

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4,) + shape).astype(np.float32)
    kernel = rng.normal(size=window + (shape[-1], 3)).astype(np.float32)
    upstream = None

    def keras_loss(x, kernel):
        out = keras.ops.conv(x, kernel, strides=strides, padding=padding, dilation_rate=dilation)
        return (out * upstream).sum()

    reference = np.asarray(keras.ops.conv(x, kernel, strides=strides, padding=padding, dilation_rate=dilation))
    upstream = rng.normal(size=reference.shape).astype(np.float32)
    want = jax.grad(keras_loss, argnums=(0, 1))(x, kernel)
    for lowering in ("matrix", "patches", "direct"):
        monkeypatch.setattr(kernels, "LOWERING", lowering)
        got = kernels.convolve(x, kernel, strides, padding, dilation)
        np.testing.assert_allclose(np.asarray(got), reference, atol=1e-4)
        grads = jax.grad(lambda a, b: (kernels.convolve(a, b, strides, padding, dilation) * upstream).sum(),
                         argnums=(0, 1))(x, kernel)
        for mine, theirs in zip(grads, want):
            np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), atol=1e-4, rtol=1e-5)


def test_a_conv_kernel_is_initialised_with_keras_fans():
    from keras.src.initializers.random_initializers import compute_fans

    for shape in [(3, 3, 2, 8), (5, 4, 16), (7, 3)]:
        assert initializers.fans(shape) == tuple(int(n) for n in compute_fans(shape))


@pytest.mark.parametrize("inputs, specs, message", [
    ((4, 4, 1), [{"type": "conv2d", "filters": 2, "kernel_size": 5}],
     r"layer 0 \(Conv2D\(2, 5×5, linear\)\): its input \(4, 4, 1\) is smaller than its window 5×5"),
    ((8, 8, 1), [{"type": "conv2d", "filters": 2, "kernel_size": 3}],
     r"layer 1 \(Dense\(3, softmax\)\), the output layer, gets feature maps of shape 6×6×2; put a flatten"),
    (16, [{"type": "conv1d", "filters": 2, "kernel_size": 3}],
     r"layer 0 \(Conv1D\(2, 3, linear\)\): Conv1D takes inputs of shape \(length, channels\); its input has "
     r"shape \(16,\)"),
    ((8, 8, 3), [{"type": "max_pooling1d"}], r"layer 0 .*MaxPooling1D takes inputs of shape \(length, channels\)"),
])
def test_a_shape_that_does_not_fit_names_the_layer(inputs, specs, message):
    with pytest.raises(ModelFileError, match=message):
        models.Architecture(inputs, tuple(layers.from_dict(s) for s in specs) + (layers.Dense(3, "softmax"),))


@pytest.mark.parametrize("entry, message", [
    ({"type": "conv2d", "filters": 3}, r"conv2d needs kernel_size"),
    ({"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": "causal"}, r"padding 'causal' is not supported"),
    ({"type": "conv2d", "filters": 3, "kernel_size": 3, "strides": 2, "dilation_rate": 2}, r"strides above 1 with"),
    ({"type": "conv2d", "filters": 0, "kernel_size": 3}, r"filters must be a positive whole number"),
    ({"type": "max_pooling2d", "pool_size": [2, 2, 2]}, r"pool_size must be a positive whole number or 2 of them"),
])
def test_bad_conv_tables_get_one_line(entry, message):
    with pytest.raises(ModelFileError, match=message):
        layers.from_dict(entry, "layers[0]")


def test_keras_files_of_cnns_round_trip_and_refuse_what_cannot_train(tmp_path):
    arch = models.Architecture((10, 10, 3), (
        L(type="conv2d", filters=4, kernel_size=[3, 2], strides=[2, 1], padding="same", activation="relu"),
        L(type="average_pooling2d", pool_size=2), L(type="dropout", rate=0.2), L(type="batch_normalization"),
        L(type="layer_normalization"),
        L(type="conv2d", filters=2, kernel_size=2, use_bias=False), L(type="flatten"),
        layers.Dense(3, "softmax")))
    weights = models.fresh_weights(arch, np.random.default_rng(1))
    path = tmp_path / "cnn.keras"
    models.save_model_file(models.build_keras_model(arch, weights), path)
    loaded = models.load_model_file(path)
    assert models.architecture_of(loaded, str(path)) == arch
    for got, want in zip(models.keras_weights(loaded), weights):
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
    inputs = keras.Input((10, 10, 3))  # a functional chain reads the same
    hidden = inputs
    for index, spec in enumerate(arch.layers):
        hidden = spec.to_keras(f"l{index}")(hidden)
    assert models.architecture_of(keras.Model(inputs, hidden), "functional") == arch
    refused = [
        (keras.layers.Conv2D(2, 3, groups=1, data_format="channels_first"), (3, 10, 10), "data_format='channels_first'"),
        (keras.layers.Conv1D(2, 3, padding="causal"), (10, 3), "padding='causal'"),
        (keras.layers.GlobalAveragePooling2D(keepdims=True), (10, 10, 3), "keepdims=True"),
        (keras.layers.Conv2D(4, 3, groups=2), (10, 10, 4), "groups=2"),
        (keras.layers.BatchNormalization(axis=1), (10, 10, 3), "over the feature axis"),  # a height axis
    ]
    for layer, shape, message in refused:
        model = keras.Sequential([keras.Input(shape), layer, keras.layers.Flatten(), keras.layers.Dense(2)])
        with pytest.raises(ModelFileError, match=f"layer {layer.name!r}.*{message}"):
            models.architecture_of(model, "m.keras")


class _StopAfterOneShard:
    def map(self, jobs):
        from transferlab.executors import LocalExecutor

        for result in LocalExecutor().map(jobs):
            yield result
            raise KeyboardInterrupt


def test_a_cnn_study_runs_interrupts_resumes_reports_retrains_and_gives_results(tmp_path):
    """Generated shapes (outlines, 12×12) as source; noisier, filled ones as target."""
    (tmp_path / "study.toml").write_text(config.as_toml({
        "name": "shapes", "seed": 4, "repeats": 2, "source_repeats": 2,
        "source": {"kind": "shapes", "seed": 1, "image_size": 12, "n_samples": 240, "n_train": 160},
        "target": {"kind": "shapes", "seed": 2, "image_size": 12, "n_samples": 240, "n_train": 80, "filled": True,
                   "noise": 0.3},
        "model": {"input_shape": [12, 12, 1], "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"},
            {"type": "max_pooling2d", "pool_size": 2}, {"type": "flatten"},
            {"type": "dense", "units": 8, "activation": "relu"}]},
        "training": {"epochs": 3, "optimizer": "adam"}, "execution": {"shard_size": 2},
        "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}, {"name": "l2sp"}]}))
    with pytest.raises(KeyboardInterrupt):
        study.run_study(load_study(tmp_path / "study.toml"), tmp_path / "out", executor=_StopAfterOneShard())
    result = CliRunner().invoke(app, ["run", str(tmp_path / "study.toml"), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "out" / "report.html").read_text()
    assert "12×12×1 → conv 4@3×3 relu → max pool 2×2 → flatten → 8 relu → 4 softmax" in html
    assert "0: Conv2D(4, 3×3, relu)" in html and (tmp_path / "out" / "tasks.png").stat().st_size > 0
    runs = transferlab.results(tmp_path / "out")["runs"]
    assert set(runs["strategy"]) == {"source model", "standalone", "transfer freeze=1", "l2sp α=0.01 β=0.01"}
    assert len(runs) == 2 + 2 + 2 * 2 * 2
    alone = study.retrain_run(tmp_path / "out", "target", "l2sp α=0.01 β=0.01", 1, 1)
    stored = runs[(runs.strategy == "l2sp α=0.01 β=0.01") & (runs.source_index == 1) & (runs.repeat == 1)]
    assert alone.final["test_accuracy"][0] == pytest.approx(float(stored["test_accuracy"].iloc[0]), abs=1e-6)


def test_model_input_shape_must_be_the_tasks(tmp_path):
    (tmp_path / "study.toml").write_text(config.as_toml({
        "name": "x", "seed": 1, "repeats": 1, "source": {"kind": "sklearn", "dataset": "digits"},
        "target": {"kind": "sklearn", "dataset": "digits"},
        "model": {"input_shape": [8, 8, 1], "layers": [{"type": "conv2d", "filters": 2, "kernel_size": 3},
                                                       {"type": "flatten"}]},
        "strategies": [{"name": "standalone"}]}))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "study.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "model.input_shape: [8, 8, 1], but the task's rows have shape [64]" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape, window, strides, padding", [
    ((3, 8, 8, 2), (2, 2), (2, 2), "valid"), ((3, 7, 9, 2), (3, 2), (2, 1), "same"), ((3, 9, 2), (3,), (2,), "same"),
    ((3, 6, 6, 1), (3, 3), (1, 1), "valid"),
])
def test_max_pooling_backward_equals_jaxs_select_and_scatter_with_ties(shape, window, strides, padding):
    import jax

    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, shape).astype(np.float32)  # many ties: the first maximum of a window takes it
    dims, steps = (1, *window, 1), (1, *strides, 1)
    pooled = jax.lax.reduce_window(x, -np.inf, jax.lax.max, dims, steps, padding.upper())
    upstream = rng.normal(size=pooled.shape).astype(np.float32)
    want = jax.grad(lambda a: (jax.lax.reduce_window(a, -np.inf, jax.lax.max, dims, steps, padding.upper())
                               * upstream).sum())(x)
    got = jax.grad(lambda a: (kernels.pool(a, "max", window, strides, padding) * upstream).sum())(x)
    np.testing.assert_array_equal(np.asarray(kernels.pool(x, "max", window, strides, padding)), np.asarray(pooled))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)  # overlapping windows: sums reordered


def _cnn(inputs=(8, 8, 1), pooling="flatten"):
    return models.Architecture(inputs, (
        L(type="conv2d", filters=4, kernel_size=3, padding="same", activation="relu"), L(type="max_pooling2d"),
        L(type="conv2d", filters=6, kernel_size=3, padding="same", activation="relu"), L(type="dropout", rate=0.1),
        L(type="global_average_pooling2d") if pooling == "global" else L(type="flatten"),
        layers.Dense(8, "relu"), layers.Dense(3, "softmax")))


def test_strategies_count_weight_layers_and_weightless_ones_follow_them():
    from transferlab import strategies

    source = _cnn()
    assert source.blocks == [[0, 1], [2, 3, 4], [5], [6]] and source.n_hidden == 3
    recipe = strategies.Transfer(freeze=2).recipe(source, source.head, 3)
    assert recipe.multipliers[0].tolist() == [0, 0, 0, 0, 0, 1, 1]  # both convolutions and what follows them
    recipe = strategies.GradualUnfreeze(every=1).recipe(source, source.head, 4)
    assert recipe.multipliers[:, 0].tolist() == [0, 0, 0, 1]  # the first convolution (and its pooling) thaw last
    assert recipe.multipliers[:, 1].tolist() == [0, 0, 0, 1] and recipe.multipliers[:, 2].tolist() == [0, 0, 1, 1]
    head = layers.Dense(5, "softmax")
    for name, strategy in [("new_head", strategies.NewHead()), ("l2sp", strategies.L2SP()),
                           ("reinit", strategies.Reinit(keep=1)), ("insert", strategies.InsertLayer(after=1, units=4)),
                           ("two_stage", strategies.TwoStage(head_epochs=1)), ("finetune", strategies.Finetune())]:
        recipe = strategy.recipe(source, head, 3)
        assert recipe.arch.layer_shapes[-1] == (5,), name


def test_a_source_cnn_is_reused_on_other_image_sizes_where_its_weights_fit():
    from transferlab import strategies

    with_global = _cnn(pooling="global")
    recipe = strategies.Transfer(freeze=1).recipe(with_global, with_global.head, 2, n_inputs=(20, 12, 1))
    assert recipe.arch.input_shape == (20, 12, 1) and recipe.origins[:3] == (0, 1, 2)
    flat = _cnn()
    with pytest.raises(transferlab.errors.StrategyError, match=r"layer 5 \(Dense\(8, relu\)\) is reused from the "
                       r"source, where it takes 96 values, but on the target's inputs \(20×12×1\) it gets 360"):
        strategies.Transfer().recipe(flat, flat.head, 2, n_inputs=(20, 12, 1))
    with pytest.raises(transferlab.errors.StrategyError, match=r"takes inputs of shape 8×8×1, but the target has rows "
                       r"of shape 8×8×3; use new_input"):
        strategies.Transfer().recipe(flat, flat.head, 2, n_inputs=(8, 8, 3))
    recipe = strategies.NewInput().recipe(flat, flat.head, 2, n_inputs=(8, 8, 3))
    assert recipe.origins[0] == strategies.FRESH and recipe.arch.weight_shapes(0)[0] == (3, 3, 3, 4)


def test_a_cnn_on_padded_rows_equals_it_unpadded_bit_for_bit(images):
    """Sweeps pad splits to share programs: masked rows (BatchNormalization on feature maps
    included) must change no bit."""
    from transferlab.orders import RowPadding

    x_train, y_train, x_test, y_test = images
    arch = models.Architecture((8, 8, 1), (
        L(type="conv2d", filters=3, kernel_size=3, activation="relu"), L(type="batch_normalization"),
        L(type="max_pooling2d"), L(type="flatten"), layers.Dense(10, "softmax")))
    weights = [tuple(a[None] for a in layer) for layer in models.fresh_weights(arch, np.random.default_rng(2))]
    args = (arch.layers, weights, np.ones((1, EPOCHS, len(arch.layers)), np.float32), [7],
            x_train[:70], y_train[:70], x_test[:30], y_test[:30], engine.TrainingSettings(epochs=EPOCHS))
    plain = engine.train_models(*args)
    padded = engine.train_models(*args, padding=RowPadding(300, 200))
    for a, b in zip(jax_leaves(plain), jax_leaves(padded)):
        assert np.array_equal(a, b)


def jax_leaves(result):
    import jax

    return jax.tree.leaves((result.weights, result.curves, result.final))


def test_the_memory_estimate_counts_feature_maps():
    from transferlab import estimate

    arch = _cnn((32, 32, 3))
    assert arch.sizes[:4] == [3072, 4096, 1024, 1536]
    assert estimate._activations(arch) == sum(arch.sizes)  # every layer's whole feature map per row
    flat = models.mlp(4, (16, 8), 3)
    assert estimate._activations(flat) == max(flat.widths) * len(flat.layers)  # flat models: as before
