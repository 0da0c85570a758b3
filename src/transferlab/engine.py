"""The vectorised trainer: many models of one architecture in one XLA program.

A model is a chain of Dense and BatchNormalization layers. The engine computes what
`keras.Model.fit` computes for each model (Keras' categorical cross-entropy or mean
squared error, SGD update, batches in the given order with the last partial batch
kept, BatchNormalization in training mode unless frozen, Keras' running training
metrics and end-of-epoch validation metrics) but for a whole shard at once. It is a
pure function of arrays: no files, studies or printing.

Layout, chosen for tiny layers: every per-model array keeps the model axis *last*
(`x: (batch, features, models)`, `kernel: (in, out, models)`), and contractions over
narrow layers are unrolled into fused multiply-adds, so XLA emits a few elementwise
loops vectorised across models instead of thousands of tiny matrix products. Models
train in fixed blocks of `MODELS_PER_BLOCK`, one compiled single-device program for
all blocks, dealt over the host's XLA devices (one per core) and run concurrently.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from transferlab import _backend

_backend.configure()  # Keras on JAX, one XLA device per core: before jax is imported

import jax
import jax.numpy as jnp
import numpy as np

from transferlab import optimizers

# Contractions over at most this many units are unrolled into multiply-adds;
# wider ones use a batched matrix product.
UNROLL_WIDTH = 16
# Epochs with at most this many batches unroll their batch loop (faster, longer compile).
UNROLL_BATCHES = 32
# Models per compiled block. Every engine call pads its models to whole blocks and runs
# the same one-device program per block, so shard size and device count never change a
# number. 64 measured best for small studies (both cores busy from 65 models) and within
# 20% of the best block size for large ones (bench/RESULTS.md).
MODELS_PER_BLOCK = 64
_CCE_EPSILON = 1e-7  # keras.config.epsilon(), used by Keras' categorical cross-entropy


@dataclass(frozen=True)
class TrainingSettings:
    """Training settings; defaults are Keras' (`SGD()` and `fit`) and the tutorial's 100 epochs.

    `optimizer` is "sgd", "adam", "adamw" or "rmsprop"; each reads the fields Keras'
    optimizer of that name takes (`optimizers.DEFAULTS`) and ignores the others."""

    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    optimizer: str = "sgd"
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    amsgrad: bool = False
    rho: float = 0.9
    centered: bool = False
    weight_decay: float = 0.0
    clipnorm: float = 0.0  # 0: no clipping (Keras' None)
    clipvalue: float = 0.0
    global_clipnorm: float = 0.0


SGDConfig = TrainingSettings  # the name it had while SGD was the only optimizer


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

    @property
    def diverged_epoch(self) -> np.ndarray:
        """Per model, the first epoch (1-based) whose training loss is NaN or infinite, or
        whose final metrics are; 0 for a model that trained to finite numbers."""
        return diverged_epoch(self.curves["loss"], self.final)


def diverged_epoch(loss_curves: np.ndarray, final: dict[str, np.ndarray]) -> np.ndarray:
    """`(models,)`: the first epoch with a non-finite loss (1-based), the last epoch if only the
    final metrics are non-finite, else 0."""
    bad = ~np.isfinite(loss_curves)
    first = np.where(bad.any(axis=1), bad.argmax(axis=1) + 1, 0)
    final_bad = np.zeros(len(loss_curves), bool)
    for values in final.values():
        final_bad |= ~np.isfinite(values)
    return np.where((first == 0) & final_bad, loss_curves.shape[1], first)


def shuffle_orders(seeds: list[int] | np.ndarray, epochs: int, n_rows: int) -> np.ndarray:
    """Each model's row order for every epoch, `(models, epochs, rows)` int32, from its own seed."""
    dtype = np.int16 if n_rows < 2**15 else np.int32
    orders = np.empty((len(seeds), epochs, n_rows), dtype)
    rows = np.broadcast_to(np.arange(n_rows, dtype=dtype), (epochs, n_rows))
    for index, seed in enumerate(seeds):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))
        orders[index] = rng.permuted(rows, axis=-1)
    return orders


