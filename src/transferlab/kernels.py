"""The math of the layer types, on the engine's layout `(batch, features, models)`.

Layer specs (`transferlab.layers`) say what a layer is; these functions compute it with
JAX, vectorised across models. Kept apart so that reading a study file or a results
folder never loads JAX.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Contractions over at most this many units are unrolled into multiply-adds (a few
# elementwise loops vectorised across models); wider ones use a batched matrix product.
UNROLL_WIDTH = 16


def mix32(h):
    """A 32-bit integer hash with full avalanche (Wellons' lowbias32): the engine's
    counter-based random numbers for dropout, far cheaper on a CPU than threefry."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def batch_moments(x, ctx, per_model: bool = False):
    """Mean and (biased) variance over the batch axis, as `jnp.mean` / `jnp.var`; of the
    real rows only when the batch is padded (`ctx.rows`). For one model (`per_model`) on
    feature maps `(batch, ..., channels)`, over every axis but the channels (Keras' axes)."""
    axes = tuple(range(x.ndim - 1)) if per_model else (0,)
    if ctx.rows is None:
        return jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
    real = ctx.rows.reshape((-1,) + (1,) * (x.ndim - 1))
    count = ctx.row_count * float(np.prod([x.shape[axis] for axis in axes[1:]]))
    mean = jnp.sum(jnp.where(real, x, 0.0), axis=axes) * (1.0 / count)
    variance = jnp.sum(jnp.where(real, jnp.square(x - mean), 0.0), axis=axes) * (1.0 / count)
    return mean, variance


def normalize(x, mean, variance, gamma, beta, epsilon):
    """keras.ops.batch_normalization / layer_normalization: `x·inv + (beta − mean·inv)`."""
    inv = jax.lax.rsqrt(variance + epsilon) * gamma
    return x * inv + (beta - mean * inv)


ACTIVATION_FUNCTIONS: dict[str, Any] = {
    "linear": lambda z: z,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": lambda z: jax.nn.softmax(z, axis=1),
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}


@jax.custom_vjp
def dense(x, kernel, bias):
    """`x @ kernel + bias` per model: x `(B, I, M)` (or `(B, I)` shared by every model),
    kernel `(I, O, M)`, bias `(O, M)`. One model's Dense (the per-model layout) is a plain
    matrix product in `Dense.forward`, differentiated by JAX."""
    return _contract_inputs(x, kernel) + bias[None]


def _dense_forward(x, kernel, bias):
    return dense(x, kernel, bias), (x, kernel)


def _dense_backward(residuals, upstream):
    x, kernel = residuals
    if x.shape[1] > UNROLL_WIDTH and kernel.shape[1] > UNROLL_WIDTH:
        d_kernel = jnp.einsum("bim,bom->iom", x, upstream)
    else:
        d_kernel = jnp.sum(x[:, :, None, :] * upstream[:, None, :, :], axis=0)
    d_bias = jnp.sum(upstream, axis=0)
    return _contract_outputs(upstream, kernel), d_kernel, d_bias


dense.defvjp(_dense_forward, _dense_backward)


def _contract_inputs(x, kernel):
    """sum_i x[b, i, m] · kernel[i, o, m] → (B, O, M); a 2-D `x (B, I)` is one input shared
    by every model (evaluation), never copied per model."""
    n_in = kernel.shape[0]
    if n_in > UNROLL_WIDTH:
        return jnp.einsum("bi,iom->bom" if x.ndim == 2 else "bim,iom->bom", x, kernel)
    if x.ndim == 2:
        x = x[:, :, None]
    total = x[:, 0, None, :] * kernel[None, 0]
    for i in range(1, n_in):
        total = total + x[:, i, None, :] * kernel[None, i]
    return total


def _contract_outputs(upstream, kernel):
    """sum_o upstream[b, o, m] · kernel[i, o, m] → (B, I, M)."""
    n_out = kernel.shape[1]
    if n_out > UNROLL_WIDTH:
        return jnp.einsum("bom,iom->bim", upstream, kernel)
    total = upstream[:, None, 0, :] * kernel[None, :, 0, :]
    for o in range(1, n_out):
        total = total + upstream[:, None, o, :] * kernel[None, :, o, :]
    return total


def activate(name: str, x, axis: int = 1):
    """An activation function; softmax over `axis` (the last axis of one model's feature map)."""
    if name == "softmax":
        return jax.nn.softmax(x, axis=axis)
    return ACTIVATION_FUNCTIONS[name](x)


_CONV_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}
# How a convolution runs for many models at once on a CPU, chosen by its shapes from
# measurements (bench/conv_lowering.py; bench/RESULTS.md, "Convolutions: which lowering"):
# while its dense equivalent (a matrix of input values × output values, the kernel's
# entries placed where they act) has at most `MATRIX_ENTRIES` entries, as one matrix
# product with it; above, as image patches times the kernel as a matrix, with the input's
# gradient put back window position by window position. XLA's own convolution (a grouped
# convolution under `vmap`) measured slowest for every layer of the examples' CNNs; it
# stays for the measurement and the parity tests (`LOWERING` forces one).
MATRIX_ENTRIES = 1 << 16
LOWERING: str | None = None


