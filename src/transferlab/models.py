"""Model architectures, their Keras 3 form, safe model files and fresh weights.

The engine trains *dense stacks*: a chain of `Dense` layers, optionally with
`BatchNormalization` layers between them. An `Architecture` describes one; it
converts to and from a `keras.Sequential`, which is also the file format
(`.keras`, loaded with `safe_mode=True`). Weights travel as one tuple per layer
in Keras' `get_weights()` order: `(kernel, bias)` for Dense, `(gamma, beta,
moving_mean, moving_variance)` for BatchNormalization.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from transferlab import _backend

_backend.configure()  # before any keras import below

Weights = list[tuple[np.ndarray, ...]]

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "softplus", "silu", "gelu")
INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "random_uniform",
    "random_normal",
    "zeros",
    "ones",
)
_ACTIVATION_ALIASES = {"swish": "silu", None: "linear"}


class ModelFileError(ValueError):
    """A model file or Keras model transferlab cannot use; the message says why and what to do."""


@dataclass(frozen=True)
class DenseSpec:
    """One `Dense` layer: width, activation and how Keras would initialise it."""

    units: int
    activation: str = "linear"
    kernel_initializer: str = "glorot_uniform"
    bias_initializer: str = "zeros"


@dataclass(frozen=True)
class BatchNormSpec:
    """One `BatchNormalization` layer (Keras' defaults: momentum 0.99, epsilon 1e-3)."""

    momentum: float = 0.99
    epsilon: float = 1e-3


LayerSpec = DenseSpec | BatchNormSpec


def layer_widths(n_inputs: int, layers) -> list[int]:
    """The input width, then the output width of each layer (BatchNormalization keeps it)."""
    widths = [n_inputs]
    for spec in layers:
        widths.append(spec.units if isinstance(spec, DenseSpec) else widths[-1])
    return widths


@dataclass(frozen=True)
class Architecture:
    """A chain of layers on `n_inputs` features; the last layer is the Dense output layer."""

    n_inputs: int
    layers: tuple[LayerSpec, ...]

    def __post_init__(self) -> None:
        if not self.layers or not isinstance(self.layers[-1], DenseSpec):
            raise ModelFileError("the last layer of a model must be a Dense output layer")

    @property
    def dense_indices(self) -> list[int]:
        return [i for i, spec in enumerate(self.layers) if isinstance(spec, DenseSpec)]

    @property
    def n_hidden(self) -> int:
        """Hidden Dense layers (the output layer not counted)."""
        return len(self.dense_indices) - 1

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].units

    @property
    def head(self) -> DenseSpec:
        return self.layers[-1]

    @property
    def widths(self) -> list[int]:
        """The input width, then the output width of every layer."""
        return layer_widths(self.n_inputs, self.layers)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """`(in, out)` of each layer (a BatchNormalization layer keeps its width)."""
        widths = self.widths
        return list(zip(widths[:-1], widths[1:]))

    def weight_shapes(self, layer: int) -> list[tuple[int, ...]]:
        """Shapes of one layer's arrays, in Keras' `get_weights()` order."""
        n_in, n_out = self.shapes[layer]
        if isinstance(self.layers[layer], DenseSpec):
            return [(n_in, n_out), (n_out,)]
        return [(n_out,)] * 4

    @property
    def blocks(self) -> list[list[int]]:
        """Layer indices grouped by Dense layer: each Dense with the BatchNormalization
        layers after it (a leading one joins the first block). Block `k < n_hidden` is the
        k-th hidden layer as strategies count them; the last block is the output layer."""
        blocks: list[list[int]] = []
        pending: list[int] = []
        for index, spec in enumerate(self.layers):
            if isinstance(spec, DenseSpec):
                blocks.append(pending + [index])
                pending = []
            elif blocks:
                blocks[-1].append(index)
            else:
                pending.append(index)
        return blocks

    def to_dict(self) -> dict:
        return {
            "n_inputs": self.n_inputs,
            "layers": [
                {"type": "dense" if isinstance(spec, DenseSpec) else "batchnorm", **asdict(spec)}
                for spec in self.layers
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        layers = []
        for entry in data["layers"]:
            entry = dict(entry)
            kind = entry.pop("type", "dense")
            layers.append(DenseSpec(**entry) if kind == "dense" else BatchNormSpec(**entry))
        return cls(int(data["n_inputs"]), tuple(layers))

    def describe(self) -> str:
        parts = [str(self.n_inputs)]
        for spec in self.layers:
            parts.append(f"{spec.units} {spec.activation}" if isinstance(spec, DenseSpec) else "BN")
        return " → ".join(parts)


def mlp(
    n_inputs: int,
    hidden: tuple[int, ...] | list[int] = (5, 5),
    n_outputs: int = 3,
    activation: str = "relu",
    kernel_initializer: str = "he_uniform",
    output_activation: str = "softmax",
    batch_norm: bool = False,
) -> Architecture:
    """The tutorial's MLP: hidden `Dense(w, activation, kernel_initializer)` layers (each
    followed by `BatchNormalization()` when `batch_norm`), then a
    `Dense(n_outputs, output_activation)` with Keras' default (glorot_uniform) initializer."""
    hidden_layers: list[LayerSpec] = []
    for width in hidden:
        hidden_layers.append(DenseSpec(int(width), activation, kernel_initializer))
        if batch_norm:
            hidden_layers.append(BatchNormSpec())
    output = DenseSpec(int(n_outputs), output_activation)
    return Architecture(int(n_inputs), tuple(hidden_layers) + (output,))


def output_layer(n_outputs: int, activation: str) -> DenseSpec:
    """A fresh output layer as `mlp` makes it (Keras' default initializers)."""
    return DenseSpec(int(n_outputs), activation)


# --- Keras form -------------------------------------------------------------------------


def build_keras_model(arch: Architecture, weights: Weights | None = None):
    """A `keras.Sequential` of this architecture, with `weights` set when given."""
    import keras

    def keras_layer(index: int, spec: LayerSpec):
        if isinstance(spec, BatchNormSpec):
            return keras.layers.BatchNormalization(
                momentum=spec.momentum, epsilon=spec.epsilon, name=f"batch_normalization_{index}"
            )
        return keras.layers.Dense(
            spec.units,
            activation=spec.activation,
            kernel_initializer=spec.kernel_initializer,
            bias_initializer=spec.bias_initializer,
            name=f"dense_{index}",
        )

    model = keras.Sequential(
        [keras.Input((arch.n_inputs,))] + [keras_layer(i, spec) for i, spec in enumerate(arch.layers)]
    )
    if weights is not None:
        set_keras_weights(model, weights)
    return model


def keras_weights(model) -> Weights:
    """Each layer's float32 arrays in `get_weights()` order, in layer order."""
    return [
        tuple(np.asarray(array, dtype=np.float32) for array in layer.get_weights())
        for layer in _weight_layers(model)
    ]


def set_keras_weights(model, weights: Weights) -> None:
    for layer, arrays in zip(_weight_layers(model), weights, strict=True):
        layer.set_weights([np.asarray(array) for array in arrays])


def architecture_of(model, source: str = "model") -> Architecture:
    """Read an `Architecture` off a Keras model, or say which layer transferlab cannot train."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers:
        raise ModelFileError(f"{source}: the model has no layers")
    specs: list[LayerSpec] = []
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            specs.append(_batch_norm_spec(layer, source))
            continue
        if not isinstance(layer, keras.layers.Dense):
            raise ModelFileError(
                f"{source}: layer {layer.name!r} is a {type(layer).__name__}; this version of "
                "transferlab trains chains of Dense and BatchNormalization layers only"
            )
        if not layer.use_bias:
            raise ModelFileError(f"{source}: layer {layer.name!r} has use_bias=False; use a bias")
        activation = keras.activations.serialize(layer.activation)
        activation = activation if isinstance(activation, str) else activation.get("config", {}).get("name")
        activation = _ACTIVATION_ALIASES.get(activation, activation)
        if activation not in ACTIVATIONS:
            raise ModelFileError(
                f"{source}: layer {layer.name!r} uses activation {activation!r}; supported: "
                + ", ".join(ACTIVATIONS)
            )
        specs.append(
            DenseSpec(
                units=int(layer.units),
                activation=activation,
                kernel_initializer=_initializer_name(layer.kernel_initializer),
                bias_initializer=_initializer_name(layer.bias_initializer),
            )
        )
    if not isinstance(specs[-1], DenseSpec):
        raise ModelFileError(f"{source}: layer {layers[-1].name!r}: the last layer must be a Dense output layer")
    first = layers[0]
    n_inputs = int(first.kernel.shape[0] if isinstance(specs[0], DenseSpec) else first.gamma.shape[0])
    return Architecture(n_inputs, tuple(specs))


def _batch_norm_spec(layer, source: str) -> BatchNormSpec:
    axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
    if axis not in (-1, 1, (-1,), (1,)) or not (layer.center and layer.scale):
        raise ModelFileError(
            f"{source}: layer {layer.name!r}: transferlab supports BatchNormalization over the "
            "feature axis with center=True and scale=True (Keras' defaults)"
        )
    if getattr(layer, "renorm", False) or getattr(layer, "synchronized", False):
        raise ModelFileError(f"{source}: layer {layer.name!r}: renorm and synchronized BatchNormalization are not supported")
    return BatchNormSpec(momentum=float(layer.momentum), epsilon=float(layer.epsilon))


def _initializer_name(initializer) -> str:
    name = type(initializer).__name__
    snake = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return snake if snake in INITIALIZERS else "glorot_uniform"


def _weight_layers(model) -> list:
    import keras

    kinds = (keras.layers.Dense, keras.layers.BatchNormalization)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


# --- model files ------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(weights: Weights) -> str:
    """A content hash of the weights themselves (a `.keras` file also holds a save date)."""
    digest = hashlib.sha256()
    for arrays in weights:
        for array in arrays:
            array = np.ascontiguousarray(array, dtype=np.float32)
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def save_model_file(model, path: str | Path) -> str:
    """Save a `.keras` file and return its SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return file_sha256(path)


def check_file_sha256(path: str | Path, expected_sha256: str | None) -> None:
    """A model file the study used must be the same bytes it was (SHA-256)."""
    path = Path(path)
    if expected_sha256 is None:
        return
    if not path.is_file():
        raise ModelFileError(
            f"{path}: this study's model file is missing; restore it (SHA-256 {expected_sha256[:12]}…) "
            "or start a new output folder"
        )
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise ModelFileError(
            f"{path}: SHA-256 is {actual[:12]}…, but the study recorded {expected_sha256[:12]}…; "
            "the file changed since it was used — restore it or start a new output folder"
        )


def load_model_file(path: str | Path, expected_sha256: str | None = None):
    """Load a `.keras` file as data: `safe_mode=True`, never unpickled, hash checked if given."""
    import zipfile

    import keras

    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file; give the path of a .keras file")
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    if path.suffix != ".keras":
        raise ModelFileError(
            f"{path}: transferlab reads Keras 3 '.keras' files only; re-save with model.save('x.keras')"
        )
    check_file_sha256(path, expected_sha256)
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: not a Keras archive (a .keras file is a zip written by model.save); re-save the model "
            "with model.save('x.keras')"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:
        if "safe_mode" in str(error) or "lambda" in str(error).lower():
            raise ModelFileError(
                f"{path}: the model contains code (a Lambda layer or similar) that would only load "
                "with safe_mode=False; transferlab treats model files as data — rebuild it from "
                "standard layers"
            ) from None
        raise ModelFileError(f"{path}: not a loadable Keras model ({_first_line(error)})") from None
    except Exception as error:  # zip errors, missing config, unknown layer classes
        raise ModelFileError(f"{path}: not a loadable Keras model ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- fresh weights ----------------------------------------------------------------------


def fresh_layer(spec: LayerSpec, fan_in: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A layer's arrays as Keras initialises them: Dense kernel and bias drawn by the named
    initializers; BatchNormalization gamma=1, beta=0, moving mean 0, moving variance 1."""
    if isinstance(spec, BatchNormSpec):
        ones, zeros = np.ones(fan_in, np.float32), np.zeros(fan_in, np.float32)
        return (ones, zeros, zeros.copy(), ones.copy())
    shape = (fan_in, spec.units)
    return (
        sample_initializer(spec.kernel_initializer, shape, rng),
        sample_initializer(spec.bias_initializer, (spec.units,), rng),
    )


def fresh_weights(arch: Architecture, rng: np.random.Generator) -> Weights:
    return [fresh_layer(spec, fan_in, rng) for spec, (fan_in, _) in zip(arch.layers, arch.shapes)]


_VARIANCE_SCALING = {
    # name: (scale, mode, distribution), as keras.initializers defines them
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}


def sample_initializer(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw an array the way `keras.initializers.get(name)` would (same distribution)."""
    if name == "zeros":
        return np.zeros(shape, np.float32)
    if name == "ones":
        return np.ones(shape, np.float32)
    if name == "random_uniform":  # Keras default minval=-0.05, maxval=0.05
        return rng.uniform(-0.05, 0.05, shape).astype(np.float32)
    if name == "random_normal":  # Keras default stddev=0.05
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)
    if name not in _VARIANCE_SCALING:
        raise ValueError(f"unknown initializer {name!r}; choose one of: {', '.join(INITIALIZERS)}")
    scale, mode, distribution = _VARIANCE_SCALING[name]
    if len(shape) == 1:
        fan_in = fan_out = shape[0]
    else:
        fan_in, fan_out = shape[0], shape[1]
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, n)
    if distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    # Keras: truncated normal at two standard deviations, stddev corrected for the truncation
    stddev = math.sqrt(variance) / 0.87962566103423978
    return (_truncated_standard_normal(shape, rng) * stddev).astype(np.float32)


def _truncated_standard_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values
