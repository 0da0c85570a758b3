"""Image data as tables: a folder of images (one subfolder per class), and generated shapes.

Both give a `Table` whose feature columns are an image's values in C order (channels last)
and whose `sample_shape` is `(height, width, channels)`; `build` turns the rows back into
images after selecting, splitting and standardising them as it does any table's rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.data.read import Part, Table, file_sha256, pixel_frame
from transferlab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
COLOR_MODES = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}  # Keras' color_mode → Pillow's mode


# --- a folder of images --------------------------------------------------------------------


def read_folder(path: str | Path, image_size: tuple[int, int] | None = None, color_mode: str = "rgb",
                rescale: float | None = None) -> Table:
    """Images in one subfolder per class, as `keras.utils.image_dataset_from_directory`
    reads them: classes are the subfolders in sorted order, files within them are read
    (recursively, sorted) with Pillow, converted to `color_mode` and resized to
    `image_size` (height, width; bilinear) when given, else they must all have one size;
    an animated GIF gives its first frame. Values are multiplied by `rescale` when given.

    Every file in a class folder must be an image (hidden files aside); files beside the
    class folders are left out and named in the task's notes. The origin records each
    file's path and SHA-256."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: {'not found' if not root.exists() else 'is a file'}; give a folder with one "
                        "subfolder of images per class", "path")
    if color_mode not in COLOR_MODES:
        raise DataError(f"color_mode {color_mode!r}: use one of {', '.join(COLOR_MODES)}", "color_mode")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if len(classes) < 2:
        found = f"one class folder ({classes[0]})" if classes else "no class folders"
        raise DataError(f"{root}: has {found}; a classification task needs a subfolder of images for each of "
                        "two or more classes", "path")
    files, labels = [], []
    for label in classes:
        members = _class_files(root / label)
        files += members
        labels += [label] * len(members)
    images = np.stack(_read_images(files, image_size, COLOR_MODES[color_mode]))
    if rescale is not None:
        images = images * np.float32(rescale)
    frame = pixel_frame(images)
    frame["label"] = pd.Categorical(labels, categories=classes, ordered=True)
    ignored = sorted(entry.name for entry in root.iterdir() if entry.is_file() and not entry.name.startswith("."))
    size = "×".join(map(str, images.shape[1:3]))
    read_as = (f"{len(files)} images read as {color_mode} ({images.shape[-1]} channel{'s' if images.shape[-1] > 1 else ''}"
               f"{', the default' if color_mode == 'rgb' else ''}), {size} pixels"
               f"{' after resizing (bilinear)' if image_size is not None else ''}"
               f"{f', values × {rescale:g}' if rescale is not None else ''}; classes are the subfolders in sorted order "
               f"({', '.join(classes[:5])}{' …' if len(classes) > 5 else ''})")
    origin = {"kind": "images", "path": str(root.resolve()), "files": len(files), "classes": classes,
              "sha256": _folder_digest(root, files), "image_size": list(images.shape[1:3]), "color_mode": color_mode,
              "rescale": rescale, "sample_shape": list(images.shape[1:]),
              "notes": [read_as] + ([f"left out {len(ignored)} file(s) beside the class folders: "
                                     f"{', '.join(ignored[:3])}" + (" …" if len(ignored) > 3 else "")] if ignored else [])}
    return Table(frame, root.name, ("label",), origin, (Part(root.name, 0, len(frame), 0),),
                 sample_shape=tuple(images.shape[1:]))


def _class_files(folder: Path) -> list[Path]:
    """A class folder's images, sorted; anything else in it is refused, naming the file."""
    found = []
    for entry in sorted(folder.rglob("*")):
        if entry.is_dir() or any(part.startswith(".") for part in entry.relative_to(folder).parts):
            continue
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{entry}: not an image file ({', '.join(IMAGE_SUFFIXES)}); a class folder holds only "
                            "images: move it out", "path")
        found.append(entry)
    if not found:
        raise DataError(f"{folder}: the class folder holds no images; add images or remove the folder", "path")
    return found


