import keras
import numpy as np
import pytest
from scipy import stats

from transferlab import initializers, models
from transferlab.layers import ModelFileError


@pytest.mark.parametrize("name", ["he_uniform", "glorot_uniform", "he_normal", "glorot_normal", "lecun_uniform"])
def test_fresh_weights_follow_keras_initializer_distribution(name):
    shape = (40, 50)
    ours = initializers.sample(name, shape, np.random.default_rng(0)).ravel()
    reference = np.asarray(keras.initializers.get({"class_name": name, "config": {"seed": 1}})(shape)).ravel()
    assert ours.dtype == np.float32
    assert stats.ks_2samp(ours, reference).pvalue > 0.01
    assert np.abs(ours).max() <= np.abs(reference).max() * 1.05 + 1e-6


def test_tutorial_mlp_matches_the_tutorial_layers():
    arch = models.mlp(2, (5, 5), 3)
    model = models.build_keras_model(arch)
    dense = [layer for layer in model.layers]
    assert [layer.units for layer in dense] == [5, 5, 3]
    assert [keras.activations.serialize(layer.activation) for layer in dense] == ["relu", "relu", "softmax"]
    assert [type(layer.kernel_initializer).__name__ for layer in dense] == ["HeUniform", "HeUniform", "GlorotUniform"]
    assert models.architecture_of(model) == arch


def test_model_file_round_trip_and_hash(tmp_path):
    arch = models.mlp(2, (5, 5), 3)
    weights = models.fresh_weights(arch, np.random.default_rng(1))
    path = tmp_path / "m.keras"
    sha = models.save_model_file(models.build_keras_model(arch, weights), path)
    loaded = models.load_model_file(path, expected_sha256=sha)
    for (k0, b0), (k1, b1) in zip(weights, models.keras_weights(loaded)):
        np.testing.assert_array_equal(k0, k1)
        np.testing.assert_array_equal(b0, b1)
    with pytest.raises(ModelFileError, match="SHA-256"):
        models.load_model_file(path, expected_sha256="0" * 64)


def test_model_file_with_code_is_refused(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(3)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelFileError, match="safe_mode|code"):
        models.load_model_file(path)


def test_broken_and_foreign_files_get_one_line_errors(tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="junk.keras: not a Keras archive"):
        models.load_model_file(junk)
    with pytest.raises(ModelFileError, match="'.keras' files only"):
        models.load_model_file(_touch(tmp_path / "m.h5"))


def test_unsupported_layers_are_named():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.AlphaDropout(0.1), keras.layers.Dense(2)])
    with pytest.raises(ModelFileError, match="'alpha_dropout.*AlphaDropout"):
        models.architecture_of(model)


def _touch(path):
    path.write_bytes(b"")
    return path


def test_a_batch_normalization_model_file_round_trips(tmp_path):
    arch = models.mlp(2, (5, 4), 3, batch_norm=True)
    weights = models.fresh_weights(arch, np.random.default_rng(1))
    weights[1] = tuple(a + 0.5 for a in weights[1])  # non-default gamma, beta and statistics
    path = tmp_path / "bn.keras"
    models.save_model_file(models.build_keras_model(arch, weights), path)
    loaded = models.load_model_file(path)
    assert models.architecture_of(loaded) == arch
    assert arch.blocks == [[0, 1], [2, 3], [4]] and arch.n_hidden == 2
    for got, want in zip(models.keras_weights(loaded), weights):
        for a, b in zip(got, want):
            assert np.array_equal(a, b)
    assert models.Architecture.from_dict(arch.to_dict()) == arch


def test_unsupported_batch_normalization_is_named():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4), keras.layers.BatchNormalization(
        center=False, name="bn_no_center"), keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(ModelFileError, match="user.keras: layer 'bn_no_center': transferlab supports"):
        models.architecture_of(model, source="user.keras")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4), keras.layers.BatchNormalization(name="last")])
    with pytest.raises(ModelFileError, match="layer 'last': the last layer must be a Dense output layer"):
        models.architecture_of(model, source="user.keras")
