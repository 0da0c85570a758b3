"""Layer types: one class per Keras layer kind the engine trains, and a registry.

Each type owns everything about its kind: the spec (its study-file and stored form),
fresh weights (Keras' initialisers), the vectorised forward pass, its state (moving
statistics), its Keras round-trip and its output width. Nothing else in transferlab
switches on layer kinds: `Architecture`, the engine, the strategies and the store ask
the layer.

Forward passes work on the engine's layouts: flat models keep the model axis *last*
(`x: (batch, features, models)`, `kernel: (in, out, models)`); wide models and models on
feature maps are written for one model (`x: (batch, *shape)`, channels last, as Keras)
and mapped over models. Weights travel as one tuple per layer in Keras' `get_weights()`
order; the first `n_trainable` arrays are trained, the rest are state (BatchNormalization's
moving statistics).

Layers carry shapes: `output_shape` maps an input shape (without the batch axis) to the
layer's output shape; weight shapes depend on the input's last axis (its features or
channels) alone.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from transferlab import initializers, registry
from transferlab._lazy import LazyModule, jax, jnp
from transferlab.errors import ExtensionError, ModelFileError

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "softplus", "silu", "gelu")
_ACTIVATION_ALIASES = {"swish": "silu", None: "linear"}
# how a frozen BatchNormalization layer runs: on its moving statistics (Keras) or batch statistics
BN_FROZEN_MODES = ("inference", "train")
kernels = LazyModule("transferlab.kernels")  # the math (JAX), loaded when a forward pass is traced




@dataclass
class Context:
    """How layers run in one forward pass.

    `training` (static): Keras' `training=True` (batch statistics, dropout active).
    `inference_stats`: per layer, `(models,)` bool where a BatchNormalization layer uses its
    moving statistics even in training (frozen, `bn_frozen = "inference"`).
    `keys`: per layer, `(models,)` uint32 random keys for this step (dropout masks).
    `rows`: in a batch padded to its full size, the `(batch,)` mask of its real rows and
    `row_count` their number; batch statistics then come from those rows alone.
    `models_last`: arrays carry the model axis last (else the pass is one model's, mapped
    over models): a softmax then runs over axis 1, else over the last axis (a feature
    map's channels)."""

    training: bool
    inference_stats: list | None = None
    keys: list | None = None
    rows: Any = None
    row_count: Any = None
    models_last: bool = True

    @property
    def feature_axis(self) -> int:
        return 1 if self.models_last else -1


class Layer(abc.ABC):
    """The contract of a layer type: a frozen dataclass whose fields are its spec (what a
    study file's `layers = [{ type = ..., ... }]` entry and the stored plan hold).

    A type says what it is (`type`, the study file's name; `keras_class`, the Keras layer
    it mirrors) and provides `fresh` (initial weights, Keras' initialisers), `forward` (the
    vectorised pass), `to_keras` / `from_keras` (the round trip through `.keras` files),
    `weight_shapes` and `output_width`. A subclass that leaves one out fails when the class
    is defined (never an identity layer by accident); `WeightlessLayer` supplies the three
    that a layer without weights shares. Register one with `transferlab.register_layer`
    (or an entry point in the `transferlab.layers` group); nothing else in transferlab
    switches on layer kinds.

    Class attributes with defaults: `starts_block` (a Dense-like layer where strategies
    count a hidden layer), `n_trainable` (how many of its arrays train; the rest are
    state), `penalised_array` (the array an L2 anchor pulls), `reads_shared_input`.
    """

    type: ClassVar[str]
    keras_class: ClassVar[str]
    starts_block: ClassVar[bool] = False  # a Dense layer: the start of a hidden layer as strategies count
    n_trainable: ClassVar[int] = 0
    penalised_array: ClassVar[int | None] = None  # which array an L2 anchor pulls (Dense: the kernel)
    reads_shared_input: ClassVar[bool] = False  # takes rows shared by all models as they are (Dense)
    models_last: ClassVar[bool] = True  # its forward pass also runs with the model axis last (else one model at a time)
    CONTRACT: ClassVar[tuple[str, ...]] = ("fresh", "forward", "to_keras", "from_keras", "weight_shapes",
                                           "output_width")

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        own = cls.__mro__[:cls.__mro__.index(Layer)]
        missing = [name for name in ("type", "keras_class") if not isinstance(getattr(cls, name, None), str)]
        missing += [name for name in Layer.CONTRACT if not any(name in klass.__dict__ for klass in own)]
        if missing:
            raise TypeError(f"{cls.__qualname__} must define {', '.join(missing)} (the Layer contract; see "
                            "transferlab.Layer)")

    @property
    def random(self) -> bool:
        """Does its training forward pass draw random numbers (`Context.keys`)?"""
        return False

    @abc.abstractmethod
    def output_width(self, n_in: int) -> int:
        """Its output width (last axis) for an input whose last axis is `n_in` wide."""

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Its output shape for an input of `in_shape` (no batch axis): by default it acts
        on the last axis, as Keras' Dense and normalisation layers do. A `ModelFileError`
        when the shape does not fit the layer."""
        return tuple(in_shape[:-1]) + (self.output_width(in_shape[-1]),)

    @abc.abstractmethod
    def weight_shapes(self, n_in: int) -> list[tuple[int, ...]]:
        """The shapes of its arrays, in Keras' `get_weights()` order."""

    @abc.abstractmethod
    def fresh(self, n_in: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Initial arrays drawn as Keras' initialisers draw them."""

    @abc.abstractmethod
    def forward(self, params: tuple, state: tuple, x, ctx: Context, index: int):
        """`(outputs, new_state)` for `x (batch, n_in, models)`: trainable `params` and
        `state` (moving statistics) per model; `index` is its position (`ctx.keys[index]`)."""

    @abc.abstractmethod
    def to_keras(self, name: str):
        """The Keras layer it mirrors, named `name`."""

    @classmethod
    @abc.abstractmethod
    def from_keras(cls, layer, source: str) -> Layer:
        """The spec of a Keras layer; a `ModelFileError` naming `source` and the layer when
        it cannot be trained exactly."""

    def describe(self) -> str:
        return self.keras_class

    def short(self) -> str:
        """A few characters for an architecture's one-line summary."""
        return self.describe()

    def to_dict(self) -> dict:
        """Its study-file form (windows and strides as lists, as TOML and JSON write them)."""
        return {"type": self.type, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}


class WeightlessLayer(Layer, abstract=True):
    """A layer without weights (dropout, an activation): its width passes through."""

    def output_width(self, n_in: int) -> int:
        return n_in

    def weight_shapes(self, n_in: int) -> list[tuple[int, ...]]:
        return []

    def fresh(self, n_in: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        return ()


@dataclass(frozen=True)
class Dense(Layer):
    """`Dense(units, activation)`: kernel and bias drawn by the named initialisers."""

    units: int
    activation: str = "linear"
    kernel_initializer: str = "glorot_uniform"
    bias_initializer: str = "zeros"
    type: ClassVar[str] = "dense"
    keras_class: ClassVar[str] = "Dense"
    starts_block: ClassVar[bool] = True
    n_trainable: ClassVar[int] = 2
    penalised_array: ClassVar[int | None] = 0
    reads_shared_input: ClassVar[bool] = True

    def __post_init__(self):
        _check_activation(self.activation)
        for name in (self.kernel_initializer, self.bias_initializer):
            if name not in initializers.INITIALIZERS:
                raise ModelFileError(
                    f"initializer {name!r} is not supported; use one of {', '.join(initializers.INITIALIZERS)}"
                )

    def output_width(self, n_in: int) -> int:
        return self.units

    def weight_shapes(self, n_in: int) -> list[tuple[int, ...]]:
        return [(n_in, self.units), (self.units,)]

    def fresh(self, n_in: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        return (
            initializers.sample(self.kernel_initializer, (n_in, self.units), rng),
            initializers.sample(self.bias_initializer, (self.units,), rng),
        )

    def forward(self, params, state, x, ctx, index):
        kernel, bias = params
        if kernel.ndim == 2:  # one model (the engine maps it over models): a matrix product
            return kernels.activate(self.activation, x @ kernel + bias, axis=-1), state
        return kernels.activate(self.activation, kernels.dense(x, kernel, bias), axis=1), state

    def to_keras(self, name: str):
        import keras

        return keras.layers.Dense(
            self.units,
            activation=self.activation,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            name=name,
        )

    @classmethod
    def from_keras(cls, layer, source: str) -> Dense:
        if not layer.use_bias:
            raise ModelFileError(f"{source}: layer {layer.name!r} has use_bias=False; use a bias")
        return cls(
            units=int(layer.units),
            activation=_keras_activation(layer, source),
            kernel_initializer=initializers.initializer_name(layer.kernel_initializer),
            bias_initializer=initializers.initializer_name(layer.bias_initializer),
        )

    def describe(self) -> str:
        return f"Dense({self.units}, {self.activation})"

    def short(self) -> str:
        return f"{self.units} {self.activation}"


@dataclass(frozen=True)
class BatchNormalization(Layer):
    """Keras' `BatchNormalization()` over the features (momentum 0.99, epsilon 1e-3):
    gamma and beta train, the moving mean and variance are state."""

    momentum: float = 0.99
    epsilon: float = 1e-3
    type: ClassVar[str] = "batch_normalization"
    keras_class: ClassVar[str] = "BatchNormalization"
    n_trainable: ClassVar[int] = 2

    def output_width(self, n_in: int) -> int:
        return n_in

    def weight_shapes(self, n_in: int) -> list[tuple[int, ...]]:
        return [(n_in,)] * 4

    def fresh(self, n_in: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        ones, zeros = np.ones(n_in, np.float32), np.zeros(n_in, np.float32)
        return (ones, zeros, zeros.copy(), ones.copy())

    def forward(self, params, state, x, ctx, index):
        gamma, beta = params
        moving_mean, moving_variance = state
        if not ctx.training:
            return kernels.normalize(x, moving_mean[None], moving_variance[None], gamma, beta, self.epsilon), state
        mean, variance = kernels.batch_moments(x, ctx, per_model=gamma.ndim == 1)
        inference = ctx.inference_stats[index]  # (M,): frozen under bn_frozen = "inference"
        outputs = jnp.where(
            inference,
            kernels.normalize(x, moving_mean[None], moving_variance[None], gamma, beta, self.epsilon),
            kernels.normalize(x, mean[None], variance[None], gamma, beta, self.epsilon),
        )
        keep = 1.0 - self.momentum
        new_state = (
            jnp.where(inference, moving_mean, moving_mean * self.momentum + jax.lax.stop_gradient(mean) * keep),
            jnp.where(
                inference, moving_variance, moving_variance * self.momentum + jax.lax.stop_gradient(variance) * keep
            ),
        )
        return outputs, new_state

    def to_keras(self, name: str):
        import keras

        return keras.layers.BatchNormalization(momentum=self.momentum, epsilon=self.epsilon, name=name)

    @classmethod
    def from_keras(cls, layer, source: str) -> BatchNormalization:
        _check_feature_axis(layer, source)
        if getattr(layer, "renorm", False) or getattr(layer, "synchronized", False):
            raise ModelFileError(f"{source}: layer {layer.name!r}: renorm and synchronized BatchNormalization are not supported")
        return cls(momentum=float(layer.momentum), epsilon=float(layer.epsilon))

    def describe(self) -> str:
        return "BatchNormalization"

    def short(self) -> str:
        return "BN"


@dataclass(frozen=True)
class LayerNormalization(Layer):
    """Keras' `LayerNormalization()` over the features of each row (epsilon 1e-3): gamma
    and beta train; no state."""

    epsilon: float = 1e-3
    type: ClassVar[str] = "layer_normalization"
    keras_class: ClassVar[str] = "LayerNormalization"
    n_trainable: ClassVar[int] = 2

    def output_width(self, n_in: int) -> int:
        return n_in

    def weight_shapes(self, n_in: int) -> list[tuple[int, ...]]:
        return [(n_in,)] * 2

    def fresh(self, n_in: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        return (np.ones(n_in, np.float32), np.zeros(n_in, np.float32))

    def forward(self, params, state, x, ctx, index):
        gamma, beta = params
        axis = -1 if gamma.ndim == 1 else 1  # one model: the last (channel) axis; models last: the features
        mean = jnp.mean(x, axis=axis, keepdims=True)
        variance = jnp.var(x, axis=axis, keepdims=True)
        return kernels.normalize(x, mean, variance, gamma, beta, self.epsilon), state

    def to_keras(self, name: str):
        import keras

        return keras.layers.LayerNormalization(epsilon=self.epsilon, name=name)

    @classmethod
    def from_keras(cls, layer, source: str) -> LayerNormalization:
        _check_feature_axis(layer, source)
        if getattr(layer, "rms_scaling", False):
            raise ModelFileError(f"{source}: layer {layer.name!r}: rms_scaling=True is not supported")
        return cls(epsilon=float(layer.epsilon))

    def describe(self) -> str:
        return "LayerNormalization"

    def short(self) -> str:
        return "LN"


@dataclass(frozen=True)
class Dropout(WeightlessLayer):
    """Keras' `Dropout(rate)`: in training, each unit is zeroed with probability `rate` and
    the kept ones scaled by 1/(1 − rate) (a fresh mask per model and step, from the run's
    seed); inactive in evaluation."""

    rate: float
    type: ClassVar[str] = "dropout"
    keras_class: ClassVar[str] = "Dropout"

    def __post_init__(self):
        if not 0 <= self.rate < 1:
            raise ModelFileError(f"dropout rate {self.rate} must be at least 0 and below 1")

    @property
    def random(self) -> bool:
        return self.rate > 0

    def forward(self, params, state, x, ctx, index):
        if not ctx.training or self.rate == 0:
            return x, state
        keep = 1.0 - self.rate
        one_model = jnp.ndim(ctx.keys[index]) == 0  # mapped over models: every value of x is its own unit
        rows, units = x.shape[0], (int(np.prod(x.shape[1:])) if one_model else x.shape[1])
        counter = jax.lax.broadcasted_iota(jnp.uint32, (rows, units), 0) * jnp.uint32(units) + (
            jax.lax.broadcasted_iota(jnp.uint32, (rows, units), 1))
        counter = counter.reshape(x.shape) if one_model else counter.reshape((rows, units) + (1,) * (x.ndim - 2))
        # each model's key ((models,) last, or one model's scalar), hashed with every unit's index
        bits = kernels.mix32(counter * jnp.uint32(0x9E3779B9) + ctx.keys[index])
        uniform = (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
        return jnp.where(uniform < keep, x / keep, 0.0), state

    def to_keras(self, name: str):
        import keras

        return keras.layers.Dropout(self.rate, name=name)

    @classmethod
    def from_keras(cls, layer, source: str) -> Dropout:
        if getattr(layer, "noise_shape", None) is not None:
            raise ModelFileError(f"{source}: layer {layer.name!r}: Dropout with a noise_shape is not supported")
        return cls(rate=float(layer.rate))

    def describe(self) -> str:
        return f"Dropout({self.rate:g})"

    def short(self) -> str:
        return f"dropout {self.rate:g}"


@dataclass(frozen=True)
class Activation(WeightlessLayer):
    """Keras' `Activation(name)`: an activation function as a layer of its own."""

    activation: str
    type: ClassVar[str] = "activation"
    keras_class: ClassVar[str] = "Activation"

    def __post_init__(self):
        _check_activation(self.activation)

    def forward(self, params, state, x, ctx, index):
        return kernels.activate(self.activation, x, axis=ctx.feature_axis), state

    def to_keras(self, name: str):
        import keras

        return keras.layers.Activation(self.activation, name=name)

    @classmethod
    def from_keras(cls, layer, source: str) -> Activation:
        return cls(_keras_activation(layer, source))

    def describe(self) -> str:
        return f"Activation({self.activation})"

    def short(self) -> str:
        return self.activation


# convolutions, pooling and Flatten live in `transferlab.feature_maps`, registered on first use
REGISTRY = registry.Registry("layer type", "transferlab.layers", Layer, key=lambda cls: cls.type,
                             built_in_modules=("transferlab.feature_maps",))
REGISTRY.register(Dense)
REGISTRY.register(BatchNormalization, "batchnorm")
REGISTRY.register(LayerNormalization, "layernorm")
REGISTRY.register(Dropout)
REGISTRY.register(Activation)


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Add a layer type so study files (`layers = [{ type = ... }]`), stored plans and
    `.keras` files (by `keras_class`) can use it (a decorator).

    Parameters
    ----------
    cls : type[Layer]
        A frozen dataclass deriving from `transferlab.Layer` (or `WeightlessLayer`).

    Returns
    -------
    type[Layer]
        `cls` itself.

    Raises
    ------
    ExtensionError
        `cls` is not a frozen dataclass `Layer`, or its `type` or `keras_class` is taken.

    Examples
    --------
    >>> @transferlab.register_layer
    ... @dataclass(frozen=True)
    ... class Scale(WeightlessLayer):
    ...     factor: float
    ...     type: ClassVar[str] = "scale"
    ...     keras_class: ClassVar[str] = "Rescaling"  # doctest: +SKIP
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ExtensionError(f"{cls!r} is not a Layer subclass; a layer type must derive from transferlab.Layer")
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        raise ExtensionError(f"{getattr(cls, '__qualname__', cls)!r}: a layer type must be a frozen dataclass "
                             "(@dataclass(frozen=True)): its fields are its spec")
    taken = _by_keras_class().get(getattr(cls, "keras_class", None))
    if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ExtensionError(f"{cls.__qualname__}: keras_class {cls.keras_class!r} is read by {taken.__qualname__} "
                             "already")
    return REGISTRY.register(cls)


def _by_keras_class() -> dict[str, type[Layer]]:
    return {cls.keras_class: cls for cls in REGISTRY.classes()}


def supported() -> str:
    """The layer types, for messages."""
    return ", ".join(cls.keras_class for cls in REGISTRY.classes())


def from_dict(data: dict, where: str = "layer") -> Layer:
    """A layer from its study-file or stored form `{type = ..., **parameters}`."""
    data = dict(data)
    kind = data.pop("type", None)
    cls = REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ModelFileError(f"{where}.type: {kind!r} is not a layer type; use one of {', '.join(REGISTRY.names())}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ModelFileError(f"{where}.{unknown[0]}: {cls.type} takes {', '.join(sorted(names)) or 'no parameters'}")
    required = [f.name for f in fields(cls) if f.name not in data and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    if required:
        raise ModelFileError(f"{where}: {cls.type} needs {' and '.join(required)}")
    try:
        return cls(**data)
    except TypeError as error:
        raise ModelFileError(f"{where}: {error}") from None
    except ModelFileError as error:
        raise ModelFileError(f"{where}: {error}") from None


def from_keras(layer, source: str) -> Layer:
    """The layer type of a Keras layer, or a message naming the layer and the supported kinds."""
    cls = _by_keras_class().get(type(layer).__name__)
    if cls is None:
        raise ModelFileError(
            f"{source}: layer {layer.name!r} is a {type(layer).__name__}; transferlab trains chains of "
            f"{supported()} layers"
        )
    _check_no_penalties(layer, source)
    return cls.from_keras(layer, source)


def _check_no_penalties(layer, source: str) -> None:
    """Regularisers and constraints change what `fit` computes; the engine has neither."""
    for attribute in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "gamma_regularizer",
                      "beta_regularizer", "kernel_constraint", "bias_constraint", "gamma_constraint",
                      "beta_constraint"):
        if getattr(layer, attribute, None) is not None:
            raise ModelFileError(
                f"{source}: layer {layer.name!r} has a {attribute}; transferlab trains without regularisers "
                "and constraints (rebuild the model without it; the l2sp strategy adds an L2 pull)"
            )


def _check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ModelFileError(f"activation {name!r} is not supported; use one of {', '.join(ACTIVATIONS)}")


def _keras_activation(layer, source: str) -> str:
    """A Keras layer's activation by transferlab's name, or a message naming the layer."""
    import keras

    serialized = keras.activations.serialize(layer.activation)
    name = serialized if isinstance(serialized, str) else (serialized or {}).get("config", {}).get("name")
    name = _ACTIVATION_ALIASES.get(name, name)
    if name not in ACTIVATIONS:
        raise ModelFileError(
            f"{source}: layer {layer.name!r} uses activation {name!r}; supported: " + ", ".join(ACTIVATIONS)
        )
    return name


def as_shape(inputs) -> tuple[int, ...]:
    """An input shape from a width (`4` → `(4,)`) or a shape."""
    return (int(inputs),) if np.ndim(inputs) == 0 else tuple(int(n) for n in inputs)


def layer_shapes(inputs, specs) -> list[tuple[int, ...]]:
    """The input shape, then the output shape of each layer of a chain (no batch axis)."""
    shapes = [as_shape(inputs)]
    for spec in specs:
        shapes.append(tuple(spec.output_shape(shapes[-1])))
    return shapes


def layer_widths(inputs, specs) -> list[int]:
    """The input's last axis, then each layer's (a flat chain's widths; a convolutional
    chain's channels)."""
    return [shape[-1] for shape in layer_shapes(inputs, specs)]


def layer_sizes(inputs, specs) -> list[int]:
    """Values per row of the input and of each layer's output (feature maps counted whole)."""
    return [int(np.prod(shape)) for shape in layer_shapes(inputs, specs)]


def _check_feature_axis(layer, source: str) -> None:
    """Normalisation over the last axis only (the features, or a feature map's channels)."""
    axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
    try:
        last = len(layer.input.shape) - 1  # Keras stores a built layer's axis as a positive index
    except (AttributeError, ValueError, TypeError):
        last = 1
    if axis not in (-1, last, (-1,), (last,)) or not (layer.center and layer.scale):
        raise ModelFileError(
            f"{source}: layer {layer.name!r}: transferlab supports {type(layer).__name__} over the feature "
            "axis with center=True and scale=True (Keras' defaults)"
        )
