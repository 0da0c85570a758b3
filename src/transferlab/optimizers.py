"""Optimizers as (init, update) pairs with Keras 3's formulas; hyperparameters at run time.

Each optimizer is a static `OptimizerShape` (which state arrays exist: momentum, AMSGrad,
centred RMSprop, weight decay) and pure functions over one parameter array with the model
axis last. The numbers follow Keras' own `update_step`s (epsilon placement, bias
correction, decoupled weight decay applied before the step as `w -= w·wd·lr`), not optax's
defaults. The learning rate, betas, rho, momentum, epsilon and weight decay arrive as
runtime scalars, so changing them never recompiles. The rate each model's layer uses is
`learning_rate × multiplier` (`(models,)`); the step count is per model.

Keras cannot change which layers train without a fresh optimizer (`compile` again after
setting `trainable`), so when a model's set of frozen layers changes the engine restarts
its optimizer: every moment zero, step count zero (see `engine`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass

from transferlab._lazy import (
    jnp,  # the update formulas run in the engine; the declarations are read anywhere
)


@dataclass(frozen=True)
class Hyperparameter:
    """One optimizer hyperparameter as a study file gives it: its type and valid range
    (`above` / `below` exclusive, `at_least` inclusive). The study-file schema and the
    engine's settings are both made from these declarations."""

    name: str
    type: type = float
    above: float | None = None
    at_least: float | None = None
    below: float | None = None


# Keras 3's constructor defaults, per optimizer: each optimizer's definition (the
# parameters it takes, and their defaults)
DEFAULTS: dict[str, dict[str, float | bool]] = {
    "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False,
             "weight_decay": 0.0},
    "adamw": {"learning_rate": 0.001, "weight_decay": 0.004, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
              "amsgrad": False},
    "rmsprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False,
                "weight_decay": 0.0},
}
OPTIMIZERS = tuple(DEFAULTS)
HYPERPARAMETERS: dict[str, Hyperparameter] = {h.name: h for h in (
    Hyperparameter("learning_rate", above=0),
    Hyperparameter("momentum", at_least=0, below=1),
    Hyperparameter("nesterov", bool),
    Hyperparameter("beta_1", at_least=0, below=1),
    Hyperparameter("beta_2", at_least=0, below=1),
    Hyperparameter("epsilon", above=0),
    Hyperparameter("amsgrad", bool),
    Hyperparameter("rho", at_least=0, below=1),
    Hyperparameter("centered", bool),
    Hyperparameter("weight_decay", at_least=0),
    # every optimizer takes one of the clipping rules (Keras: at most one); 0 is none
    Hyperparameter("clipnorm", above=0),
    Hyperparameter("clipvalue", above=0),
    Hyperparameter("global_clipnorm", above=0),
)}
CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")
PARAMETERS = tuple(name for name in HYPERPARAMETERS if name not in CLIPPING)


def _default(name: str) -> float | bool:
    """A setting's value when no optimizer takes it: SGD's default, else the first optimizer's
    that has one (unused by the optimizer chosen), else 0 (no clipping)."""
    for defaults in DEFAULTS.values():
        if name in defaults:
            return defaults[name]
    return 0.0


TrainingSettings = make_dataclass(
    "TrainingSettings",
    [("epochs", int, field(default=100)), ("batch_size", int, field(default=32)),
     ("optimizer", str, field(default="sgd"))]
    + [(h.name, h.type, field(default=_default(h.name))) for h in HYPERPARAMETERS.values()],
    frozen=True,
)
TrainingSettings.__module__ = __name__  # pickled by name when a shard goes to another process
TrainingSettings.__doc__ = """Resolved training settings the engine runs with; defaults are Keras' (`SGD()` and `fit`)
and the tutorial's 100 epochs. `optimizer` is one of `OPTIMIZERS`; each reads the fields
its definition (`DEFAULTS`) lists and ignores the others; clipping 0 is none."""


def settings(epochs: int, batch_size: int, optimizer: str, given: dict) -> TrainingSettings:
    """The settings a study asks for: its `given` hyperparameters over the optimizer's defaults."""
    return TrainingSettings(epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                            **{**DEFAULTS[optimizer], **{k: v for k, v in given.items() if v is not None}})