def convolve(x, kernel, strides, padding: str, dilation):
    """One model's convolution, as Keras' JAX backend computes it (`lax.conv_general_dilated`,
    channels last): `x (batch, *spatial, in)`, `kernel (*window, in, out)`, lowered by
    `conv_lowering`."""
    strides, dilation = tuple(int(s) for s in strides), tuple(int(d) for d in dilation)
    lowering = conv_lowering(x.shape[1:], kernel.shape, strides, padding, dilation)
    if lowering == "matrix":
        return _matrix_convolve(x, kernel, strides, padding, dilation)
    if lowering == "patches":
        return _patches_convolve(x, kernel, strides, padding, dilation)
    return _direct_convolve(x, kernel, strides, padding, dilation)


def conv_lowering(in_shape, kernel_shape, strides, padding: str, dilation) -> str:
    """`"matrix"`, `"patches"` or `"direct"` for one input `(*spatial, in)` and kernel."""
    if LOWERING is not None:
        return LOWERING
    rank = len(kernel_shape) - 2
    out = _output_size(in_shape[:-1], kernel_shape[:rank], strides, padding, dilation)
    entries = int(np.prod(in_shape)) * int(np.prod(out)) * int(kernel_shape[-1])
    return "matrix" if entries <= MATRIX_ENTRIES else "patches"