def _read_images(files: list[Path], image_size, mode: str) -> list[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    arrays, first = [], None
    for file in files:
        try:
            with Image.open(file) as image:
                image.seek(0)  # an animated GIF: its first frame
                image = image.convert(mode)
                if image_size is not None:
                    image = image.resize((int(image_size[1]), int(image_size[0])), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.float32)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise DataError(f"{file}: cannot read it as an image ({reason}); replace or remove the file",
                            "path") from None
        array = array[..., None] if array.ndim == 2 else array
        if first is None:
            first = (file, array.shape)
        elif array.shape != first[1]:
            raise DataError(f"{file}: is {array.shape[1]}×{array.shape[0]} pixels, {first[0].name} is "
                            f"{first[1][1]}×{first[1][0]}; give image_size = [height, width] to resize every image",
                            "image_size")
        arrays.append(array)
    return arrays


def _folder_digest(root: Path, files: list[Path]) -> str:
    """SHA-256 over each image's path in the folder and its bytes' SHA-256: the folder's identity."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}:{file_sha256(file)};".encode())
    return digest.hexdigest()


# --- generated shapes ----------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "cross", "diamond")


def generated_shapes(params: dict) -> Table:
    """Seeded images of simple shapes, one class per shape (`SHAPES[:n_classes]`): each
    image one shape at a random size (a fraction `size_min`…`size_max` of the image),
    rotation and position (centre moved by up to `jitter` of the image), drawn as an
    outline `thickness` pixels wide or `filled`, with Gaussian pixel `noise`; with 3
    `channels`, each image takes a random colour (colour says nothing of the class). Two
    tasks with different drawing parameters are a real transfer question."""
    rng = np.random.default_rng(params["seed"])
    n, size = params["n_samples"], params["image_size"]
    labels = rng.integers(0, params["n_classes"], n)
    grid = (np.arange(size) + 0.5) / size - 0.5  # pixel centres in [-0.5, 0.5)
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    radius = rng.uniform(params["size_min"], params["size_max"], n) / 2
    angle = rng.uniform(0, 2 * np.pi, n)
    centre = rng.uniform(-params["jitter"], params["jitter"], (n, 2))
    images = np.empty((n, size, size), np.float32)
    for index in range(n):
        dx, dy = xs - centre[index, 0], ys - centre[index, 1]
        cos, sin = np.cos(angle[index]), np.sin(angle[index])
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy
        distance = _signed_distance(SHAPES[labels[index]], u, v, radius[index]) * size  # in pixels
        if params["filled"]:
            ink = np.clip(0.5 - distance, 0.0, 1.0)
        else:
            ink = np.clip(params["thickness"] / 2 + 0.5 - np.abs(distance), 0.0, 1.0)
        images[index] = ink
    images = images[..., None]
    if params["channels"] == 3:
        colour = rng.uniform(0.3, 1.0, (n, 1, 1, 3)).astype(np.float32)
        images = images * colour
    images = images + rng.normal(0.0, params["noise"], images.shape).astype(np.float32)
    names = list(SHAPES[: params["n_classes"]])
    frame = pixel_frame(images)
    frame["y"] = pd.Categorical.from_codes(labels, categories=names, ordered=True)
    origin = {"kind": "shapes", "generator": "transferlab.data.images.generated_shapes", "params": dict(params),
              "rows": n, "sample_shape": list(images.shape[1:])}
    return Table(frame, "shapes", ("y",), origin, (Part("shapes", 0, n, 0),), sample_shape=tuple(images.shape[1:]))


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Distance (image widths) from a point to the shape's outline: negative inside."""
    if shape == "circle":
        return np.hypot(u, v) - radius
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - radius * 0.8
    if shape == "diamond":
        return (np.abs(u) + np.abs(v)) / np.sqrt(2) - radius * 0.7
    if shape == "cross":
        arm = radius * 0.3
        horizontal = np.maximum(np.abs(u) - radius, np.abs(v) - arm)
        vertical = np.maximum(np.abs(v) - radius, np.abs(u) - arm)
        return np.minimum(horizontal, vertical)
    normals = [(np.cos(a), np.sin(a)) for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3)]
    return np.max([nx * u + ny * v for nx, ny in normals], axis=0) - radius * 0.5