def runtime_inputs(settings) -> dict:
    """The hyperparameters as float32 scalars for the compiled program. `1 − β` and `1 − ρ`
    are formed here in double precision and then rounded, as Keras' Python floats are."""
    import numpy as np

    values = {
        "learning_rate": settings.learning_rate,
        "momentum": settings.momentum,
        "beta_1": settings.beta_1,
        "beta_2": settings.beta_2,
        "one_minus_beta_1": 1 - settings.beta_1,
        "one_minus_beta_2": 1 - settings.beta_2,
        "epsilon": settings.epsilon,
        "rho": settings.rho,
        "one_minus_rho": 1 - settings.rho,
        "weight_decay": settings.weight_decay,
        "clipnorm": settings.clipnorm,
        "clipvalue": settings.clipvalue,
        "global_clipnorm": settings.global_clipnorm,
        "one_over_global_clipnorm": 1.0 / settings.global_clipnorm if settings.global_clipnorm else 0.0,
    }
    return {name: np.float32(value) for name, value in values.items()}


@dataclass(frozen=True)
class OptimizerShape:
    """The static part of an optimizer: its kind and which state arrays it keeps."""

    name: str = "sgd"
    momentum: bool = False
    nesterov: bool = False
    amsgrad: bool = False
    centered: bool = False
    weight_decay: bool = False
    clip: str | None = None  # "norm" (each gradient's L2 norm), "value" or "global", as Keras clips

    @classmethod
    def of(cls, settings) -> OptimizerShape:
        """From training settings with `optimizer`, `momentum`, `nesterov`, … attributes."""
        name = settings.optimizer
        momentum = bool(settings.momentum) and name in ("sgd", "rmsprop")
        return cls(
            name=name,
            momentum=momentum,
            nesterov=bool(settings.nesterov) and momentum and name == "sgd",
            amsgrad=bool(settings.amsgrad) and name in ("adam", "adamw"),
            centered=bool(settings.centered) and name == "rmsprop",
            weight_decay=bool(settings.weight_decay),
            clip=("norm" if settings.clipnorm else "value" if settings.clipvalue
                  else "global" if settings.global_clipnorm else None),
        )

    @property
    def counts_steps(self) -> bool:
        """Does the update need the step count (Adam's bias correction)?"""
        return self.name in ("adam", "adamw")

    @property
    def slots(self) -> tuple[str, ...]:
        """The state arrays kept per parameter (each shaped like it)."""
        if self.name == "sgd":
            return ("velocity",) if self.momentum else ()
        if self.name in ("adam", "adamw"):
            return ("m", "v") + (("v_hat",) if self.amsgrad else ())
        return ("velocity",) + (("momentum",) if self.momentum else ()) + (("average_grad",) if self.centered else ())


def init(shape: OptimizerShape, param) -> dict:
    """Fresh state for one parameter: zeros, as Keras builds its optimizer variables."""
    return {slot: jnp.zeros_like(param) for slot in shape.slots}


def update(shape: OptimizerShape, param, grad, state: dict, rate, step, hyper: dict):
    """One Keras step for one parameter `(…, models)`: returns the new parameter and state.

    `rate` is each model's learning rate for this layer `(models,)`; `step` is Keras'
    `iterations + 1` since the optimizer (re)started, `(models,)` float32. Gradients come
    clipped (`clip_gradients`)."""
    if shape.weight_decay:  # base_optimizer._apply_weight_decay, before the update step
        param = param - param * hyper["weight_decay"] * rate
    if shape.name == "sgd":
        return _sgd(shape, param, grad, state, rate, hyper)
    if shape.name in ("adam", "adamw"):
        return _adam(shape, param, grad, state, rate, step, hyper)
    return _rmsprop(shape, param, grad, state, rate, hyper)