def _output_size(spatial, window, strides, padding, dilation) -> tuple[int, ...]:
    if padding == "same":
        return tuple(-(-n // s) for n, s in zip(spatial, strides))
    return tuple((n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(spatial, window, strides, dilation))


def _matrix_convolve(x, kernel, strides, padding, dilation):
    """The convolution as one matrix product: `x` flat `(batch, values)` times its dense
    equivalent `(input values, output values)`, built by placing the kernel's entries
    where they act (differentiable: the kernel's gradient gathers them back)."""
    rank = kernel.ndim - 2
    spatial, window, (channels, filters) = x.shape[1:-1], kernel.shape[:rank], kernel.shape[-2:]
    inputs, outputs, positions = _matrix_places(spatial, window, strides, padding, dilation)
    out = _output_size(spatial, window, strides, padding, dilation)
    n_in, n_out = int(np.prod(spatial)), int(np.prod(out))
    matrix = jnp.zeros((n_in, channels, n_out, filters), kernel.dtype)
    matrix = matrix.at[inputs, :, outputs, :].set(kernel.reshape(-1, channels, filters)[positions])
    flat = x.reshape(x.shape[0], -1) @ matrix.reshape(n_in * channels, n_out * filters)
    return flat.reshape((x.shape[0],) + out + (filters,))


@functools.lru_cache(maxsize=256)
def _matrix_places(spatial, window, strides, padding, dilation):
    """For each (output position, window position) that reads inside the input: the input
    position, the output position and the window position, as flat indices."""
    pads = _padding_amounts(spatial, window, strides, dilation, padding)
    out = _output_size(spatial, window, strides, padding, dilation)
    inputs, outputs, positions = [], [], []
    for output, place in enumerate(np.ndindex(*out)):
        for position, offset in enumerate(np.ndindex(*window)):
            read = [o * s + w * d - low for o, w, s, d, (low, _) in zip(place, offset, strides, dilation, pads)]
            if all(0 <= r < n for r, n in zip(read, spatial)):
                inputs.append(int(np.ravel_multi_index(read, spatial)))
                outputs.append(output)
                positions.append(position)
    return np.asarray(inputs), np.asarray(outputs), np.asarray(positions)


def _direct_convolve(x, kernel, strides, padding, dilation):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding.upper(), rhs_dilation=dilation,
                                        dimension_numbers=_CONV_DIMENSIONS[kernel.ndim - 2])


def _patches(x, kernel, strides, padding, dilation):
    """`(batch, *out, in · window)`: each output position's window of `x`, channel-major."""
    rank = kernel.ndim - 2
    return jax.lax.conv_general_dilated_patches(x, kernel.shape[:rank], strides, padding.upper(),
                                                rhs_dilation=dilation, dimension_numbers=_CONV_DIMENSIONS[rank])


def _kernel_matrix(kernel):
    """`(in · window, out)`, rows in the patches' (channel-major) order."""
    return jnp.moveaxis(kernel, -2, 0).reshape(-1, kernel.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _patches_convolve(x, kernel, strides, padding, dilation):
    return _patches(x, kernel, strides, padding, dilation) @ _kernel_matrix(kernel)


def _patches_forward(x, kernel, strides, padding, dilation):
    patches = _patches(x, kernel, strides, padding, dilation)
    return patches @ _kernel_matrix(kernel), (patches, kernel, x)


def _patches_backward(strides, padding, dilation, residuals, upstream):
    """The kernel's gradient as patchesᵀ × upstream; the input's as upstream × kernelᵀ put
    back where each window position read it (`_put_back`), not as the transpose of the
    patches operation (a convolution with an identity kernel, far slower on a CPU)."""
    patches, kernel, x = residuals
    rank, channels, filters = kernel.ndim - 2, kernel.shape[-2], kernel.shape[-1]
    window = kernel.shape[:rank]
    d_matrix = patches.reshape(-1, patches.shape[-1]).T @ upstream.reshape(-1, filters)
    d_kernel = jnp.moveaxis(d_matrix.reshape((channels,) + window + (filters,)), 0, -2)
    d_patches = upstream @ _kernel_matrix(kernel).T
    d_patches = d_patches.reshape(d_patches.shape[:-1] + (channels,) + window)
    return _put_back(d_patches, x.shape, window, strides, padding, dilation), d_kernel


_patches_convolve.defvjp(_patches_forward, _patches_backward)


def _put_back(d_patches, x_shape, window, strides, padding, dilation):
    """`(batch, *out, in, *window)` → `(batch, *spatial, in)`: every window position's values
    added to the input positions it read (strided, dilated, inside the padding)."""
    spatial = x_shape[1:-1]
    pieces = ((position, d_patches[(Ellipsis, *position)]) for position in np.ndindex(*window))
    return _add_back(pieces, spatial, _padding_amounts(spatial, window, strides, dilation, padding), strides, dilation)


def _padding_amounts(spatial, window, strides, dilation, padding: str) -> list[tuple[int, int]]:
    return [_same_padding(n, k, s, d) if padding == "same" else (0, 0)
            for n, k, s, d in zip(spatial, window, strides, dilation)]


def _add_back(pieces, spatial, pads, strides, dilation):
    """The sum of `(window position, values (batch, *out, channels))` pairs, each added to the
    input positions that window position read, cropped to the input `spatial`: how the
    input's gradient of a windowed operation (a convolution, max pooling) is put together."""
    total = None
    for position, piece in pieces:
        config = [(0, 0, 0)]
        for n, (low, high), o, p, s, d in zip(spatial, pads, piece.shape[1:-1], position, strides, dilation):
            config.append((p * d, n + low + high - p * d - ((o - 1) * s + 1), s - 1))
        placed = jax.lax.pad(piece, jnp.zeros((), piece.dtype), config + [(0, 0, 0)])
        total = placed if total is None else total + placed
    crop = tuple(slice(low, low + n) for (low, _), n in zip(pads, spatial))
    return total[(slice(None), *crop, slice(None))]


def _same_padding(size: int, window: int, stride: int, dilation: int) -> tuple[int, int]:
    """XLA's "SAME" padding along one axis: the output keeps ceil(size / stride) positions;
    the odd one goes at the end."""
    out = -(-size // stride)
    needed = max(0, (out - 1) * stride + dilation * (window - 1) + 1 - size)
    return needed // 2, needed - needed // 2


def pool(x, reduction: str, window, strides, padding: str):
    """One model's max or average pooling, as Keras' JAX backend computes it
    (`lax.reduce_window`); an average with `same` padding divides by the values inside. Max
    pooling has its own backward pass (`_max_pool`)."""
    dims, steps, padding_name = (1, *window, 1), (1, *strides, 1), padding.upper()
    if reduction == "max":
        return _max_pool(x, tuple(int(w) for w in window), tuple(int(s) for s in strides), padding)
    pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, steps, padding_name)
    if padding == "valid":
        return pooled / float(np.prod(window))
    shape = [(size if size_of_window != 1 else 1) for size, size_of_window in zip(x.shape, dims)]
    counts = jax.lax.reduce_window(jnp.ones(shape, x.dtype), 0.0, jax.lax.add, dims, steps, padding_name)
    return pooled / counts


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, padding):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), padding.upper())


def _max_pool_forward(x, window, strides, padding):
    pooled = _max_pool(x, window, strides, padding)
    return pooled, (x, pooled)


def _max_pool_backward(window, strides, padding, residuals, upstream):
    """The gradient JAX derives (`select_and_scatter_add`: each window's upstream value to its
    first maximal input, in row-major window order), computed window position by window
    position with elementwise masks: XLA's select-and-scatter is slow on a CPU under vmap."""
    x, pooled = residuals
    spatial, out, ones = x.shape[1:-1], pooled.shape[1:-1], (1,) * len(window)
    pads = _padding_amounts(spatial, window, strides, ones, padding)
    padded = jnp.pad(x, [(0, 0)] + pads + [(0, 0)], constant_values=-jnp.inf)

    def pieces():
        claimed = jnp.zeros(pooled.shape, bool)
        for position in np.ndindex(*window):
            limits = [p + (o - 1) * s + 1 for p, o, s in zip(position, out, strides)]
            read = jax.lax.slice(padded, (0, *position, 0), (x.shape[0], *limits, x.shape[-1]), (1, *strides, 1))
            hit = (read == pooled) & ~claimed
            claimed = claimed | hit
            yield position, jnp.where(hit, upstream, 0.0)

    return (_add_back(pieces(), spatial, pads, strides, ones),)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)