LOSSES = ("categorical_crossentropy", "mean_squared_error")
BN_FROZEN_MODES = ("inference", "train")
_METRICS = {"categorical_crossentropy": ("accuracy",), "mean_squared_error": ("mae", "r2")}


def metric_names(loss: str) -> tuple[str, ...]:
    """Metrics tracked beside the loss: accuracy for classification, MAE and R² for regression."""
    return _METRICS[loss]


def curve_names(loss: str) -> tuple[str, ...]:
    """Per-epoch curves, named as Keras' `History` names them."""
    names = ("loss",) + metric_names(loss)
    return names + tuple(f"val_{name}" for name in names)


def final_names(loss: str) -> tuple[str, ...]:
    names = ("loss",) + metric_names(loss)
    return tuple(f"{split}_{name}" for split in ("train", "test") for name in names)


def layer_plan(layers) -> tuple[tuple, ...]:
    """The engine's static view of a layer list: `("dense", activation)` or
    `("batchnorm", momentum, epsilon)`. Accepts activation names (a chain of Dense layers)
    or `models.DenseSpec` / `models.BatchNormSpec` values."""
    plan = []
    for layer in layers:
        if isinstance(layer, str):
            plan.append(("dense", layer))
        elif isinstance(layer, tuple):
            plan.append(layer)
        elif hasattr(layer, "activation"):
            plan.append(("dense", layer.activation))
        else:
            plan.append(("batchnorm", float(layer.momentum), float(layer.epsilon)))
    return tuple(plan)


