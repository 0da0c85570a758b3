"""Model architectures from layer types, their Keras 3 form, safe model files and fresh weights.

An `Architecture` is a chain of layers (`transferlab.layers`) on `n_inputs` features (or
an input shape: images, sequences), ending in a Dense output layer. It converts to and from a `keras.Sequential`, which is
also the file format (`.keras`, loaded with `safe_mode=True`). Weights travel as one
tuple per layer in Keras' `get_weights()` order (an empty tuple for a layer without
weights).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab import _backend, layers
from transferlab.errors import ModelFileError
from transferlab.layers import BatchNormalization, Dense, Dropout, Layer, as_shape, layer_widths

Weights = list[tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class Architecture:
    """A chain of layers on `n_inputs`: a width (flat rows, an `int`) or an input shape
    without the batch axis (`(8, 8, 1)`: channels last); the last layer is the Dense output
    layer, on a flat input."""

    n_inputs: int | tuple[int, ...]
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_inputs", model_inputs(self.n_inputs))
        if not self.layers or not isinstance(self.layers[-1], Dense):
            last = self.layers[-1].describe() if self.layers else "nothing"
            raise ModelFileError(
                f"the last layer of a model must be a Dense output layer, not {last} (give the output "
                "layer its activation, e.g. Dense(3, activation='softmax'))"
            )
        object.__setattr__(self, "_shapes", _checked_shapes(self.input_shape, self.layers))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return as_shape(self.n_inputs)

    @property
    def layer_shapes(self) -> list[tuple[int, ...]]:
        """The input shape, then each layer's output shape (no batch axis)."""
        return list(self._shapes)

    @property
    def n_hidden(self) -> int:
        """Hidden layers as strategies count them: the Dense layers below the output layer."""
        return len(self.blocks) - 1

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].units

    @property
    def head(self) -> Dense:
        return self.layers[-1]

    @property
    def widths(self) -> list[int]:
        """The input width, then the output width of every layer (the last axis: a
        convolution's channels)."""
        return [shape[-1] for shape in self._shapes]

    @property
    def sizes(self) -> list[int]:
        """Values per row of the input and of each layer's output (feature maps whole)."""
        return [int(np.prod(shape)) for shape in self._shapes]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """`(in, out)` width of each layer."""
        widths = self.widths
        return list(zip(widths[:-1], widths[1:]))

    def weight_shapes(self, layer: int) -> list[tuple[int, ...]]:
        """Shapes of one layer's arrays, in Keras' `get_weights()` order."""
        return self.layers[layer].weight_shapes(self.shapes[layer][0])

    def n_weights(self) -> int:
        """Every array's size, summed over the layers (trainable or not)."""
        return sum(int(np.prod(shape)) for layer in range(len(self.layers)) for shape in self.weight_shapes(layer))

    @property
    def blocks(self) -> list[list[int]]:
        """Layer indices grouped by Dense layer: each Dense with the layers after it up to the
        next Dense (normalisation, dropout, activation; leading ones join the first block).
        Block `k < n_hidden` is the k-th hidden layer as strategies count them; the last
        block is the output layer."""
        blocks: list[list[int]] = []
        pending: list[int] = []
        for index, spec in enumerate(self.layers):
            if spec.starts_block:
                blocks.append(pending + [index])
                pending = []
            elif blocks:
                blocks[-1].append(index)
            else:
                pending.append(index)
        return blocks

    def to_dict(self) -> dict:
        inputs = self.n_inputs if isinstance(self.n_inputs, int) else list(self.n_inputs)
        return {"n_inputs": inputs, "layers": [spec.to_dict() for spec in self.layers]}

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        return cls(model_inputs(data["n_inputs"]), tuple(layers.from_dict(entry) for entry in data["layers"]))

    def describe(self) -> str:
        return " → ".join([shape_text(self.n_inputs)] + [spec.short() for spec in self.layers])


def feature_layer(arch: Architecture, layer: int | None) -> int:
    """The hidden layer whose output transferability scores read, as strategies count
    layers (1 = the first Dense or convolution with the weightless layers after it);
    default the last one, whose output is the output layer's input (0: a model with no
    hidden layer, whose input is read)."""
    if layer is None:
        return arch.n_hidden
    if not 1 <= layer <= arch.n_hidden:
        raise ModelFileError(f"layer {layer} is not a hidden layer of the source model ({arch.describe()}: "
                             f"give 1 to {arch.n_hidden})" if arch.n_hidden else
                             f"layer {layer}: the source model ({arch.describe()}) has no hidden layer; leave "
                             "layer out to score its inputs")
    return layer


