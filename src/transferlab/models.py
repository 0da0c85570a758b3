"""Model architectures, their Keras 3 form, safe model files and fresh weights.

The engine trains *dense stacks* (a chain of `Dense` layers). An `Architecture`
describes one; it converts to and from a `keras.Sequential`, which is also the
file format (`.keras`, loaded with `safe_mode=True`). Weights travel as a list of
`(kernel (in, out), bias (out,))` pairs, one per layer.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

Weights = list[tuple[np.ndarray, np.ndarray]]

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
class Architecture:
    """A chain of dense layers on `n_inputs` features; the last layer is the output."""

    n_inputs: int
    layers: tuple[DenseSpec, ...]

    @property
    def n_hidden(self) -> int:
        return len(self.layers) - 1

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].units

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """`(in, out)` of each layer's kernel."""
        widths = [self.n_inputs] + [layer.units for layer in self.layers]
        return list(zip(widths[:-1], widths[1:]))

    def to_dict(self) -> dict:
        return {"n_inputs": self.n_inputs, "layers": [asdict(layer) for layer in self.layers]}

    def describe(self) -> str:
        return " → ".join([str(self.n_inputs)] + [f"{s.units} {s.activation}" for s in self.layers])


def mlp(
    n_inputs: int,
    hidden: tuple[int, ...] | list[int] = (5, 5),
    n_outputs: int = 3,
    activation: str = "relu",
    kernel_initializer: str = "he_uniform",
    output_activation: str = "softmax",
) -> Architecture:
    """The tutorial's MLP: hidden `Dense(w, activation, kernel_initializer)` layers, then a
    `Dense(n_outputs, output_activation)` with Keras' default (glorot_uniform) initializer."""
    hidden_layers = tuple(DenseSpec(int(w), activation, kernel_initializer) for w in hidden)
    return Architecture(int(n_inputs), hidden_layers + (DenseSpec(int(n_outputs), output_activation),))


# --- Keras form -------------------------------------------------------------------------


def build_keras_model(arch: Architecture, weights: Weights | None = None):
    """A `keras.Sequential` of this architecture, with `weights` set when given."""
    import keras

    model = keras.Sequential(
        [keras.Input((arch.n_inputs,))]
        + [
            keras.layers.Dense(
                spec.units,
                activation=spec.activation,
                kernel_initializer=spec.kernel_initializer,
                bias_initializer=spec.bias_initializer,
                name=f"dense_{index}",
            )
            for index, spec in enumerate(arch.layers)
        ]
    )
    if weights is not None:
        set_keras_weights(model, weights)
    return model


def keras_weights(model) -> Weights:
    """`(kernel, bias)` float32 pairs of a dense-stack Keras model, in layer order."""
    return [
        (np.asarray(layer.kernel, dtype=np.float32), np.asarray(layer.bias, dtype=np.float32))
        for layer in _dense_layers(model)
    ]


def set_keras_weights(model, weights: Weights) -> None:
    for layer, (kernel, bias) in zip(_dense_layers(model), weights, strict=True):
        layer.set_weights([np.asarray(kernel), np.asarray(bias)])


def architecture_of(model, source: str = "model") -> Architecture:
    """Read an `Architecture` off a Keras model, or say which layer transferlab cannot train."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers:
        raise ModelFileError(f"{source}: the model has no layers")
    specs = []
    for layer in layers:
        if not isinstance(layer, keras.layers.Dense):
            raise ModelFileError(
                f"{source}: layer {layer.name!r} is a {type(layer).__name__}; this version of "
                "transferlab trains chains of Dense layers only"
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
    n_inputs = int(layers[0].kernel.shape[0])
    return Architecture(n_inputs, tuple(specs))


def _initializer_name(initializer) -> str:
    name = type(initializer).__name__
    snake = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return snake if snake in INITIALIZERS else "glorot_uniform"


def _dense_layers(model) -> list:
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


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
    for kernel, bias in weights:
        for array in (kernel, bias):
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


def load_model_file(path: str | Path, expected_sha256: str | None = None):
    """Load a `.keras` file as data: `safe_mode=True`, never unpickled, hash checked if given."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    if path.suffix != ".keras":
        raise ModelFileError(
            f"{path}: transferlab reads Keras 3 '.keras' files only; re-save with model.save('x.keras')"
        )
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256:
            raise ModelFileError(
                f"{path}: SHA-256 is {actual[:12]}…, but the study recorded {expected_sha256[:12]}…; "
                "the file changed since it was used — restore it or start a new output folder"
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
        raise ModelFileError(f"{path}: not a loadable Keras model ({error})".splitlines()[0]) from None
    except Exception as error:  # zip errors, missing config, unknown layer classes
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFileError(f"{path}: not a loadable Keras model ({message})") from None


# --- fresh weights ----------------------------------------------------------------------


def fresh_layer(spec: DenseSpec, fan_in: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias drawn as Keras' initializer of the same name draws them."""
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
