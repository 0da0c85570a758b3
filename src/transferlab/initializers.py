"""Keras' weight initialisers, drawn with NumPy from a run's own seed (same distributions)."""

from __future__ import annotations

import math

import numpy as np

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


def initializer_name(initializer) -> str:
    """The snake-case name of a Keras initializer object (unknown ones read as glorot_uniform)."""
    name = type(initializer).__name__
    snake = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return snake if snake in INITIALIZERS else "glorot_uniform"


_VARIANCE_SCALING = {
    # name: (scale, mode, distribution), as keras.initializers defines them
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}


def sample(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
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
    fan_in, fan_out = fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, n)
    if distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    # Keras: truncated normal at two standard deviations, stddev corrected for the truncation
    stddev = math.sqrt(variance) / 0.87962566103423978
    return (_truncated_standard_normal(shape, rng) * stddev).astype(np.float32)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras' `compute_fans`: a convolution kernel `(*window, in, out)` counts its window
    (the receptive field) in both fans."""
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _truncated_standard_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values