def model_inputs(inputs) -> int | tuple[int, ...]:
    """A model's inputs as `Architecture` holds them: a width for flat rows (`4`, `[4]`),
    else the input shape as a tuple (`[8, 8, 1]`)."""
    shape = as_shape(inputs)
    if not shape or min(shape) < 1:
        raise ModelFileError(f"input shape {list(shape)} must be one or more positive sizes")
    return shape[0] if len(shape) == 1 else shape


def shape_text(inputs) -> str:
    """`64`, or `8×8×1` for an input shape."""
    return "×".join(str(n) for n in as_shape(inputs))


def _checked_shapes(input_shape: tuple[int, ...], specs) -> tuple[tuple[int, ...], ...]:
    """Every layer's output shape; a message naming the layer whose input does not fit, or
    an output layer on an input that is not flat."""
    shapes = [input_shape]
    for index, spec in enumerate(specs):
        try:
            shapes.append(tuple(spec.output_shape(shapes[-1])))
        except ModelFileError as error:
            raise ModelFileError(f"layer {index} ({spec.describe()}): {error}") from None
    if len(shapes[-2]) != 1:
        raise ModelFileError(
            f"layer {len(specs) - 1} ({specs[-1].describe()}), the output layer, gets feature maps of shape "
            f"{shape_text(shapes[-2])}; put a flatten or global pooling layer before the dense layers")
    return tuple(shapes)


