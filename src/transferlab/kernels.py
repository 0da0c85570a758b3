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
# Above this many input channels × window positions a convolution runs as image patches
# times a matrix (a batched matrix product across models); at or below it, as XLA's own
# convolution (a grouped convolution across models). On CPU patches measured 1.1–3.5×
# faster than the grouped convolution and 2–7× faster than a loop over models for every
# layer of the examples' CNNs (bench/conv_lowering.py; bench/RESULTS.md), so every kernel
# takes patches; the direct lowering stays for the measurement and the parity tests.
PATCHES_ABOVE = 0


def convolve(x, kernel, strides, padding: str, dilation):
    """One model's convolution, as Keras' JAX backend computes it (`lax.conv_general_dilated`,
    channels last): `x (batch, *spatial, in)`, `kernel (*window, in, out)`. Lowered as
    patches × matrix or as XLA's convolution by the kernel's size (`PATCHES_ABOVE`)."""
    rank = kernel.ndim - 2
    dimensions = _CONV_DIMENSIONS[rank]
    if conv_lowering(kernel.shape) == "patches":
        patches = jax.lax.conv_general_dilated_patches(
            x, kernel.shape[:rank], strides, padding.upper(), rhs_dilation=dilation, dimension_numbers=dimensions)
        # a patch's values run channel-major: (in, *window)
        return patches @ jnp.moveaxis(kernel, -2, 0).reshape(-1, kernel.shape[-1])
    return jax.lax.conv_general_dilated(x, kernel, strides, padding.upper(), rhs_dilation=dilation,
                                        dimension_numbers=dimensions)


def conv_lowering(kernel_shape) -> str:
    """`"patches"` or `"direct"` for a kernel `(*window, in, out)` (see `PATCHES_ABOVE`)."""
    return "patches" if int(np.prod(kernel_shape[:-1])) > PATCHES_ABOVE else "direct"


def pool(x, reduction: str, window, strides, padding: str):
    """One model's max or average pooling, as Keras' JAX backend computes it
    (`lax.reduce_window`); an average with `same` padding divides by the values inside."""
    dims, steps, padding_name = (1, *window, 1), (1, *strides, 1), padding.upper()
    if reduction == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, steps, padding_name)
    pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, steps, padding_name)
    if padding == "valid":
        return pooled / float(np.prod(window))
    shape = [(size if size_of_window != 1 else 1) for size, size_of_window in zip(x.shape, dims)]
    counts = jax.lax.reduce_window(jnp.ones(shape, x.dtype), 0.0, jax.lax.add, dims, steps, padding_name)
    return pooled / counts