def clip_gradients(shape: OptimizerShape, grads: list[tuple], trainable: list, hyper: dict,
                   models_last: bool = True) -> list[tuple]:
    """Keras' `_clip_gradients` over a model's gradients (one tuple of arrays `(…, M)` per
    layer; `trainable[layer]` is `(M,)`; with `models_last=False` one model's arrays, no
    model axis): `clipnorm` rescales each array whose L2 norm (per
    model: over every axis but the last) exceeds it, `clipvalue` clips each element, and
    `global_clipnorm` rescales all of them by one norm over the trainable layers (a frozen
    layer is not one of Keras' trainable variables)."""
    if shape.clip is None:
        return grads
    if shape.clip == "value":
        return [tuple(jnp.clip(g, -hyper["clipvalue"], hyper["clipvalue"]) for g in pair) for pair in grads]
    if shape.clip == "norm":
        return [tuple(_clip_by_norm(g, hyper["clipnorm"], models_last) for g in pair) for pair in grads]
    squared = sum(
        jnp.where(flag, _squared_norm(g, models_last), 0.0)
        for pair, flag in zip(grads, trainable, strict=True)
        for g in pair
    )
    norm = jnp.sqrt(squared)
    scale = hyper["global_clipnorm"] * jnp.minimum(1.0 / norm, hyper["one_over_global_clipnorm"])
    scale = scale + (norm - norm)  # NaN for a non-finite norm, as Keras' clip_by_global_norm
    return [tuple(g * scale for g in pair) for pair in grads]


def _squared_norm(grad, models_last: bool = True):
    """Per model: the sum of squares over every axis but the model axis."""
    return jnp.sum(jnp.square(grad), axis=tuple(range(grad.ndim - 1 if models_last else grad.ndim)))


def _clip_by_norm(grad, clipnorm, models_last: bool = True):
    """Keras' `_clip_by_norm`, per model."""
    reduced = tuple(range(grad.ndim - 1 if models_last else grad.ndim))
    l2sum = jnp.expand_dims(_squared_norm(grad, models_last), reduced)
    positive = l2sum > 0
    l2norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, l2sum, jnp.ones_like(l2sum))), l2sum)
    return (grad * clipnorm) / jnp.maximum(l2norm, clipnorm)


def _sgd(shape, param, grad, state, rate, hyper):
    """keras.optimizers.SGD.update_step."""
    if not shape.momentum:
        return param - grad * rate, state
    momentum = hyper["momentum"]
    velocity = state["velocity"] * momentum - grad * rate
    if shape.nesterov:
        return param + (velocity * momentum - grad * rate), {"velocity": velocity}
    return param + velocity, {"velocity": velocity}


def _adam(shape, param, grad, state, rate, step, hyper):
    """keras.optimizers.Adam.update_step (AdamW is Adam with weight decay)."""
    beta_1, beta_2 = hyper["beta_1"], hyper["beta_2"]
    alpha = rate * jnp.sqrt(1 - jnp.power(beta_2, step)) / (1 - jnp.power(beta_1, step))
    m = state["m"] + (grad - state["m"]) * hyper["one_minus_beta_1"]
    v = state["v"] + (jnp.square(grad) - state["v"]) * hyper["one_minus_beta_2"]
    new_state = {"m": m, "v": v}
    if shape.amsgrad:
        v = jnp.maximum(state["v_hat"], v)
        new_state["v_hat"] = v
    return param - (m * alpha) / (jnp.sqrt(v) + hyper["epsilon"]), new_state


def _rmsprop(shape, param, grad, state, rate, hyper):
    """keras.optimizers.RMSprop.update_step."""
    rho = hyper["rho"]
    velocity = rho * state["velocity"] + hyper["one_minus_rho"] * jnp.square(grad)
    new_state = {"velocity": velocity}
    if shape.centered:
        average_grad = rho * state["average_grad"] + hyper["one_minus_rho"] * grad
        new_state["average_grad"] = average_grad
        denominator = velocity - jnp.square(average_grad) + hyper["epsilon"]
    else:
        denominator = velocity + hyper["epsilon"]
    increment = (rate * grad) / jnp.sqrt(denominator)
    if shape.momentum:
        momentum = hyper["momentum"] * state["momentum"] + increment
        new_state["momentum"] = momentum
        return param - momentum, new_state
    return param - increment, new_state
