"""Layer types on feature maps: convolutions, pooling and Flatten, channels last as Keras.

Each is a registered layer type (`transferlab.layers`) with its spec, Keras' initialisers,
forward pass, Keras round trip and output shape. Their forward passes are written for one
model, `x: (batch, *spatial, channels)`: the engine maps models on feature maps over the
model axis (`jax.vmap`), which XLA turns into grouped convolutions and batched products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from transferlab import initializers
from transferlab.errors import ModelFileError
from transferlab.layers import (
    REGISTRY,
    Layer,
    WeightlessLayer,
    _check_activation,
    _keras_activation,
    kernels,
)

PADDINGS = ("valid", "same")


def _window(value, rank: int, name: str) -> tuple[int, ...]:
    """`3` → `(3, 3)`: a window, stride or dilation as one positive size per spatial axis."""
    sizes = (value,) * rank if np.ndim(value) == 0 else tuple(value)
    if len(sizes) != rank or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                                     for n in sizes):
        raise ModelFileError(f"{name} must be a positive whole number or {rank} of them; got {value!r}")
    return tuple(int(n) for n in sizes)


def _spatial_output(size: int, window: int, stride: int, dilation: int, padding: str) -> int:
    """Keras' (and XLA's) output length along one axis."""
    if padding == "same":
        return -(-size // stride)
    return (size - dilation * (window - 1) - 1) // stride + 1


def _check_input(layer: Layer, in_shape: tuple[int, ...], rank: int) -> None:
    if len(in_shape) != rank + 1:
        wanted = "(length, channels)" if rank == 1 else "(height, width, channels)"
        raise ModelFileError(f"{layer.keras_class} takes inputs of shape {wanted}; its input has shape "
                             f"{tuple(in_shape)} (a flat input needs [model] input_shape, or a feature map "
                             "of this rank)")


def _windowed_shape(layer: Layer, in_shape, window, strides, dilation, padding, channels: int) -> tuple[int, ...]:
    _check_input(layer, in_shape, len(window))
    spatial = tuple(_spatial_output(n, k, s, d, padding)
                    for n, k, s, d in zip(in_shape[:-1], window, strides, dilation))
    if min(spatial) < 1:
        raise ModelFileError(f"its input {tuple(in_shape)} is smaller than its window "
                             f"{'×'.join(map(str, window))} (use padding = \"same\" or a smaller window)")
    return spatial + (channels,)


def _check_channels_last(layer, source: str) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ModelFileError(f"{source}: layer {layer.name!r} uses data_format={layer.data_format!r}; "
                             "transferlab trains channels_last models (Keras' default)")


def _check_padding(padding: str) -> None:
    if padding not in PADDINGS:
        raise ModelFileError(f"padding {padding!r} is not supported; use \"valid\" or \"same\"")


@dataclass(frozen=True)
class _Convolution(Layer, abstract=True):
    """Keras' `ConvND(filters, kernel_size, strides, padding, dilation_rate, activation,
    use_bias)`: kernel `(*kernel_size, in_channels, filters)` and bias, drawn by the named
    initialisers (the window counts in both fans, as Keras counts it)."""

    filters: int
    kernel_size: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "valid"
    dilation_rate: int | tuple[int, ...] = 1
    activation: str = "linear"
    use_bias: bool = True
    kernel_initializer: str = "glorot_uniform"
    bias_initializer: str = "zeros"
    rank: ClassVar[int]
    models_last: ClassVar[bool] = False
    starts_block: ClassVar[bool] = True
    penalised_array: ClassVar[int | None] = 0

    def __post_init__(self):
        for name in ("kernel_size", "strides", "dilation_rate"):
            object.__setattr__(self, name, _window(getattr(self, name), self.rank, name))
        if isinstance(self.filters, bool) or not isinstance(self.filters, (int, np.integer)) or self.filters < 1:
            raise ModelFileError(f"filters must be a positive whole number; got {self.filters!r}")
        _check_padding(self.padding)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ModelFileError("strides above 1 with a dilation_rate above 1 is not supported (nor by Keras)")
        _check_activation(self.activation)
        for name in (self.kernel_initializer, self.bias_initializer):
            if name not in initializers.INITIALIZERS:
                raise ModelFileError(
                    f"initializer {name!r} is not supported; use one of {', '.join(initializers.INITIALIZERS)}")

    @property
    def n_trainable(self) -> int:
        return 2 if self.use_bias else 1

    def output_width(self, n_in: int) -> int:
        return self.filters

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return _windowed_shape(self, in_shape, self.kernel_size, self.strides, self.dilation_rate, self.padding,
                               self.filters)

    def weight_shapes(self, n_in: int) -> list[tuple[int, ...]]:
        kernel = self.kernel_size + (n_in, self.filters)
        return [kernel, (self.filters,)] if self.use_bias else [kernel]

    def fresh(self, n_in: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        shapes = self.weight_shapes(n_in)
        arrays = [initializers.sample(self.kernel_initializer, shapes[0], rng)]
        if self.use_bias:
            arrays.append(initializers.sample(self.bias_initializer, shapes[1], rng))
        return tuple(arrays)

    def forward(self, params, state, x, ctx, index):
        kernel = params[0]
        if kernel.ndim != self.rank + 2:
            raise ValueError(f"{self.keras_class} runs one model at a time (mapped over models); got a kernel "
                             f"of shape {kernel.shape}")
        outputs = kernels.convolve(x, kernel, self.strides, self.padding, self.dilation_rate)
        if self.use_bias:
            outputs = outputs + params[1]
        return kernels.activate(self.activation, outputs, axis=-1), state

    def to_keras(self, name: str):
        import keras

        return getattr(keras.layers, self.keras_class)(
            self.filters, self.kernel_size, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, activation=self.activation, use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer, name=name)

    @classmethod
    def from_keras(cls, layer, source: str) -> _Convolution:
        _check_channels_last(layer, source)
        if getattr(layer, "groups", 1) != 1:
            raise ModelFileError(f"{source}: layer {layer.name!r} has groups={layer.groups}; transferlab trains "
                                 "convolutions with groups=1")
        if layer.padding not in PADDINGS:
            raise ModelFileError(f"{source}: layer {layer.name!r} has padding={layer.padding!r}; transferlab trains "
                                 "\"valid\" and \"same\" padding")
        return cls(filters=int(layer.filters), kernel_size=tuple(layer.kernel_size), strides=tuple(layer.strides),
                   padding=layer.padding, dilation_rate=tuple(layer.dilation_rate),
                   activation=_keras_activation(layer, source), use_bias=bool(layer.use_bias),
                   kernel_initializer=initializers.initializer_name(layer.kernel_initializer),
                   bias_initializer=initializers.initializer_name(layer.bias_initializer))

    def describe(self) -> str:
        window = "×".join(map(str, self.kernel_size))
        extras = "".join([f", strides {'×'.join(map(str, self.strides))}" if max(self.strides) > 1 else "",
                          f", dilation {'×'.join(map(str, self.dilation_rate))}" if max(self.dilation_rate) > 1
                          else "", ", same" if self.padding == "same" else ""])
        return f"{self.keras_class}({self.filters}, {window}{extras}, {self.activation})"

    def short(self) -> str:
        return f"conv {self.filters}@{'×'.join(map(str, self.kernel_size))} {self.activation}"


@dataclass(frozen=True)
class Conv1D(_Convolution):
    rank: ClassVar[int] = 1
    type: ClassVar[str] = "conv1d"
    keras_class: ClassVar[str] = "Conv1D"


@dataclass(frozen=True)
class Conv2D(_Convolution):
    rank: ClassVar[int] = 2
    type: ClassVar[str] = "conv2d"
    keras_class: ClassVar[str] = "Conv2D"


@dataclass(frozen=True)
class _Pooling(WeightlessLayer, abstract=True):
    """Keras' `MaxPoolingND` / `AveragePoolingND(pool_size, strides, padding)`: strides
    default to the pool size; an average with `same` padding divides by the values inside
    the input (as Keras' JAX backend does)."""

    pool_size: int | tuple[int, ...] = 2
    strides: int | tuple[int, ...] | None = None
    padding: str = "valid"
    rank: ClassVar[int]
    reduction: ClassVar[str]
    models_last: ClassVar[bool] = False

    def __post_init__(self):
        object.__setattr__(self, "pool_size", _window(self.pool_size, self.rank, "pool_size"))
        strides = self.pool_size if self.strides is None else self.strides
        object.__setattr__(self, "strides", _window(strides, self.rank, "strides"))
        _check_padding(self.padding)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return _windowed_shape(self, in_shape, self.pool_size, self.strides, (1,) * self.rank, self.padding,
                               in_shape[-1])

    def forward(self, params, state, x, ctx, index):
        return kernels.pool(x, self.reduction, self.pool_size, self.strides, self.padding), state

    def to_keras(self, name: str):
        import keras

        return getattr(keras.layers, self.keras_class)(pool_size=self.pool_size, strides=self.strides,
                                                       padding=self.padding, name=name)

    @classmethod
    def from_keras(cls, layer, source: str) -> _Pooling:
        _check_channels_last(layer, source)
        return cls(pool_size=tuple(layer.pool_size), strides=tuple(layer.strides), padding=layer.padding)

    def describe(self) -> str:
        extras = "" if self.strides == self.pool_size else f", strides {'×'.join(map(str, self.strides))}"
        return f"{self.keras_class}({'×'.join(map(str, self.pool_size))}{extras}{', same' if self.padding == 'same' else ''})"

    def short(self) -> str:
        return f"{self.reduction} pool {'×'.join(map(str, self.pool_size))}"


@dataclass(frozen=True)
class MaxPooling1D(_Pooling):
    rank: ClassVar[int] = 1
    reduction: ClassVar[str] = "max"
    type: ClassVar[str] = "max_pooling1d"
    keras_class: ClassVar[str] = "MaxPooling1D"


@dataclass(frozen=True)
class MaxPooling2D(_Pooling):
    rank: ClassVar[int] = 2
    reduction: ClassVar[str] = "max"
    type: ClassVar[str] = "max_pooling2d"
    keras_class: ClassVar[str] = "MaxPooling2D"


@dataclass(frozen=True)
class AveragePooling1D(_Pooling):
    rank: ClassVar[int] = 1
    reduction: ClassVar[str] = "average"
    type: ClassVar[str] = "average_pooling1d"
    keras_class: ClassVar[str] = "AveragePooling1D"


@dataclass(frozen=True)
class AveragePooling2D(_Pooling):
    rank: ClassVar[int] = 2
    reduction: ClassVar[str] = "average"
    type: ClassVar[str] = "average_pooling2d"
    keras_class: ClassVar[str] = "AveragePooling2D"


@dataclass(frozen=True)
class _GlobalPooling(WeightlessLayer, abstract=True):
    """Keras' `GlobalAveragePoolingND()` / `GlobalMaxPoolingND()`: one value per channel."""

    rank: ClassVar[int]
    reduction: ClassVar[str]
    models_last: ClassVar[bool] = False

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        _check_input(self, in_shape, self.rank)
        return (in_shape[-1],)

    def forward(self, params, state, x, ctx, index):
        axes = tuple(range(1, x.ndim - 1))
        return (kernels.jnp.max(x, axis=axes) if self.reduction == "max" else kernels.jnp.mean(x, axis=axes)), state

    def to_keras(self, name: str):
        import keras

        return getattr(keras.layers, self.keras_class)(name=name)

    @classmethod
    def from_keras(cls, layer, source: str) -> _GlobalPooling:
        _check_channels_last(layer, source)
        if getattr(layer, "keepdims", False):
            raise ModelFileError(f"{source}: layer {layer.name!r} has keepdims=True; transferlab trains global "
                                 "pooling that drops the spatial axes (Keras' default)")
        return cls()

    def short(self) -> str:
        return f"global {self.reduction}"


@dataclass(frozen=True)
class GlobalAveragePooling1D(_GlobalPooling):
    rank: ClassVar[int] = 1
    reduction: ClassVar[str] = "average"
    type: ClassVar[str] = "global_average_pooling1d"
    keras_class: ClassVar[str] = "GlobalAveragePooling1D"


@dataclass(frozen=True)
class GlobalAveragePooling2D(_GlobalPooling):
    rank: ClassVar[int] = 2
    reduction: ClassVar[str] = "average"
    type: ClassVar[str] = "global_average_pooling2d"
    keras_class: ClassVar[str] = "GlobalAveragePooling2D"


@dataclass(frozen=True)
class GlobalMaxPooling1D(_GlobalPooling):
    rank: ClassVar[int] = 1
    reduction: ClassVar[str] = "max"
    type: ClassVar[str] = "global_max_pooling1d"
    keras_class: ClassVar[str] = "GlobalMaxPooling1D"


@dataclass(frozen=True)
class GlobalMaxPooling2D(_GlobalPooling):
    rank: ClassVar[int] = 2
    reduction: ClassVar[str] = "max"
    type: ClassVar[str] = "global_max_pooling2d"
    keras_class: ClassVar[str] = "GlobalMaxPooling2D"


@dataclass(frozen=True)
class Flatten(WeightlessLayer):
    """Keras' `Flatten()`: a feature map's values in C order (channels last), one row each."""

    type: ClassVar[str] = "flatten"
    keras_class: ClassVar[str] = "Flatten"
    models_last: ClassVar[bool] = False

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(in_shape),)

    def forward(self, params, state, x, ctx, index):
        return x.reshape((x.shape[0], -1)), state

    def to_keras(self, name: str):
        import keras

        return keras.layers.Flatten(name=name)

    @classmethod
    def from_keras(cls, layer, source: str) -> Flatten:
        _check_channels_last(layer, source)
        return cls()

    def short(self) -> str:
        return "flatten"


for _cls, *_aliases in ((Conv1D,), (Conv2D,), (MaxPooling1D, "max_pool1d"), (MaxPooling2D, "max_pool2d"),
                        (AveragePooling1D, "average_pool1d"), (AveragePooling2D, "average_pool2d"),
                        (GlobalAveragePooling1D,), (GlobalAveragePooling2D,), (GlobalMaxPooling1D,),
                        (GlobalMaxPooling2D,), (Flatten,)):
    REGISTRY.register(_cls, *_aliases)