def train_models(
    layers,
    weights: list[tuple[np.ndarray, ...]],
    multipliers: np.ndarray,
    orders: np.ndarray,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    config: TrainingSettings = TrainingSettings(),
    anchors: list[np.ndarray | None] | None = None,
    penalties: np.ndarray | None = None,
    loss: str = "categorical_crossentropy",
    bn_frozen: str = "inference",
) -> ShardResult:
    """Train `models` layer stacks of one architecture at once.

    - `layers`: one entry per layer (see `layer_plan`).
    - `weights`: initial arrays per layer, stacked model-first, in Keras' `get_weights()`
      order: Dense `(kernel (models, in, out), bias (models, out))`, BatchNormalization
      `(gamma, beta, moving_mean, moving_variance)`, each `(models, width)`.
    - `multipliers`: learning-rate multiplier `(models, epochs, layers)`; 0 freezes a layer
      (its weights stay bit-identical).
    - `orders`: row order of every epoch `(models, epochs, rows)` (see `shuffle_orders`).
    - `anchors`, `penalties`: optional L2 pull of each Dense kernel toward `anchors[l]`
      `(models, in, out)` with strength `penalties (models, layers)`: the loss gains
      `penalty/2 · ‖kernel − anchor‖²` (L2-SP when the anchor is the source kernel).
    - `loss`: `"categorical_crossentropy"` (metric accuracy) or `"mean_squared_error"`
      (metrics MAE and R², as Keras' `MeanAbsoluteError` and `R2Score` compute them).
    - `bn_frozen`: how a frozen BatchNormalization layer runs: `"inference"` (Keras'
      convention: moving statistics, not updated) or `"train"` (batch statistics, moving
      statistics keep updating; only gamma and beta stay fixed).
    """
    plan = layer_plan(layers)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
    if bn_frozen not in BN_FROZEN_MODES:
        raise ValueError(f"bn_frozen must be one of {BN_FROZEN_MODES}; got {bn_frozen!r}")
    n_models = multipliers.shape[0]
    n_layers = len(weights)
    if len(plan) != n_layers:
        raise ValueError(f"{len(plan)} layers described but weights for {n_layers} given")
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
    if n_models == 0:
        raise ValueError("train_models needs at least one model")
    n_blocks = -(-n_models // MODELS_PER_BLOCK)
    weights = [[np.asarray(a, np.float32) for a in arrays] for arrays in weights]
    multipliers = np.asarray(multipliers, np.float32)
    if penalties is not None:
        anchors = [None if a is None else np.asarray(a, np.float32) for a in anchors]
        penalties = np.asarray(penalties, np.float32)

    def models_last(array: np.ndarray, block: int) -> np.ndarray:
        """Rows `block·B … (block+1)·B` with the model axis moved last; past the real models,
        copies of model 0 fill the block (their results are dropped)."""
        array = array[block * MODELS_PER_BLOCK : (block + 1) * MODELS_PER_BLOCK]
        if len(array) < MODELS_PER_BLOCK:
            filler = np.repeat(array[:1], MODELS_PER_BLOCK - len(array), axis=0)
            array = np.concatenate([array, filler], axis=0)
        return np.ascontiguousarray(np.moveaxis(array, 0, -1))

    shared = dict(
        # hyperparameters are runtime inputs: a study that changes the learning rate, the
        # momentum, the betas or the weight decay reuses the compiled program
        hyper=optimizers.runtime_inputs(config),
        x_train=np.asarray(x_train, np.float32),
        y_train=np.asarray(y_train, np.float32),
        x_test=np.asarray(x_test, np.float32),
        y_test=np.asarray(y_test, np.float32),
        # a runtime input, not a compile-time constant: both modes run one program, so runs
        # with nothing frozen are bit-identical under either
        bn_inference=np.asarray(bn_frozen == "inference"),
    )
    penalised = penalties is not None

    def block_inputs(block: int) -> dict:
        params, state = [], []
        for kind, arrays in zip(plan, weights):
            arrays = [models_last(a, block) for a in arrays]
            params.append(tuple(arrays[:2]))
            state.append(tuple(arrays[2:]) if kind[0] == "batchnorm" else ())
        inputs = dict(
            shared,
            params=params,
            state=state,
            multipliers=models_last(multipliers, block),  # (E, L, B)
            orders=models_last(orders, block),  # (E, N, B)
        )
        if penalised:
            inputs["anchors"] = {
                str(layer): models_last(anchors[layer], block)
                for layer, kind in enumerate(plan)
                if kind[0] == "dense"
            }
            inputs["penalties"] = models_last(penalties, block)  # (L, B)
        return inputs

    misses = _compiled_program.cache_info().misses
    program = _compiled_program(plan, ProgramShape.of(config), penalised, loss)
    devices = jax.local_devices()
    # Every block runs the same single-device program, blocks dealt round-robin over the
    # devices and dispatched asynchronously: a model's numbers never depend on the shard
    # size, the number of devices or its position (checked by the tests).
    in_flight, outputs = [], []
    for block in range(n_blocks):
        device = devices[block % len(devices)]
        in_flight.append(program(jax.device_put(block_inputs(block), device)))
        if len(in_flight) >= 2 * len(devices):
            outputs.append(jax.device_get(in_flight.pop(0)))
    outputs += [jax.device_get(result) for result in in_flight]
    if _compiled_program.cache_info().misses != misses:
        _trim_heap()  # compiling left hundreds of MB of freed memory in the heap

    # one tree, models first: the blocks' outputs concatenated, the padding dropped
    trained, trained_state, curves, final = jax.tree.map(
        lambda *blocks: np.concatenate([np.moveaxis(b, -1, 0) for b in blocks])[:n_models], *outputs
    )
    return ShardResult(
        weights=[tuple(pair) + tuple(moving) for pair, moving in zip(trained, trained_state)],
        curves=curves,
        final=final,
    )


def release_programs() -> None:
    """Drop the compiled programs and hand freed memory back to the OS (call between a
    study's training and its report)."""
    import gc

    _compiled_program.cache_clear()  # transferlab's own programs only: other JAX users keep theirs
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc's malloc_trim; elsewhere a no-op)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# --- the compiled program ---------------------------------------------------------------


@dataclass(frozen=True)
class ProgramShape:
    """What of the training settings shapes the compiled program: the batch size and the
    optimizer's kind and state arrays (its hyperparameters are runtime inputs; epochs come
    with the arrays' shapes)."""

    batch_size: int
    optimizer: optimizers.OptimizerShape

    @classmethod
    def of(cls, config: TrainingSettings) -> ProgramShape:
        return cls(config.batch_size, optimizers.OptimizerShape.of(config))


@functools.lru_cache(maxsize=32)
def _compiled_program(plan: tuple[tuple, ...], shape: ProgramShape, penalised: bool, loss: str):
    """One block of `MODELS_PER_BLOCK` models on one device; every block and device runs it."""
    return jax.jit(functools.partial(_train_shard, plan=plan, shape=shape, penalised=penalised, loss=loss))


def compiled_programs() -> int:
    """How many engine programs have been built in this process (for tests and benchmarks)."""
    return _compiled_program.cache_info().misses


def _train_shard(inputs: dict, plan, shape: ProgramShape, penalised: bool, loss: str):
    """Runs inside jit on one block: all per-model arrays have the model axis last."""
    x_train, y_train = inputs["x_train"], inputs["y_train"]
    x_test, y_test = inputs["x_test"], inputs["y_test"]
    n_rows = x_train.shape[0]
    batch = shape.batch_size
    bounds = [(start, min(start + batch, n_rows)) for start in range(0, n_rows, batch)]
    anchors = inputs.get("anchors")
    penalties = inputs.get("penalties")
    loss_function = _LOSS_FUNCTIONS[loss]

    def objective(params, state, xb, yb, use_moving):
        outputs, new_state = _forward(params, state, xb, plan, use_moving)
        batch_loss = jnp.mean(loss_function(outputs, yb), axis=0)  # Keras "sum_over_batch_size"
        if penalised:
            for layer, anchor in anchors.items():
                kernel = params[int(layer)][0]
                pull = jnp.sum(jnp.square(kernel - anchor), axis=(0, 1))
                batch_loss = batch_loss + 0.5 * penalties[int(layer)] * pull
        return jnp.sum(batch_loss), (batch_loss, outputs, new_state)

    gradient = jax.grad(objective, has_aux=True)

    hyper = inputs["hyper"]
    optimizer = shape.optimizer

    def optimizer_step(carry, xb, yb, multipliers):
        params, state, slots, step = carry
        frozen = [multipliers[layer] == 0 for layer in range(len(plan))]  # (M,) each
        use_moving = [f & inputs["bn_inference"] for f in frozen]
        grads, (batch_loss, outputs, new_state) = gradient(params, state, xb, yb, use_moving)
        if optimizer.counts_steps:
            step = step + 1.0  # Keras' `iterations + 1` of this step
        grads = optimizers.clip_gradients(optimizer, grads, [~f for f in frozen], hyper)
        new_params, new_slots = [], []
        for layer, (param_pair, grad_pair, slot_pair) in enumerate(zip(params, grads, slots)):
            rate = hyper["learning_rate"] * multipliers[layer]  # (M,)
            updated, kept = [], []
            for value, grad, value_slots in zip(param_pair, grad_pair, slot_pair):
                stepped, stepped_slots = optimizers.update(optimizer, value, grad, value_slots, rate, step, hyper)
                # a frozen layer: weights bit-identical, optimizer state not advanced
                updated.append(jnp.where(frozen[layer], value, stepped))
                kept.append({k: jnp.where(frozen[layer], value_slots[k], v) for k, v in stepped_slots.items()})
            new_params.append(tuple(updated))
            new_slots.append(tuple(kept))
        sums = _metric_sums(outputs, yb, loss)
        return (new_params, new_state, new_slots, step), batch_loss, sums

    def epoch(outer, per_epoch):
        carry, was_frozen = outer
        order, multipliers = per_epoch["order"], per_epoch["multipliers"]  # (N, M), (L, M)
        is_frozen = multipliers == 0
        if optimizer.slots or optimizer.counts_steps:
            # Keras needs a fresh optimizer (compile again) to change which layers train:
            # where a model's frozen set changes, its optimizer restarts from zero
            restart = jnp.any(is_frozen != was_frozen, axis=0)  # (M,)
            params_, state_, slots_, step_ = carry
            slots_ = jax.tree.map(lambda a: jnp.where(restart, jnp.zeros_like(a), a), slots_)
            carry = (params_, state_, slots_, jnp.where(restart, 0.0, step_))
        xs = jnp.transpose(x_train[order], (0, 2, 1))  # (N, I, M): each model its own order
        ys = jnp.transpose(y_train[order], (0, 2, 1))
        loss_total = jnp.zeros(order.shape[1:], jnp.float32)
        sums = _zero_sums(loss, carry[0][-1][1].shape)  # the output bias is (outputs, models)

        def run_batch(carry, xb, yb, loss_total, sums):
            carry, batch_loss, batch_sums = optimizer_step(carry, xb, yb, multipliers)
            # Keras' loss tracker: mean of batch losses weighted by batch size
            totals = jax.tree.map(jnp.add, sums, batch_sums)
            return carry, loss_total + batch_loss * xb.shape[0], totals

        if len(bounds) <= UNROLL_BATCHES:
            for start, stop in bounds:
                carry, loss_total, sums = run_batch(carry, xs[start:stop], ys[start:stop], loss_total, sums)
        else:
            full = n_rows // batch

            def scan_batch(inner, index):
                xb = jax.lax.dynamic_slice_in_dim(xs, index * batch, batch)
                yb = jax.lax.dynamic_slice_in_dim(ys, index * batch, batch)
                return run_batch(*inner[:1], xb, yb, *inner[1:]), None

            (carry, loss_total, sums), _ = jax.lax.scan(scan_batch, (carry, loss_total, sums), jnp.arange(full))
            if full * batch < n_rows:
                carry, loss_total, sums = run_batch(carry, xs[full * batch :], ys[full * batch :], loss_total, sums)
        validation = _evaluate(carry[0], carry[1], x_test, y_test, plan, loss)
        curves = {"loss": loss_total / n_rows, **_metrics_from_sums(sums, n_rows, loss)}
        curves.update({f"val_{name}": value for name, value in validation.items()})
        return (carry, is_frozen), curves

    params = [tuple(pair) for pair in inputs["params"]]
    state = [tuple(moving) for moving in inputs["state"]]
    slots = [tuple(optimizers.init(optimizer, p) for p in pair) for pair in params]
    step = jnp.zeros(params[-1][1].shape[-1:], jnp.float32)  # (M,)
    per_epoch = {"order": inputs["orders"].astype(jnp.int32), "multipliers": inputs["multipliers"]}
    first_frozen = inputs["multipliers"][0] == 0
    ((trained, trained_state, _, _), _), curves = jax.lax.scan(
        epoch, ((params, state, slots, step), first_frozen), per_epoch
    )
    final = {}
    for split, (x, y) in (("train", (x_train, y_train)), ("test", (x_test, y_test))):
        for name, value in _evaluate(trained, trained_state, x, y, plan, loss).items():
            final[f"{split}_{name}"] = value
    return [tuple(pair) for pair in trained], [tuple(s) for s in trained_state], curves, final


def _zero_sums(loss: str, output_shape: tuple[int, int]) -> dict:
    """The metric sums before an epoch's first batch (the keys `_metric_sums` returns)."""
    per_model = jnp.zeros(output_shape[1:], jnp.float32)
    if loss == "categorical_crossentropy":
        return {"correct": per_model}
    per_output = jnp.zeros(output_shape, jnp.float32)
    return {"absolute": per_model, "sum_y": per_output, "sum_y2": per_output, "squared_error": per_output}


def _evaluate(params, state, x, y, plan, loss: str) -> dict:
    """Loss and metrics of every model on a whole split `x (N, I)` shared by all models, with
    BatchNormalization in inference mode (as `model.evaluate`)."""
    n_models = params[-1][1].shape[-1]
    inputs = jnp.broadcast_to(x[:, :, None], x.shape + (n_models,))
    outputs, _ = _forward(params, state, inputs, plan, use_moving=None)
    targets = y[:, :, None]
    metrics = {"loss": jnp.mean(_LOSS_FUNCTIONS[loss](outputs, targets), axis=0)}
    metrics.update(_metrics_from_sums(_metric_sums(outputs, targets, loss), x.shape[0], loss))
    return metrics


def _metric_sums(outputs, targets, loss: str) -> dict:
    """Additive per-model sums over a batch, from which epoch metrics follow (as Keras'
    stateful metrics accumulate them)."""
    targets = jnp.broadcast_to(targets, outputs.shape)
    if loss == "categorical_crossentropy":
        hits = jnp.argmax(outputs, axis=1) == jnp.argmax(targets, axis=1)
        return {"correct": jnp.sum(hits.astype(jnp.float32), axis=0)}
    residual = targets - outputs
    return {
        "absolute": jnp.sum(jnp.mean(jnp.abs(residual), axis=1), axis=0),
        "sum_y": jnp.sum(targets, axis=0),
        "sum_y2": jnp.sum(jnp.square(targets), axis=0),
        "squared_error": jnp.sum(jnp.square(residual), axis=0),
    }


def _metrics_from_sums(sums: dict, n_rows: int, loss: str) -> dict:
    if loss == "categorical_crossentropy":
        return {"accuracy": sums["correct"] / n_rows}
    mean_y = sums["sum_y"] / n_rows
    total = sums["sum_y2"] - sums["sum_y"] * mean_y
    scores = 1.0 - sums["squared_error"] / total
    scores = jnp.where(jnp.isinf(scores), 0.0, scores)  # keras.metrics.R2Score's convention
    return {"mae": sums["absolute"] / n_rows, "r2": jnp.mean(scores, axis=0)}


def _categorical_crossentropy(probabilities, targets):
    """keras.losses.categorical_crossentropy(from_logits=False) along the feature axis 1."""
    probabilities = probabilities / jnp.sum(probabilities, axis=1, keepdims=True)
    probabilities = jnp.clip(probabilities, _CCE_EPSILON, 1.0 - _CCE_EPSILON)
    return -jnp.sum(targets * jnp.log(probabilities), axis=1)


def _mean_squared_error(outputs, targets):
    """keras.losses.mean_squared_error: the mean over the output axis 1."""
    return jnp.mean(jnp.square(targets - outputs), axis=1)


_LOSS_FUNCTIONS = {
    "categorical_crossentropy": _categorical_crossentropy,
    "mean_squared_error": _mean_squared_error,
}


def _forward(params, state, x, plan, use_moving):
    """The model on `x (B, I, M)`. `use_moving` is `None` for inference, else one `(M,)` bool
    per layer: a BatchNormalization layer uses batch statistics (and updates its moving
    statistics) for the models where it is False. Returns the output and the new state."""
    hidden = x
    new_state = []
    for layer, (kind, trainable, moving) in enumerate(zip(plan, params, state)):
        if kind[0] == "dense":
            hidden = _ACTIVATION_FUNCTIONS[kind[1]](_dense(hidden, *trainable))
            new_state.append(moving)
            continue
        _, momentum, epsilon = kind
        gamma, beta = trainable
        moving_mean, moving_variance = moving
        if use_moving is None:
            hidden = _batch_normalization(hidden, moving_mean, moving_variance, gamma, beta, epsilon)
            new_state.append(moving)
            continue
        mean = jnp.mean(hidden, axis=0)
        variance = jnp.var(hidden, axis=0)
        inference = use_moving[layer]
        hidden = jnp.where(
            inference,
            _batch_normalization(hidden, moving_mean, moving_variance, gamma, beta, epsilon),
            _batch_normalization(hidden, mean, variance, gamma, beta, epsilon),
        )
        keep = 1.0 - momentum
        new_state.append(
            (
                jnp.where(inference, moving_mean, moving_mean * momentum + jax.lax.stop_gradient(mean) * keep),
                jnp.where(
                    inference, moving_variance, moving_variance * momentum + jax.lax.stop_gradient(variance) * keep
                ),
            )
        )
    return hidden, new_state


def _batch_normalization(x, mean, variance, gamma, beta, epsilon):
    """keras.ops.batch_normalization on `(B, O, M)` with per-model `(O, M)` statistics."""
    inv = jax.lax.rsqrt(variance + epsilon) * gamma
    return x * inv[None] + (beta - mean * inv)[None]


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