def mlp(
    n_inputs: int,
    hidden: tuple[int, ...] | list[int] = (5, 5),
    n_outputs: int = 3,
    activation: str = "relu",
    kernel_initializer: str = "he_uniform",
    output_activation: str = "softmax",
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> Architecture:
    """The tutorial's MLP: hidden `Dense(w, activation, kernel_initializer)` layers (each
    followed by `BatchNormalization()` when `batch_norm`, then `Dropout(dropout)` when
    `dropout` > 0), then a `Dense(n_outputs, output_activation)` with Keras' default
    (glorot_uniform) initializer."""
    hidden_layers: list[Layer] = []
    for width in hidden:
        hidden_layers.append(Dense(int(width), activation, kernel_initializer))
        if batch_norm:
            hidden_layers.append(BatchNormalization())
        if dropout:
            hidden_layers.append(Dropout(float(dropout)))
    output = Dense(int(n_outputs), output_activation)
    return Architecture(model_inputs(n_inputs), tuple(hidden_layers) + (output,))


def output_layer(n_outputs: int, activation: str) -> Dense:
    """A fresh output layer as `mlp` makes it (Keras' default initializers)."""
    return Dense(int(n_outputs), activation)


# --- Keras form -------------------------------------------------------------------------


def build_keras_model(arch: Architecture, weights: Weights | None = None):
    """A `keras.Sequential` of this architecture, with `weights` set when given."""
    _backend.require_keras()
    import keras

    model = keras.Sequential(
        [keras.Input(arch.input_shape)]
        + [spec.to_keras(f"{spec.type}_{index}") for index, spec in enumerate(arch.layers)]
    )
    if weights is not None:
        set_keras_weights(model, weights)
    return model


def keras_weights(model) -> Weights:
    """Each layer's float32 arrays in `get_weights()` order, in layer order."""
    return [
        tuple(np.asarray(array, dtype=np.float32) for array in layer.get_weights())
        for layer in _model_layers(model)
    ]


def set_keras_weights(model, weights: Weights) -> None:
    for layer, arrays in zip(_model_layers(model), weights, strict=True):
        if arrays:
            layer.set_weights([np.asarray(array) for array in arrays])


def architecture_of(model, source: str = "model") -> Architecture:
    """Read an `Architecture` off a Keras model, or say which layer transferlab cannot train."""
    model_layers = _model_layers(model)
    if not model_layers:
        raise ModelFileError(f"{source}: the model has no layers")
    specs = [layers.from_keras(layer, source) for layer in model_layers]
    _check_chain(model, model_layers, source)
    if not isinstance(specs[-1], Dense):
        raise ModelFileError(
            f"{source}: layer {model_layers[-1].name!r}: the last layer must be a Dense output layer "
            "(give it the activation instead of a separate layer)"
        )
    try:
        return Architecture(_input_width(model, model_layers, source), tuple(specs))
    except ModelFileError as error:
        raise ModelFileError(f"{source}: {error}") from None


def _check_chain(model, model_layers: list, source: str) -> None:
    """A functional model must be a plain chain: one input, each layer fed by the one before."""
    import keras

    if isinstance(model, keras.Sequential):
        return
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFileError(f"{source}: the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                             "transferlab trains chains of layers with one input and one output")
    previous = model.inputs[0]
    for layer in model_layers:
        if len(layer._inbound_nodes) != 1 or layer.input is not previous:
            raise ModelFileError(
                f"{source}: layer {layer.name!r} is not fed by the layer before it (a branch, a skip connection "
                "or a shared layer); transferlab trains chains of layers"
            )
        previous = layer.output
    if model.outputs[0] is not previous:
        raise ModelFileError(f"{source}: the model's output is not its last layer's; transferlab trains chains of layers")


def _input_width(model, model_layers: list, source: str) -> int | tuple[int, ...]:
    """The number of input features (or the input shape): the model's input shape, else
    the first weight's rows."""
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        shape = None
    if shape is not None:
        if len(shape) < 2 or any(size is None for size in shape[1:]):
            raise ModelFileError(f"{source}: the model takes inputs of shape {shape}; transferlab trains models "
                                 "with a fixed input shape (build it with keras.Input((n,)) or keras.Input((h, w, c)))")
        return model_inputs(shape[1:])
    first = next((layer for layer in model_layers if layer.get_weights()), None)
    if first is None:
        raise ModelFileError(f"{source}: the model is not built (no input shape); build it with keras.Input((n,))")
    return int(first.get_weights()[0].shape[0])


def _model_layers(model) -> list:
    _backend.require_keras()
    import keras

    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


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

    _backend.require_keras()
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
    code = _code_in_layers(path)  # before Keras sees it: a class registered in this process would load
    if code is not None:
        raise ModelFileError(f"{path}: {code}; only Keras' built-in layers and activations load (nothing in a "
                             "model file is executed): rebuild the model from standard layers")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001  (zip errors, missing config, unknown layer classes)
        raise _unloadable(path, error) from None


def _unloadable(path: Path, error: Exception) -> ModelFileError:
    """Why Keras could not load a model file, as one line."""
    if isinstance(error, ValueError) and ("safe_mode" in str(error) or "lambda" in str(error).lower()):
        return ModelFileError(
            f"{path}: the model contains code (a Lambda layer or similar) that would only load with "
            "safe_mode=False; transferlab treats model files as data — rebuild it from standard layers")
    return ModelFileError(f"{path}: not a loadable Keras model ({_first_line(error)})")


def _code_in_layers(path: Path) -> str | None:
    """The first layer that would need code to load, read from the archive's `config.json`
    (plain JSON: reading it runs nothing): a Lambda, a custom or registered class, or an
    activation that names a Python function."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    for layer in (config.get("config") or {}).get("layers") or ():
        name = (layer.get("config") or {}).get("name", "?")
        if layer.get("class_name") == "Lambda":
            return f"layer {name!r} is a Lambda layer (Python code)"
        module = layer.get("module") or ""
        if not module.startswith("keras") or ">" in (layer.get("registered_name") or ""):
            return f"layer {name!r} is a custom class ({layer.get('registered_name') or layer.get('class_name')})"
        activation = (layer.get("config") or {}).get("activation")
        if isinstance(activation, dict) and not str(activation.get("module", "")).startswith("keras"):
            return f"the activation of layer {name!r} names a Python function ({activation.get('config')!r})"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- fresh weights ----------------------------------------------------------------------


def fresh_layer(spec: Layer, fan_in: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A layer's arrays as Keras initialises them."""
    return spec.fresh(fan_in, rng)


def fresh_weights(arch: Architecture, rng: np.random.Generator) -> Weights:
    return [spec.fresh(fan_in, rng) for spec, (fan_in, _) in zip(arch.layers, arch.shapes)]
