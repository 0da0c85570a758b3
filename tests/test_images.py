"""Image tasks: digits as images, NPZ images, a folder of images (against Pillow and NumPy
read directly), generated shapes, per-channel standardisation, and bad folders."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from transferlab import config, datasets
from transferlab.api import load_study
from transferlab.commands import app
from transferlab.data import images


def _target(table: dict, tmp_path=None):
    """The target task a study with this `[target]` table makes."""
    study = {"name": "x", "seed": 1, "repeats": 1, "source": table, "target": table,
             "model": {"layers": [{"type": "flatten"}]}, "strategies": [{"name": "standalone"}]}
    if tmp_path is None:
        return datasets.study_tasks(load_study(study))["target"]
    (tmp_path / "study.toml").write_text(config.as_toml(study))
    return datasets.study_tasks(load_study(tmp_path / "study.toml"))["target"]


def test_digits_as_images_are_sklearns_8x8_images():
    from sklearn.datasets import load_digits

    task = _target({"kind": "sklearn", "dataset": "digits", "shape": "image", "split": "first", "n_train": 100,
                    "standardize": False})
    digits = load_digits()
    assert task.x_train.shape == (100, 8, 8, 1) and task.is_image and task.inputs == (8, 8, 1)
    np.testing.assert_array_equal(task.x_train[..., 0], digits.images[:100])
    np.testing.assert_array_equal(task.x_test[..., 0], digits.images[100:])
    assert task.labels_train.tolist() == digits.target[:100].tolist()


def test_images_are_standardised_per_channel_on_the_training_rows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal([1.0, -2.0, 5.0], [1.0, 3.0, 0.5], (60, 4, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "pics.npz", x=x, y=rng.integers(0, 2, 60))
    task = _target({"kind": "npz", "path": "pics.npz", "split": "first", "n_train": 40}, tmp_path)
    assert task.x_train.shape == (40, 4, 5, 3) and task.x_test.shape == (20, 4, 5, 3)
    mean = x[:40].reshape(-1, 3).astype(np.float64).mean(axis=0)
    std = x[:40].reshape(-1, 3).astype(np.float64).std(axis=0)
    np.testing.assert_allclose(task.x_train, (x[:40] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(task.x_test, (x[40:] - mean) / std, atol=1e-5)
    assert "each channel" in task.provenance["standardize"]


def test_npz_sequences_keep_their_shape_and_a_channelless_image_is_refused(tmp_path):
    np.savez(tmp_path / "seq.npz", x=np.ones((30, 7, 2)), y=np.arange(30) % 3)
    assert _target({"kind": "npz", "path": "seq.npz", "standardize": False}, tmp_path).input_shape == (7, 2)
    np.savez(tmp_path / "flat.npz", x=np.ones((30, 7, 7, 7, 1)), y=np.arange(30) % 3)
    with pytest.raises(Exception, match=r"flat.npz: array 'x' has shape \(30, 7, 7, 7, 1\); it must be"):
        _target({"kind": "npz", "path": "flat.npz"}, tmp_path)


def _write_folder(root, sizes=None, mode="RGB"):
    """Two classes of small images, PNG and JPEG and BMP, in `root`."""
    rng = np.random.default_rng(1)
    written = {}
    for label, count in (("cat", 3), ("dog", 4)):
        (root / label).mkdir(parents=True)
        for index in range(count):
            shape = (6, 5, 3) if mode == "RGB" else (6, 5)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            suffix = (".png", ".bmp", ".png", ".gif")[index]
            path = root / label / f"{index:02d}{suffix}"
            Image.fromarray(pixels).save(path)
            written[path] = label
    return written


def test_an_image_folder_reads_as_pillow_and_numpy_read_it(tmp_path):
    written = _write_folder(tmp_path / "pics")
    (tmp_path / "pics" / "README.txt").write_text("beside the class folders")
    task = _target({"kind": "images", "path": "pics", "rescale": 1 / 255, "standardize": False, "split": "first",
                    "n_train": 5}, tmp_path)
    expected = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) * np.float32(1 / 255)
                         for p in sorted(written)])  # class folders in sorted order, files sorted within
    np.testing.assert_array_equal(np.concatenate([task.x_train, task.x_test]), expected)
    assert task.class_names == ("cat", "dog") and task.input_shape == (6, 5, 3)
    assert any("left out 1 file(s) beside the class folders: README.txt" in note for note in task.notes)
    assert any(note.startswith("7 images read as rgb (3 channels, the default), 6×5 pixels, values × 0.00392157; "
                               "classes are the subfolders in sorted order (cat, dog)") for note in task.notes)
    gray = _target({"kind": "images", "path": "pics", "color_mode": "grayscale", "image_size": [3, 4],
                    "standardize": False, "split": "first", "n_train": 5}, tmp_path)
    first = sorted(written)[0]
    resized = Image.open(first).convert("L").resize((4, 3), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(gray.x_train[0, ..., 0], np.asarray(resized, np.float32))
    assert gray.input_shape == (3, 4, 1)


def test_an_image_folder_is_fingerprinted_by_its_files_and_bytes(tmp_path):
    _write_folder(tmp_path / "pics")
    first = images.read_folder(tmp_path / "pics").origin["sha256"]
    (tmp_path / "pics" / "dog" / "00.png").rename(tmp_path / "pics" / "dog" / "zz.png")
    assert images.read_folder(tmp_path / "pics").origin["sha256"] != first


@pytest.mark.parametrize("spoil, message", [
    (lambda root: (root / "dog" / "bad.png").write_bytes(b"not an image at all"),
     r"pics/dog/bad.png: cannot read it as an image \(.*\); replace or remove the file"),
    (lambda root: (root / "dog" / "notes.txt").write_text("hello"),
     r"pics/dog/notes.txt: not an image file \(.png, .jpg, .jpeg, .bmp, .gif\)"),
    (lambda root: Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "dog" / "big.png"),
     r"pics/dog/big.png: is 9×9 pixels, 00.png is 5×6; give image_size = \[height, width\]"),
    (lambda root: [p.unlink() for p in (root / "cat").iterdir()] and (root / "cat").rmdir(),
     r"pics: has one class folder \(dog\); a classification task needs"),
])
def test_a_bad_image_folder_is_one_line_naming_the_file(tmp_path, spoil, message):
    _write_folder(tmp_path / "pics")
    spoil(tmp_path / "pics")
    (tmp_path / "study.toml").write_text(config.as_toml({
        "name": "x", "seed": 1, "repeats": 1, "source": {"kind": "images", "path": "pics"},
        "target": {"kind": "images", "path": "pics"}, "model": {"layers": [{"type": "flatten"}]},
        "strategies": [{"name": "standalone"}]}))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "study.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    line = " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) <= 3  # one message (wrapped at the terminal's width)
    import re

    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()


def test_generated_shapes_are_seeded_and_their_parameters_differ():
    params = {"seed": 3, "n_samples": 60, "n_train": 30, "image_size": 24, "n_classes": 3, "channels": 1,
              "filled": False, "thickness": 1.5, "noise": 0.0, "size_min": 0.4, "size_max": 0.8, "jitter": 0.1}
    first = images.generated_shapes(params)
    again = images.generated_shapes(params)
    assert first.frame.equals(again.frame) and first.sample_shape == (24, 24, 1)
    assert list(first.frame["y"].cat.categories) == ["circle", "square", "triangle"]
    filled = images.generated_shapes({**params, "filled": True}).frame.drop(columns="y").to_numpy()
    outline = first.frame.drop(columns="y").to_numpy()
    assert filled.sum(axis=1).mean() > 1.5 * outline.sum(axis=1).mean()  # filled shapes have more ink
    assert outline.min() >= 0 and outline.max() <= 1  # no noise: ink in [0, 1]
    coloured = images.generated_shapes({**params, "channels": 3})
    assert coloured.sample_shape == (24, 24, 3)


def test_a_task_from_image_arrays_in_python_keeps_their_shape():
    from transferlab import Task

    rng = np.random.default_rng(4)
    x = rng.normal(2.0, 3.0, (40, 5, 4, 2)).astype(np.float32)
    task = Task.from_arrays(x, np.arange(40) % 2, split="first", n_train=30)
    assert task.input_shape == (5, 4, 2) and task.x_test.shape == (10, 5, 4, 2)
    flat = x[:30].reshape(-1, 2).astype(np.float64)
    np.testing.assert_allclose(task.x_train, (x[:30] - flat.mean(0)) / flat.std(0), atol=1e-5)
    with pytest.raises(Exception, match="feature_names: images and sequences have no feature names"):
        Task.from_arrays(x, np.arange(40) % 2, feature_names=["a"])
