"""Many MLPs trained at once with NumPy alone: batched matrix products (`np.matmul` over a
leading model axis) and the gradients written by hand. The peer the engine is measured
against in bench/engine_speed.py.

Same semantics as the engine and Keras on Dense stacks with ReLU hidden layers and a
softmax head: categorical cross-entropy with Keras' normalisation and clipping, plain
SGD, each model its own row order per epoch, the last partial batch kept, History's
running training means and end-of-epoch validation."""

from __future__ import annotations

import numpy as np

_EPSILON = np.float32(1e-7)


def _sum_last(a):
    """Sum over a short last axis (the classes): slices added, far faster in NumPy than a
    reduction over a tiny axis."""
    total = a[..., 0].copy()
    for k in range(1, a.shape[-1]):
        total += a[..., k]
    return total[..., None]


def _max_last(a):
    top = a[..., 0].copy()
    for k in range(1, a.shape[-1]):
        np.maximum(top, a[..., k], out=top)
    return top[..., None]


def _forward(params, x):
    """Every layer's output for `x (models, rows, inputs)`; the last is the softmax."""
    outputs = [x]
    for index, (kernel, bias) in enumerate(params):
        z = np.matmul(outputs[-1], kernel) + bias[:, None, :]
        if index < len(params) - 1:
            outputs.append(np.maximum(z, 0.0))
        else:
            z = z - _max_last(z)
            e = np.exp(z)
            outputs.append(e / _sum_last(e))
    return outputs


def _loss_and_hits(p, y):
    """Per-row Keras categorical cross-entropy and correct predictions, `(models, rows)`."""
    q = np.clip(p / _sum_last(p), _EPSILON, 1 - _EPSILON)
    loss = -_sum_last(y * np.log(q))[..., 0]
    return loss, p.argmax(axis=-1) == y.argmax(axis=-1)


def _step(params, xb, yb, learning_rate):
    """One SGD step on a batch `(models, rows, ·)`; returns the batch's summed loss and hits."""
    outputs = _forward(params, xb)
    p = outputs[-1]
    loss, hits = _loss_and_hits(p, yb)
    rows = xb.shape[1]
    # d loss / d p through Keras' normalisation and clip (zero where clipped), then softmax
    total = _sum_last(p)
    q = p / total
    inside = (q > _EPSILON) & (q < 1 - _EPSILON)
    d_q = np.where(inside, -yb / q, 0.0) / rows
    d_p = (d_q - _sum_last(d_q * q)) / total
    upstream = p * (d_p - _sum_last(d_p * p))
    ones = np.ones((xb.shape[0], 1, rows), np.float32)  # sums over the batch as products: faster
    for index in range(len(params) - 1, -1, -1):
        kernel, bias = params[index]
        d_kernel = np.matmul(outputs[index].transpose(0, 2, 1), upstream)
        d_bias = np.matmul(ones, upstream)[:, 0]
        if index:
            upstream = np.matmul(upstream, kernel.transpose(0, 2, 1)) * (outputs[index] > 0)
        kernel -= learning_rate * d_kernel
        bias -= learning_rate * d_bias
    return loss.sum(axis=1), hits.sum(axis=1)


def train(params, orders, x, y, x_val, y_val, batch_size=32, learning_rate=0.01):
    """`params`: per layer (kernel (M, I, O), bias (M, O)), trained in place; `orders`: (M,
    epochs, rows). Returns History's curves `(loss, accuracy, val_loss, val_accuracy)`, each
    `(models, epochs)`."""
    params = [(np.array(k, np.float32), np.array(b, np.float32)) for k, b in params]
    n_models, epochs, n_rows = orders.shape
    learning_rate = np.float32(learning_rate)
    curves = np.zeros((4, n_models, epochs), np.float32)
    x_val_models = np.broadcast_to(x_val, (n_models,) + x_val.shape)
    for epoch in range(epochs):
        loss_total = np.zeros(n_models, np.float32)
        correct = np.zeros(n_models, np.float32)
        for start in range(0, n_rows, batch_size):
            rows = orders[:, epoch, start : start + batch_size]
            batch_loss, batch_hits = _step(params, x[rows], y[rows], learning_rate)
            loss_total += batch_loss
            correct += batch_hits
        val_loss, val_hits = _loss_and_hits(_forward(params, x_val_models)[-1], y_val[None])
        curves[:, :, epoch] = (loss_total / n_rows, correct / n_rows, val_loss.mean(axis=1), val_hits.mean(axis=1))
    return params, curves
