"""The vectorised trainer: many dense-stack models of one architecture in one XLA program.

It computes what `keras.Model.fit` computes for each model (Keras' categorical
cross-entropy, SGD update, batches in the given order with the last partial batch
kept, Keras' running training metrics and end-of-epoch validation metrics) but for
a whole shard at once. It is a pure function of arrays: no files, studies or printing.

Layout, chosen for tiny layers: every per-model array keeps the model axis *last*
(`x: (batch, features, models)`, `kernel: (in, out, models)`), and contractions over
narrow layers are unrolled into fused multiply-adds, so XLA emits a few elementwise
loops vectorised across models instead of thousands of tiny matrix products. Models
are sharded over the host's XLA devices (one per core) with `shard_map`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

# Contractions over at most this many units are unrolled into multiply-adds;
# wider ones use a batched matrix product.
UNROLL_WIDTH = 16
# Epochs with at most this many batches unroll their batch loop (faster, longer compile).
UNROLL_BATCHES = 32
_CCE_EPSILON = 1e-7  # keras.config.epsilon(), used by Keras' categorical cross-entropy


@dataclass(frozen=True)
class SGDConfig:
    """Training settings; defaults are Keras' (`SGD()` and `fit`) and the tutorial's 100 epochs."""

    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class ShardResult:
    """Trained weights `(models, in, out)`/`(models, out)` and per-epoch curves `(models, epochs)`.

    `curves` follow Keras' `History`: `loss`/`accuracy` are running means over the
    epoch's batches, `val_*` are evaluated on the test split after the epoch.
    `final` holds train and test metrics evaluated with the final weights.
    """

    weights: list[tuple[np.ndarray, np.ndarray]]
    curves: dict[str, np.ndarray]
    final: dict[str, np.ndarray]


def shuffle_orders(seeds: list[int] | np.ndarray, epochs: int, n_rows: int) -> np.ndarray:
    """Each model's row order for every epoch, `(models, epochs, rows)` int32, from its own seed."""
    dtype = np.int16 if n_rows < 2**15 else np.int32
    orders = np.empty((len(seeds), epochs, n_rows), dtype)
    rows = np.broadcast_to(np.arange(n_rows, dtype=dtype), (epochs, n_rows))
    for index, seed in enumerate(seeds):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))
        orders[index] = rng.permuted(rows, axis=-1)
    return orders


