"""The obvious way to train many MLPs at once in JAX: one model's SGD step written plainly,
`jax.vmap` over the models (model axis first), `lax.scan` over batches and epochs, one
`jax.jit`. The peer the engine is measured against for wide layers (bench/wide_layers.py).

Same semantics as the engine on Dense stacks: Keras' categorical cross-entropy, plain SGD,
each model its own row order per epoch, the last partial batch kept."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_EPSILON = 1e-7
_ACTIVATIONS = {"relu": jax.nn.relu, "softmax": lambda z: jax.nn.softmax(z, axis=-1), "linear": lambda z: z}


def _forward(params, x, activations):
    for (kernel, bias), activation in zip(params, activations):
        x = _ACTIVATIONS[activation](x @ kernel + bias)
    return x


def _loss(params, x, y, activations):
    p = _forward(params, x, activations)
    p = jnp.clip(p / jnp.sum(p, axis=-1, keepdims=True), _EPSILON, 1 - _EPSILON)
    return jnp.mean(-jnp.sum(y * jnp.log(p), axis=-1))


def _metrics(params, x, y, activations):
    p = _forward(params, x, activations)
    hits = jnp.argmax(p, -1) == jnp.argmax(y, -1)
    p = jnp.clip(p / jnp.sum(p, axis=-1, keepdims=True), _EPSILON, 1 - _EPSILON)
    return jnp.mean(-jnp.sum(y * jnp.log(p), axis=-1)), jnp.mean(hits)


@functools.partial(jax.jit, static_argnames=("activations", "batch_size", "learning_rate"))
def train(params, orders, x, y, x_val, y_val, activations, batch_size=32, learning_rate=0.01):
    """`params`: per layer (kernel (M, I, O), bias (M, O)); `orders`: (M, epochs, rows).
    Returns the trained weights and Keras' History curves: the epoch's running mean of
    the batch losses and accuracy, then loss and accuracy on the validation split."""
    n_rows = x.shape[0]
    full = n_rows // batch_size

    def one_model(params, orders):
        def step(params, rows):
            xb, yb = x[rows], y[rows]

            def loss(params):
                p = _forward(params, xb, activations)
                hits = jnp.sum(jnp.argmax(p, -1) == jnp.argmax(yb, -1))
                p = jnp.clip(p / jnp.sum(p, axis=-1, keepdims=True), _EPSILON, 1 - _EPSILON)
                return jnp.mean(-jnp.sum(yb * jnp.log(p), axis=-1)), hits

            (value, hits), grads = jax.value_and_grad(loss, has_aux=True)(params)
            params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
            return params, (value * len(rows), hits)

        def epoch(params, order):
            batches = order[: full * batch_size].reshape(full, batch_size)
            params, (losses, hits) = jax.lax.scan(step, params, batches)
            total, correct = jnp.sum(losses), jnp.sum(hits)
            if full * batch_size < n_rows:
                params, (last_loss, last_hits) = step(params, order[full * batch_size :])
                total, correct = total + last_loss, correct + last_hits
            val_loss, val_accuracy = _metrics(params, x_val, y_val, activations)
            return params, (total / n_rows, correct / n_rows, val_loss, val_accuracy)

        return jax.lax.scan(epoch, params, orders)

    return jax.vmap(one_model)(params, orders)


def train_on_devices(stacked, orders, task, activations) -> list:
    """`train` with the models split over the host's XLA devices, as the engine splits them:
    one `(params, curves)` per device, finished."""
    devices = jax.local_devices()
    share = -(-len(orders) // len(devices))
    outputs = []
    for index, device in enumerate(devices):
        part = slice(index * share, (index + 1) * share)
        put = lambda array: jax.device_put(array, device)  # noqa: E731
        params = [(put(k[part]), put(b[part])) for k, b in stacked]
        outputs.append(train(params, put(orders[part]), put(task.x_train), put(task.y_train),
                             put(task.x_test), put(task.y_test), activations))
    return jax.block_until_ready(outputs)


def stacked_params(weights: list) -> list:
    """The engine's stacked Dense weights `[(kernel (M, I, O), bias (M, O)), …]` as the peer's."""
    return [(jnp.asarray(k), jnp.asarray(b)) for k, b in weights]


def accuracy(params, x, y, activations) -> np.ndarray:
    outputs = jax.vmap(lambda p: _forward(p, x, activations))(params)
    return np.asarray(jnp.mean(jnp.argmax(outputs, -1) == jnp.argmax(y, -1)[None], axis=-1))
