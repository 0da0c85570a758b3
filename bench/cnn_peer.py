"""The obvious way to train many small CNNs at once in JAX: one model's SGD step written
plainly with `lax.conv_general_dilated` and `lax.reduce_window`, `jax.vmap` over the
models (model axis first; XLA makes the convolutions grouped ones), `lax.scan` over
batches and epochs, one `jax.jit`. The peer the engine's CNNs are measured against
(bench/cnn_speed.py).

Same semantics as the engine: Keras' categorical cross-entropy, plain SGD, each model its
own row order per epoch, the last partial batch kept, validation after each epoch."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_EPSILON = 1e-7
_ACTIVATIONS = {"relu": jax.nn.relu, "softmax": lambda z: jax.nn.softmax(z, axis=-1), "linear": lambda z: z}


def _forward(params, x, specs):
    """`specs`: per layer a tuple `(type, activation or window, padding)`; params: per layer
    `(kernel, bias)` or `()`."""
    for (kind, *options), weights in zip(specs, params):
        if kind == "conv2d":
            kernel, bias = weights
            x = jax.lax.conv_general_dilated(x, kernel, (1, 1), options[1].upper(),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = _ACTIVATIONS[options[0]](x + bias)
        elif kind == "max_pooling2d":
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        else:
            kernel, bias = weights
            x = _ACTIVATIONS[options[0]](x @ kernel + bias)
    return x


def _loss_and_hits(params, x, y, specs):
    p = _forward(params, x, specs)
    hits = jnp.sum(jnp.argmax(p, -1) == jnp.argmax(y, -1))
    p = jnp.clip(p / jnp.sum(p, axis=-1, keepdims=True), _EPSILON, 1 - _EPSILON)
    return jnp.mean(-jnp.sum(y * jnp.log(p), axis=-1)), hits


@functools.partial(jax.jit, static_argnames=("specs", "batch_size", "learning_rate"))
def train(params, orders, x, y, x_val, y_val, specs, batch_size=32, learning_rate=0.01):
    """`params`: per layer `(kernel (M, …), bias (M, …))` or `()`; `orders`: (M, epochs, rows).
    Returns the trained weights and the curves (loss, accuracy, val_loss, val_accuracy)."""
    n_rows = x.shape[0]
    full = n_rows // batch_size

    def one_model(params, orders):
        def step(params, rows):
            (value, hits), grads = jax.value_and_grad(_loss_and_hits, has_aux=True)(params, x[rows], y[rows], specs)
            params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
            return params, (value * len(rows), hits)

        def epoch(params, order):
            batches = order[: full * batch_size].reshape(full, batch_size)
            params, (losses, hits) = jax.lax.scan(step, params, batches)
            total, correct = jnp.sum(losses), jnp.sum(hits)
            if full * batch_size < n_rows:
                params, (last_loss, last_hits) = step(params, order[full * batch_size :])
                total, correct = total + last_loss, correct + last_hits
            val_loss, val_hits = _loss_and_hits(params, x_val, y_val, specs)
            return params, (total / n_rows, correct / n_rows, val_loss, val_hits / len(x_val))

        return jax.lax.scan(epoch, params, orders)

    return jax.vmap(one_model)(params, orders)


def train_on_devices(stacked, orders, x, y, x_val, y_val, specs) -> list:
    """`train` with the models split over the host's XLA devices: one `(params, curves)` each."""
    devices = jax.local_devices()
    share = -(-len(orders) // len(devices))
    outputs = []
    for index, device in enumerate(devices):
        part = slice(index * share, (index + 1) * share)
        put = lambda array: jax.device_put(array, device)  # noqa: E731
        params = [tuple(put(a[part]) for a in layer) for layer in stacked]
        outputs.append(train(params, put(orders[part]), put(x), put(y), put(x_val), put(y_val), specs))
    return jax.block_until_ready(outputs)