def train_models(
    activations: tuple[str, ...],
    weights: list[tuple[np.ndarray, np.ndarray]],
    multipliers: np.ndarray,
    orders: np.ndarray,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    config: SGDConfig = SGDConfig(),
    anchors: list[np.ndarray] | None = None,
    penalties: np.ndarray | None = None,
    pad_to: int = 1,
) -> ShardResult:
    """Train `models` dense stacks at once.

    - `activations`: one name per layer (`models.ACTIVATIONS`).
    - `weights`: initial `(kernel (models, in, out), bias (models, out))` per layer.
    - `multipliers`: learning-rate multiplier `(models, epochs, layers)`; 0 freezes a layer
      (its weights stay bit-identical).
    - `orders`: row order of every epoch `(models, epochs, rows)` (see `shuffle_orders`).
    - `anchors`, `penalties`: optional L2 pull of each kernel toward `anchors[l]`
      `(models, in, out)` with strength `penalties (models, layers)`: the loss gains
      `penalty/2 · ‖kernel − anchor‖²` (L2-SP when the anchor is the source kernel).
    - `pad_to`: train at least this many model slots (padding is dropped), so shards of
      different sizes share one compiled program.
    """
    n_models = multipliers.shape[0]
    n_layers = len(weights)
    if multipliers.shape != (n_models, config.epochs, n_layers):
        raise ValueError(
            f"multipliers must be (models, epochs, layers) = ({n_models}, {config.epochs}, "
            f"{n_layers}); got {multipliers.shape}"
        )
    if orders.shape != (n_models, config.epochs, x_train.shape[0]):
        raise ValueError(
            f"orders must be (models, epochs, rows) = ({n_models}, {config.epochs}, "
            f"{x_train.shape[0]}); got {orders.shape}"
        )
    devices = jax.local_devices()
    n_devices = min(len(devices), max(n_models, pad_to))
    padded = -(-max(n_models, pad_to) // n_devices) * n_devices

    def models_last(array: np.ndarray, axis_order: tuple[int, ...]) -> np.ndarray:
        array = np.asarray(array)
        if padded != n_models:  # fill with copies of model 0; their results are dropped
            filler = np.repeat(array[:1], padded - n_models, axis=0)
            array = np.concatenate([array, filler], axis=0)
        return np.ascontiguousarray(np.transpose(array, axis_order))

    params = [
        (models_last(np.asarray(k, np.float32), (1, 2, 0)), models_last(np.asarray(b, np.float32), (1, 0)))
        for k, b in weights
    ]
    inputs = dict(
        params=params,
        multipliers=models_last(np.asarray(multipliers, np.float32), (1, 2, 0)),  # (E, L, M)
        orders=models_last(orders, (1, 2, 0)),  # (E, N, M)
        x_train=np.asarray(x_train, np.float32),
        y_train=np.asarray(y_train, np.float32),
        x_test=np.asarray(x_test, np.float32),
        y_test=np.asarray(y_test, np.float32),
    )
    if penalties is not None:
        inputs["anchors"] = [models_last(np.asarray(a, np.float32), (1, 2, 0)) for a in anchors]
        inputs["penalties"] = models_last(np.asarray(penalties, np.float32), (1, 0))  # (L, M)

    program = _compiled_program(tuple(activations), config, n_devices, penalties is not None)
    trained, curves, final = jax.device_get(program(inputs))
    weights_out = [
        (np.transpose(k, (2, 0, 1))[:n_models].copy(), np.transpose(b, (1, 0))[:n_models].copy())
        for k, b in trained
    ]
    return ShardResult(
        weights=weights_out,
        curves={name: np.transpose(v)[:n_models].copy() for name, v in curves.items()},
        final={name: v[:n_models].copy() for name, v in final.items()},
    )


# --- the compiled program ---------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _compiled_program(activations: tuple[str, ...], config: SGDConfig, n_devices: int, penalised: bool):
    body = functools.partial(_train_shard, activations=activations, config=config, penalised=penalised)
    if n_devices == 1:
        return jax.jit(body)
    mesh = Mesh(np.array(jax.local_devices()[:n_devices]), ("models",))
    per_model = PartitionSpec("models")

    def last_axis(ndim: int) -> PartitionSpec:
        return PartitionSpec(*([None] * (ndim - 1)), "models")

    def specs_for(inputs: dict) -> dict:
        return {
            "params": [(last_axis(3), last_axis(2)) for _ in inputs["params"]],
            "multipliers": last_axis(3),
            "orders": last_axis(3),
            "x_train": PartitionSpec(),
            "y_train": PartitionSpec(),
            "x_test": PartitionSpec(),
            "y_test": PartitionSpec(),
            **({"anchors": [last_axis(3) for _ in inputs["anchors"]]} if penalised else {}),
            **({"penalties": last_axis(2)} if penalised else {}),
        }

    n_layers = len(activations)
    out_specs = (
        [(last_axis(3), last_axis(2)) for _ in range(n_layers)],
        {name: last_axis(2) for name in _CURVE_NAMES},
        {name: per_model for name in _FINAL_NAMES},
    )

    def run(inputs: dict):
        sharded = jax.shard_map(
            body, mesh=mesh, in_specs=(specs_for(inputs),), out_specs=out_specs, check_vma=False
        )
        return sharded(inputs)

    return jax.jit(run)


_CURVE_NAMES = ("loss", "accuracy", "val_loss", "val_accuracy")
_FINAL_NAMES = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def _train_shard(inputs: dict, activations: tuple[str, ...], config: SGDConfig, penalised: bool):
    """Runs inside jit (and shard_map): all per-model arrays have the model axis last."""
    x_train, y_train = inputs["x_train"], inputs["y_train"]
    x_test, y_test = inputs["x_test"], inputs["y_test"]
    n_rows = x_train.shape[0]
    batch = config.batch_size
    bounds = [(start, min(start + batch, n_rows)) for start in range(0, n_rows, batch)]
    anchors = inputs.get("anchors")
    penalties = inputs.get("penalties")

    def objective(params, xb, yb):
        probabilities = _forward(params, xb, activations)
        per_sample = _categorical_crossentropy(probabilities, yb)  # (B, M)
        batch_loss = jnp.mean(per_sample, axis=0)  # Keras "sum_over_batch_size"
        if penalised:
            for layer, ((kernel, _), anchor) in enumerate(zip(params, anchors)):
                pull = jnp.sum(jnp.square(kernel - anchor), axis=(0, 1))
                batch_loss = batch_loss + 0.5 * penalties[layer] * pull
        return jnp.sum(batch_loss), (batch_loss, probabilities)

    gradient = jax.grad(objective, has_aux=True)

    def sgd_step(state, xb, yb, multipliers):
        params, velocity = state
        grads, (batch_loss, probabilities) = gradient(params, xb, yb)
        new_params, new_velocity = [], []
        for layer, (param_pair, grad_pair, velocity_pair) in enumerate(zip(params, grads, velocity)):
            scale = multipliers[layer]  # (M,)
            rate = jnp.float32(config.learning_rate) * scale
            updated, moved = [], []
            for value, grad, vel in zip(param_pair, grad_pair, velocity_pair):
                frozen = scale == 0
                step, vel_next = _sgd_update(value, grad, vel, rate, config)
                updated.append(jnp.where(frozen, value, step))
                moved.append(None if vel is None else jnp.where(frozen, vel, vel_next))
            new_params.append(tuple(updated))
            new_velocity.append(tuple(moved))
        correct = _correct(probabilities, yb)
        return (new_params, new_velocity), batch_loss, correct

    def epoch(carry, per_epoch):
        state, = carry
        order, multipliers = per_epoch["order"], per_epoch["multipliers"]  # (N, M), (L, M)
        xs = jnp.transpose(x_train[order], (0, 2, 1))  # (N, I, M): each model its own order
        ys = jnp.transpose(y_train[order], (0, 2, 1))
        loss_total = jnp.zeros(order.shape[1:], jnp.float32)
        correct_total = jnp.zeros(order.shape[1:], jnp.float32)

        def run_batch(state, start, stop, loss_total, correct_total):
            state, batch_loss, correct = sgd_step(state, xs[start:stop], ys[start:stop], multipliers)
            # Keras' loss tracker: mean of batch losses weighted by batch size
            return state, loss_total + batch_loss * (stop - start), correct_total + correct

        if len(bounds) <= UNROLL_BATCHES:
            for start, stop in bounds:
                state, loss_total, correct_total = run_batch(state, start, stop, loss_total, correct_total)
        else:
            full = n_rows // batch

            def scan_batch(inner, index):
                state, loss_total, correct_total = inner
                xb = jax.lax.dynamic_slice_in_dim(xs, index * batch, batch)
                yb = jax.lax.dynamic_slice_in_dim(ys, index * batch, batch)
                state, batch_loss, correct = sgd_step(state, xb, yb, multipliers)
                return (state, loss_total + batch_loss * batch, correct_total + correct), None

            (state, loss_total, correct_total), _ = jax.lax.scan(
                scan_batch, (state, loss_total, correct_total), jnp.arange(full)
            )
            if full * batch < n_rows:
                state, loss_total, correct_total = run_batch(
                    state, full * batch, n_rows, loss_total, correct_total
                )
        val_loss, val_accuracy = _evaluate(state[0], x_test, y_test, activations)
        curves = {
            "loss": loss_total / n_rows,
            "accuracy": correct_total / n_rows,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
        }
        return (state,), curves

    params = [tuple(pair) for pair in inputs["params"]]
    if config.momentum:
        velocity = [(jnp.zeros_like(k), jnp.zeros_like(b)) for k, b in params]
    else:
        velocity = [(None, None) for _ in params]
    per_epoch = {"order": inputs["orders"].astype(jnp.int32), "multipliers": inputs["multipliers"]}
    (state,), curves = jax.lax.scan(epoch, ((params, velocity),), per_epoch)
    trained = state[0]
    train_loss, train_accuracy = _evaluate(trained, x_train, y_train, activations)
    test_loss, test_accuracy = _evaluate(trained, x_test, y_test, activations)
    final = {
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
    }
    return [tuple(pair) for pair in trained], curves, final


def _sgd_update(value, grad, velocity, rate, config: SGDConfig):
    """keras.optimizers.SGD.update_step, per model (rate is `(models,)`, broadcast last)."""
    if velocity is None:
        return value - grad * rate, None
    momentum = jnp.float32(config.momentum)
    velocity = velocity * momentum - grad * rate
    if config.nesterov:
        return value + (velocity * momentum - grad * rate), velocity
    return value + velocity, velocity


def _evaluate(params, x, y, activations):
    """Loss and accuracy of every model on a whole split `x (N, I)` shared by all models."""
    n_models = params[0][1].shape[-1]
    inputs = jnp.broadcast_to(x[:, :, None], x.shape + (n_models,))
    probabilities = _forward(params, inputs, activations)
    targets = y[:, :, None]
    loss = jnp.mean(_categorical_crossentropy(probabilities, targets), axis=0)
    accuracy = _correct(probabilities, targets) / x.shape[0]
    return loss, accuracy


def _correct(probabilities, targets):
    """Keras' categorical_accuracy summed over the batch: argmax(prediction) == argmax(target)."""
    hits = jnp.argmax(probabilities, axis=1) == jnp.argmax(targets, axis=1)
    return jnp.sum(hits.astype(jnp.float32), axis=0)


def _categorical_crossentropy(probabilities, targets):
    """keras.losses.categorical_crossentropy(from_logits=False) along the feature axis 1."""
    probabilities = probabilities / jnp.sum(probabilities, axis=1, keepdims=True)
    probabilities = jnp.clip(probabilities, _CCE_EPSILON, 1.0 - _CCE_EPSILON)
    return -jnp.sum(targets * jnp.log(probabilities), axis=1)


def _forward(params, x, activations):
    hidden = x
    for (kernel, bias), activation in zip(params, activations):
        hidden = _ACTIVATION_FUNCTIONS[activation](_dense(hidden, kernel, bias))
    return hidden


def _softmax(z):
    return jax.nn.softmax(z, axis=1)


_ACTIVATION_FUNCTIONS = {
    "linear": lambda z: z,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": _softmax,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}


@jax.custom_vjp
def _dense(x, kernel, bias):
    """`x @ kernel + bias` per model: x `(B, I, M)`, kernel `(I, O, M)`, bias `(O, M)`."""
    return _contract_inputs(x, kernel) + bias[None]


def _dense_forward(x, kernel, bias):
    return _dense(x, kernel, bias), (x, kernel)


def _dense_backward(residuals, upstream):
    x, kernel = residuals
    d_kernel = jnp.einsum("bim,bom->iom", x, upstream) if _wide(x.shape[1], kernel.shape[1]) else (
        jnp.sum(x[:, :, None, :] * upstream[:, None, :, :], axis=0)
    )
    d_bias = jnp.sum(upstream, axis=0)
    return _contract_outputs(upstream, kernel), d_kernel, d_bias


_dense.defvjp(_dense_forward, _dense_backward)


def _wide(n_in: int, n_out: int) -> bool:
    return n_in > UNROLL_WIDTH and n_out > UNROLL_WIDTH


def _contract_inputs(x, kernel):
    """sum_i x[b, i, m] · kernel[i, o, m] → (B, O, M)."""
    n_in = kernel.shape[0]
    if n_in > UNROLL_WIDTH:
        return jnp.einsum("bim,iom->bom", x, kernel)
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
