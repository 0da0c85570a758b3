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


def batch_moments(x, ctx):
    """Mean and (biased) variance over the batch axis, as `jnp.mean` / `jnp.var`; of the
    real rows only when the batch is padded (`ctx.rows`)."""
    if ctx.rows is None:
        return jnp.mean(x, axis=0), jnp.var(x, axis=0)
    real = ctx.rows.reshape((-1,) + (1,) * (x.ndim - 1))
    mean = jnp.sum(jnp.where(real, x, 0.0), axis=0) * (1.0 / ctx.row_count)
    variance = jnp.sum(jnp.where(real, jnp.square(x - mean[None]), 0.0), axis=0) * (1.0 / ctx.row_count)
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
