"""The vectorised trainer: many models of one architecture in one XLA program.

A model is a chain of layers (`transferlab.layers`) trained on an objective
(`transferlab.objectives`) by an optimizer (`transferlab.optimizers`). The engine
computes what `keras.Model.fit` computes for each model (the loss, the optimizer's
update, batches in the given order with the last partial batch kept, normalisation and
dropout in training mode unless frozen, Keras' running training metrics and end-of-epoch
validation metrics) but for a whole shard at once. It is a pure function of arrays: no
files, studies or printing.

Layout by size: narrow models keep the model axis *last* (`x: (batch, features,
models)`, `kernel: (in, out, models)`) and contract with unrolled multiply-adds, so XLA
emits a few elementwise loops vectorised across models; wide ones run a step written
for one model under `jax.vmap` (batched matrix products). Models train in fixed blocks
(`models_per_block`), one compiled single-device program for all blocks and epoch
chunks, dealt over the host's XLA devices (one per core) and run concurrently.

Row counts are runtime inputs: the splits are padded to whole sum blocks (or to a
sweep's largest split, `RowPadding`), each epoch runs as many groups of batches as its
real rows need, a partial batch is a full one with its padding rows masked out of the
loss, the batch statistics and the metrics, and sums over rows go in a fixed order. So
any row count up to a program's shapes runs the same program, and padding changes no bit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from transferlab import kernels, objectives, optimizers
from transferlab import layers as layer_types
from transferlab.layers import BN_FROZEN_MODES, Context
from transferlab.optimizers import TrainingSettings
from transferlab.orders import GivenOrders, OrderStream, RowPadding, order_dtype

# An epoch's batches run in a loop over groups of up to `MAX_GROUP` batches, unrolled in
# the program while group × per-batch work stays under `UNROLL_BUDGET`. The loop runs as
# many groups as the real rows need (a runtime count), so one program serves every row
# count up to its arrays' shapes; 4 measured fastest on the tutorial's model at 20 to 500
# rows (bench/RESULTS.md, "Programs shared across row counts").
UNROLL_BUDGET = 640
MAX_GROUP = 4
# Architectures with a Dense layer wider than this on either side train per model (mapped
# with `jax.vmap`, matrix products); narrower ones with the model axis last.
PER_MODEL_WIDTH = 16
# Models per compiled block. Every engine call pads its models to whole blocks and runs
# the same one-device program per block, so shard size and device count never change a
# number. 64 measured best for small studies (both cores busy from 65 models) and within
# 20% of the best block size for large ones (bench/RESULTS.md).
MODELS_PER_BLOCK = 64
# Models on feature maps (convolutions) train in blocks of 8: their steps cost as much per
# model at 8 as at 64 (the digits CNN of bench/cnn_speed.py: 26.0 s for 240 models at 8,
# 29.5 s at 64), and a small cohort (a study's 5 source models) pads to few copies.
FEATURE_MAP_MODELS_PER_BLOCK = 8
# Large models train in smaller blocks, so a block's weights stay near this many values
# (and a single retrained run pads to few copies). The block size depends on the
# architecture alone, never on how many runs a call trains.
BLOCK_WEIGHTS = 1 << 20
# Evaluation goes through a split in chunks of at most this many rows, so memory is
# bounded by the chunk, not the data set.
EVALUATION_ROWS = 4096
EVALUATION_VALUES = 1 << 24
# Row orders are drawn on the host and sent a chunk of epochs at a time: at most this many
# values per block and chunk.
ORDER_VALUES = 1 << 19




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


def models_per_block(plan, n_inputs: int) -> int:
    """Models per compiled block: `MODELS_PER_BLOCK` (`FEATURE_MAP_MODELS_PER_BLOCK` for
    models on feature maps), halved until a block's weights fit `BLOCK_WEIGHTS`."""
    widths = layer_types.layer_widths(n_inputs, plan)
    weights = sum(
        sum(int(np.prod(shape)) for shape in spec.weight_shapes(n_in)) for spec, n_in in zip(plan, widths[:-1])
    )
    block = FEATURE_MAP_MODELS_PER_BLOCK if _on_feature_maps(plan, n_inputs) else MODELS_PER_BLOCK
    while block > 1 and block * weights > BLOCK_WEIGHTS:
        block //= 2
    return block


def epoch_chunk(epochs: int, n_rows: int, block: int = MODELS_PER_BLOCK) -> int:
    """Epochs per engine call: a power of two, at least `epochs` where a block's row orders
    for that many epochs fit `ORDER_VALUES`, else the largest that fits. The last chunk is
    padded with skipped epochs, so one compiled program serves every chunk of a study and
    every study of 16 or more epochs on the same data (no recompiling for another count)."""
    most = max(1, ORDER_VALUES // max(1, n_rows * block))
    chunk = 1
    while chunk < epochs and chunk * 2 <= most:
        chunk *= 2
    return chunk


LOSSES = objectives.LOSSES


def metric_names(loss: str) -> tuple[str, ...]:
    """Metrics tracked beside the loss (the objective's: accuracy, or MAE and R²)."""
    return objectives.get(loss).metrics


def curve_names(loss: str) -> tuple[str, ...]:
    """Per-epoch curves, named as Keras' `History` names them."""
    return objectives.get(loss).curve_names()


def final_names(loss: str) -> tuple[str, ...]:
    return objectives.get(loss).final_names()


def layer_plan(layers, weights=None) -> tuple[layer_types.Layer, ...]:
    """The engine's static view of a layer list: layer types (`transferlab.layers`). An
    activation name stands for a Dense layer whose width the weights give."""
    plan = []
    for index, layer in enumerate(layers):
        if isinstance(layer, str):
            units = weights[index][1].shape[-1] if weights is not None else 1
            layer = layer_types.Dense(int(units), layer)
        plan.append(layer)
    return tuple(plan)


def train_models(
    layers,
    weights: list[tuple[np.ndarray, ...]],
    multipliers: np.ndarray,
    seeds,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    config: TrainingSettings = TrainingSettings(),
    anchors: list[np.ndarray | None] | None = None,
    penalties: np.ndarray | None = None,
    loss: str = "categorical_crossentropy",
    bn_frozen: str = "inference",
    orders: np.ndarray | None = None,
    padding: RowPadding | None = None,
) -> ShardResult:
    """Train `models` layer stacks of one architecture at once.

    - `layers`: one layer type per layer (`transferlab.layers`; see `layer_plan`).
    - `weights`: initial arrays per layer, stacked model-first, in Keras' `get_weights()`
      order: Dense `(kernel (models, in, out), bias (models, out))`, BatchNormalization
      `(gamma, beta, moving_mean, moving_variance)`, each `(models, width)`; `()` for a
      layer without weights.
    - `multipliers`: learning-rate multiplier `(models, epochs, layers)`; 0 freezes a layer
      (its weights stay bit-identical and its optimizer state does not advance).
    - `seeds`: one per model; each epoch's row order (`shuffle_orders`) and every dropout
      mask derive from it. Orders are drawn a chunk of epochs at a time (`epoch_chunk`), so
      no models × epochs × rows array exists.
    - `anchors`, `penalties`: optional L2 pull of each Dense kernel toward `anchors[l]`
      `(models, in, out)` with strength `penalties (models, layers)`: the loss gains
      `penalty/2 · ‖kernel − anchor‖²` (L2-SP when the anchor is the source kernel).
    - `loss`: the objective (`objectives.LOSSES`): categorical or binary cross-entropy
      (metric accuracy) or mean squared error (MAE and R²).
    - `bn_frozen`: how a frozen BatchNormalization layer runs: `"inference"` (Keras'
      convention: moving statistics, not updated) or `"train"` (batch statistics, moving
      statistics keep updating; only gamma and beta stay fixed).
    - `orders`: explicit row orders `(models, epochs, rows)` instead of the seeds' (for
      reference runs that replay a given batch order).
    - `padding`: train as if the splits had `padding.train` and `padding.test` rows (a
      `RowPadding`), so calls on different row counts share one compiled program.
    """
    misses = _compiled_program.cache_info().misses
    call = _Call.of(layers, weights, multipliers, seeds, x_train, y_train, x_test, y_test, config, anchors,
                    penalties, loss, bn_frozen, orders, padding)
    blocks = call.blocks
    order_stream = functools.partial(_order_stream, blocks, orders, len(x_train), call.chunks, call.order_width)
    outputs = _run_blocks(call.program, blocks, call.shared, order_stream, call.chunk, config.epochs)
    if _compiled_program.cache_info().misses != misses:
        _trim_heap()  # compiling left hundreds of MB of freed memory in the heap
    # one tree, models first: the blocks' outputs concatenated, the padding dropped
    trained, trained_state, curves, final = jax.tree.map(
        lambda *parts: np.concatenate([np.moveaxis(b, -1, 0) for b in parts])[: blocks.n_models], *outputs
    )
    return ShardResult(
        weights=[tuple(pair) + tuple(moving) for pair, moving in zip(trained, trained_state)],
        curves=curves,
        final=final,
    )


def prepare_program(layers, weights, multipliers, seeds, x_train, y_train, x_test, y_test,
                    config: TrainingSettings = TrainingSettings(), anchors=None, penalties=None,
                    loss: str = "categorical_crossentropy", bn_frozen: str = "inference",
                    padding: RowPadding | None = None) -> None:
    """Trace and compile (or load from the disk cache) what `train_models` will run for
    arrays of these shapes, on every device it will use, without training: a driver calls it
    on another thread while other work trains, and the first call finds the program ready."""
    call = _Call.of(layers, weights, multipliers, seeds, x_train, y_train, x_test, y_test, config, anchors,
                    penalties, loss, bn_frozen, None, padding)
    blocks, width = call.blocks, call.order_width
    zeros = np.zeros((call.chunk, width, blocks.size), order_dtype(width))
    for block, device in zip(range(blocks.count), jax.local_devices()):
        job = _start_job(blocks, block, device, call.shared, None)
        per_epoch = _per_epoch(job, 0, call.chunk, config.epochs, zeros)
        call.program.lower(job["carry"], job["extras"], jax.device_put(per_epoch, device)).compile()


@dataclass
class _Call:
    """What one `train_models` call runs: the program, the models in blocks, the inputs every
    block shares and the chunks of epochs."""

    program: object
    blocks: _Blocks
    shared: dict
    chunk: int
    chunks: list
    order_width: int

    @classmethod
    def of(cls, layers, weights, multipliers, seeds, x_train, y_train, x_test, y_test, config, anchors, penalties,
           loss, bn_frozen, orders, padding) -> _Call:
        plan = layer_plan(layers, weights)
        objective = objectives.get(loss)
        seeds = _checked_inputs(plan, weights, multipliers, seeds, config, x_train, x_test, bn_frozen, orders, padding)
        padding = padding or RowPadding(len(x_train), len(x_test))
        penalised = penalties is not None
        shape = ProgramShape.of(config)
        blocks = _Blocks(plan, shape, models_per_block(plan, x_train.shape[1:]), seeds,
                         [[np.asarray(a, np.float32) for a in arrays] for arrays in weights],
                         np.asarray(multipliers, np.float32),
                         None if not penalised else [None if a is None else np.asarray(a, np.float32) for a in anchors],
                         None if not penalised else np.asarray(penalties, np.float32))
        shared = _shared_inputs(config, objective, x_train, y_train, x_test, y_test, bn_frozen, padding)
        group_rows = batches_per_group(plan, x_train.shape[1:], config.batch_size) * config.batch_size
        order_width = -(-padding.train // group_rows) * group_rows
        program = _compiled_program(plan, shape, penalised, loss)
        chunk = epoch_chunk(config.epochs, order_width, blocks.size)
        _PROGRAMS_RUN.add((plan, shape, penalised, loss, blocks.size, chunk, order_width,
                           tuple((key, np.shape(value)) for key, value in shared.items() if key != "hyper")))
        chunks = [(chunk, min(chunk, config.epochs - first)) for first in range(0, config.epochs, chunk)]
        return cls(program, blocks, shared, chunk, chunks, order_width)


def _checked_inputs(plan, weights, multipliers, seeds, config, x_train, x_test, bn_frozen, orders,
                    padding) -> np.ndarray:
    """The arguments' shapes agree with each other (a `ValueError` naming the one that does
    not); returns the seeds as `(models,)` uint32."""
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
    seeds = np.asarray(seeds, np.uint32).reshape(-1)
    if seeds.shape != (n_models,):
        raise ValueError(f"seeds must hold one seed per model ({n_models}); got {seeds.shape[0]}")
    if n_models == 0:
        raise ValueError("train_models needs at least one model")
    if orders is not None and orders.shape != (n_models, config.epochs, x_train.shape[0]):
        raise ValueError(
            f"orders must be (models, epochs, rows) = ({n_models}, {config.epochs}, "
            f"{x_train.shape[0]}); got {orders.shape}"
        )
    if padding is not None and (padding.train < len(x_train) or padding.test < len(x_test)):
        raise ValueError(
            f"padding to {padding.train} training and {padding.test} test rows is less than the task's "
            f"{len(x_train)} and {len(x_test)}")
    return seeds


def _shared_inputs(config: TrainingSettings, objective, x_train, y_train, x_test, y_test, bn_frozen: str,
                   padding: RowPadding) -> dict:
    """What every block's program reads alike: hyperparameters, the data and row counts."""
    shared = dict(
        # hyperparameters are runtime inputs: a study that changes the learning rate, the
        # momentum, the betas or the weight decay reuses the compiled program
        hyper=optimizers.runtime_inputs(config),
        x_train=np.asarray(x_train, np.float32),
        y_train=objective.targets(y_train),
        x_test=np.asarray(x_test, np.float32),
        y_test=objective.targets(y_test),
        # a runtime input, not a compile-time constant: both modes run one program, so runs
        # with nothing frozen are bit-identical under either
        bn_inference=np.asarray(bn_frozen == "inference"),
    )
    # the real row counts are runtime inputs; the arrays take the padded shapes (whole
    # evaluation chunks), and each epoch's order whole groups of batches
    shared["rows"] = np.asarray([len(x_train), len(x_test)], np.int32)
    for split, size in (("train", padding.train), ("test", padding.test)):
        for key in (f"x_{split}", f"y_{split}"):
            shared[key] = _pad_rows(shared[key], padded_split_rows(size))
    return shared


@dataclass
class _Blocks:
    """The models packed into blocks of `size`, each block's arrays with the model axis last."""

    plan: tuple
    shape: ProgramShape
    size: int
    seeds: np.ndarray
    weights: list
    multipliers: np.ndarray
    anchors: list | None
    penalties: np.ndarray | None

    @property
    def n_models(self) -> int:
        return len(self.seeds)

    @property
    def count(self) -> int:
        return -(-self.n_models // self.size)

    def real(self, block: int) -> slice:
        """The models of `block` that are real (not filler)."""
        return slice(block * self.size, min((block + 1) * self.size, self.n_models))

    def models_last(self, array: np.ndarray, block: int) -> np.ndarray:
        """Rows `block·B … (block+1)·B` with the model axis moved last; past the real models,
        copies of model 0 fill the block (their results are dropped)."""
        array = array[block * self.size : (block + 1) * self.size]
        if len(array) < self.size:
            filler = np.repeat(array[:1], self.size - len(array), axis=0)
            array = np.concatenate([array, filler], axis=0)
        return np.ascontiguousarray(np.moveaxis(array, 0, -1))

    def inputs(self, block: int) -> tuple[dict, dict, np.ndarray]:
        """The block's carry (weights, state, optimizer slots, step), its own inputs (seeds,
        L2 anchors and penalties) and its multipliers `(epochs, layers, B)`."""
        params, state = [], []
        for spec, arrays in zip(self.plan, self.weights):
            arrays = [self.models_last(a, block) for a in arrays]
            params.append(tuple(arrays[: spec.n_trainable]))
            state.append(tuple(arrays[spec.n_trainable :]))
        block_multipliers = self.models_last(self.multipliers, block)  # (E, L, B)
        carry = dict(
            params=params,
            state=state,
            slots=[tuple(optimizers.init(self.shape.optimizer, np.zeros_like(p)) for p in pair) for pair in params],
            step=np.zeros(self.size, np.float32),
            was_frozen=block_multipliers[0] == 0,
        )
        extras = dict(seeds=self.models_last(self.seeds, block))
        if self.penalties is not None:
            extras["anchors"] = {str(layer): self.models_last(self.anchors[layer], block)
                                 for layer, spec in enumerate(self.plan) if spec.penalised_array is not None}
            extras["penalties"] = self.models_last(self.penalties, block)  # (L, B)
        return carry, extras, block_multipliers


def _run_blocks(program, blocks: _Blocks, shared: dict, order_stream, chunk: int, epochs: int) -> list:
    """Every block through the program, a chunk of epochs per call; returns each block's
    (params, state, curves, final).

    Every block runs the same single-device programs, blocks dealt over the devices a wave
    at a time and dispatched asynchronously: a model's numbers never depend on the shard
    size, the number of devices or its position (the tests check). The next wave's row
    orders are drawn while this one trains: at most two waves in flight."""
    devices = jax.local_devices()
    outputs, in_flight, streams = [], [], {}  # each block's stream starts drawing as soon as its wave is next
    try:
        for wave_start in range(0, blocks.count, len(devices)):
            for block in range(wave_start, min(wave_start + 2 * len(devices), blocks.count)):
                if block not in streams:
                    streams[block] = order_stream(block)
            wave = [_start_job(blocks, block, devices[offset], shared, streams[block])
                    for offset, block in enumerate(range(wave_start, min(wave_start + len(devices), blocks.count)))]
            for first in range(0, epochs, chunk):
                for job in wave:
                    _advance(program, job, first, chunk, epochs)
            in_flight.append(wave)
            if len(in_flight) == 2:
                outputs += _collect(in_flight.pop(0), epochs)
    finally:
        for stream in streams.values():  # leaving early: stop drawing ahead
            stream.close()
    for wave in in_flight:
        outputs += _collect(wave, epochs)
    return outputs


def _order_stream(blocks: _Blocks, orders: np.ndarray | None, n_rows: int, chunks: list, width: int, block: int):
    """The block's row orders (the seeds', or the given ones), drawn a chunk ahead on a
    worker thread."""
    real = blocks.real(block)
    if orders is None:
        return OrderStream(blocks.seeds[real], n_rows, chunks, width, blocks.size)
    return GivenOrders(orders[real], chunks, width, blocks.size)


def _start_job(blocks: _Blocks, block: int, device, shared: dict, stream) -> dict:
    """One block's inputs placed on its device, ready for its first chunk of epochs."""
    carry, extras, block_multipliers = blocks.inputs(block)
    return dict(device=device, carry=jax.device_put(carry, device), extras=jax.device_put(dict(shared, **extras), device),
                multipliers=block_multipliers, stream=stream, curves=[])


def _advance(program, job: dict, first: int, chunk: int, epochs: int) -> None:
    """Dispatch epochs `first … first + chunk` of one block (asynchronously)."""
    if len(job["curves"]) >= 2:  # at most two chunks of orders in flight per block
        jax.block_until_ready(job["curves"][-2])
    per_epoch = _per_epoch(job, first, chunk, epochs, job["stream"].next())
    job["carry"], curves, job["final"] = program(job["carry"], job["extras"], jax.device_put(per_epoch, job["device"]))
    job["curves"].append(curves)


def _per_epoch(job: dict, first: int, chunk: int, epochs: int, orders: np.ndarray) -> dict:
    """The program's per-epoch inputs for epochs `first … first + chunk` of one block."""
    multipliers = job["multipliers"][first : first + chunk]
    return dict(
        epoch=np.arange(first, first + chunk, dtype=np.int32),
        multipliers=np.concatenate([multipliers, np.repeat(multipliers[-1:], chunk - len(multipliers), 0)]),
        orders=orders,
        active=np.arange(first, first + chunk) < epochs,  # the last chunk may be padded
        finish=np.asarray(first + chunk >= epochs),  # the last chunk evaluates
    )


def _collect(wave: list[dict], epochs: int) -> list:
    """Each finished block's trained arrays, curves (the chunks joined) and final metrics."""
    collected = []
    for job in wave:
        trained = (job["carry"]["params"], job["carry"]["state"])
        curves = jax.tree.map(lambda *chunks: np.concatenate(chunks)[:epochs], *jax.device_get(job["curves"]))
        collected.append(jax.device_get((*trained, curves, job["final"])))
    return collected


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with zero rows appended up to `rows`."""
    filler = np.zeros((rows - len(array),) + array.shape[1:], array.dtype)
    return np.concatenate([array, filler])


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
    optimizer's kind and state arrays (its hyperparameters are runtime inputs; the epoch
    chunk's length comes with the arrays' shapes, `epoch_chunk`)."""

    batch_size: int
    optimizer: optimizers.OptimizerShape

    @classmethod
    def of(cls, config: TrainingSettings) -> ProgramShape:
        return cls(config.batch_size, optimizers.OptimizerShape.of(config))


@functools.lru_cache(maxsize=32)
def _compiled_program(plan: tuple, shape: ProgramShape, penalised: bool, loss: str):
    """One block of models (`models_per_block`) on one device, one chunk of epochs; every
    block, chunk and device runs it."""
    settings = dict(plan=plan, shape=shape, penalised=penalised, loss=loss)

    def program(carry, inputs, chunk):
        if per_model_layout(plan, inputs["x_train"].shape[1:]):
            return _vectorised(functools.partial(_train_epochs, per_model=True, **settings))(carry, inputs, chunk)
        return _train_epochs(carry, inputs, chunk, **settings)

    return jax.jit(program)


_PROGRAMS_RUN: set = set()  # what identifies a compiled program: architecture, settings, shapes


def compiled_programs() -> int:
    """How many distinct engine programs (architecture, settings and array shapes: one XLA
    compilation each) this process has run (for tests and benchmarks)."""
    return len(_PROGRAMS_RUN)


def batch_work(plan, n_inputs: int) -> int:
    """A rough count of the operations one training batch adds to the program (unrolled
    contractions count each term), for choosing how many batches one loop step unrolls."""
    work, width = 0, layer_types.as_shape(n_inputs)[-1]
    for spec in plan:
        out = spec.output_width(width)
        if spec.starts_block:
            work += (width if width <= kernels.UNROLL_WIDTH else 1) + (
                out if out <= kernels.UNROLL_WIDTH else 1
            ) + 4
        elif spec.n_trainable:  # normalisation: statistics, their gradients, state
            work += 8
        else:  # dropout draws a mask, an activation is one elementwise function
            work += 4 if spec.random else 2
        width = out
    return work


def batches_per_group(plan, n_inputs: int, batch_size: int) -> int:
    """Batches per iteration of an epoch's loop, unrolled in the program: as many as
    `UNROLL_BUDGET` allows for narrow layers (XLA fuses across them), one for wide ones
    (run per model, where a plain loop measured faster). It depends on the architecture
    alone, so any number of rows runs the same loop body."""
    if per_model_layout(plan, n_inputs):
        return 1
    return max(1, min(MAX_GROUP, UNROLL_BUDGET // batch_work(plan, n_inputs)))


_PER_MODEL_INPUTS = ("seeds", "anchors", "penalties")


def per_model_layout(plan, n_inputs: int) -> bool:
    """Wide layers train fastest written for one model and `jax.vmap`-ped (XLA then keeps
    the model axis first and runs batched matrix products); narrow ones with the model
    axis last and unrolled multiply-adds. Per model once a Dense layer is wider than
    `PER_MODEL_WIDTH` on either side (measured in bench/wide_layers.py), and always on
    feature maps (convolutions and pooling are written for one model)."""
    if _on_feature_maps(plan, n_inputs):
        return True
    widths = layer_types.layer_widths(n_inputs, plan)
    return any(
        spec.starts_block and max(n_in, n_out) > PER_MODEL_WIDTH
        for spec, n_in, n_out in zip(plan, widths[:-1], widths[1:])
    )


def _on_feature_maps(plan, n_inputs) -> bool:
    """Does the model take images or sequences, or have a layer written for one model?"""
    return len(layer_types.as_shape(n_inputs)) > 1 or not all(spec.models_last for spec in plan)


def _vectorised(function, per_model_inputs=_PER_MODEL_INPUTS, batched_chunk=("multipliers", "orders")):
    """`function(carry, inputs, chunk)` written for one model, mapped over the last axis of
    the per-model arrays (the layout every engine array travels in)."""

    def mapped(carry, inputs, chunk=None):
        input_axes = {key: (-1 if key in per_model_inputs else None) for key in inputs}
        if chunk is None:
            return jax.vmap(function, in_axes=(-1, input_axes), out_axes=-1)(carry, inputs)
        chunk_axes = {key: (-1 if key in batched_chunk else None) for key in chunk}
        return jax.vmap(function, in_axes=(-1, input_axes, chunk_axes), out_axes=-1)(carry, inputs, chunk)

    return mapped


def _train_epochs(carry: dict, inputs: dict, chunk: dict, plan, shape: ProgramShape, penalised: bool, loss: str,
                  per_model: bool = False):
    """Runs inside jit on one block, for one chunk of epochs: `carry` (weights, state,
    optimizer slots and step, last epoch's frozen layers) in; trained `carry`, the chunk's
    curves and (when `chunk["finish"]`) the final metrics out. Every per-model array has
    the model axis last, or, with `per_model`, no model axis at all (the function is
    mapped over models)."""
    trainer = _Trainer(inputs, plan, shape, penalised, loss, per_model)
    start = (
        [tuple(pair) for pair in carry["params"]],
        [tuple(moving) for moving in carry["state"]],
        [tuple(slot) for slot in carry["slots"]],
        carry["step"],
    )
    per_epoch = {key: chunk[key] for key in ("epoch", "multipliers", "orders", "active")}
    ((params, state, slots, step), was_frozen), curves = jax.lax.scan(
        trainer.epoch_or_skip, (start, carry["was_frozen"]), per_epoch)

    def final_metrics():
        return trainer.final_metrics(params, state)

    # a runtime switch, not a second program: only a study's last chunk evaluates
    blank = jax.tree.map(lambda shape: jnp.zeros(shape.shape, shape.dtype), jax.eval_shape(final_metrics))
    final = jax.lax.cond(chunk["finish"], final_metrics, lambda: blank)
    return dict(params=params, state=state, slots=slots, step=step, was_frozen=was_frozen), curves, final


class _Trainer:
    """One block's training as `fit` does it, traced inside jit: the loss with its L2 pull,
    one optimizer step, an epoch of batches (a loop over groups of batches) and the
    evaluation. Holds the block's inputs and what is fixed for the whole program."""

    def __init__(self, inputs: dict, plan, shape: ProgramShape, penalised: bool, loss: str, per_model: bool):
        self.inputs, self.plan, self.penalised, self.per_model = inputs, plan, penalised, per_model
        self.x_train, self.y_train = inputs["x_train"], inputs["y_train"]
        self.batch = shape.batch_size
        # the real row counts arrive at run time (`RowPadding`): every program serves any
        # number of rows up to its arrays' shapes, with the same arithmetic for each
        self.n_rows, self.n_test_rows = inputs["rows"][0], inputs["rows"][1]
        self.n_batches = (self.n_rows + self.batch - 1) // self.batch
        self.group = batches_per_group(plan, self.x_train.shape[1:], self.batch)
        self.group_rows = self.group * self.batch
        self.objective = objectives.get(loss)
        self.optimizer, self.hyper = shape.optimizer, inputs["hyper"]
        # each model's dropout masks: a key from its run's seed, folded with the step and layer
        self.dropout_keys = kernels.mix32(inputs["seeds"].astype(jnp.uint32) ^ jnp.uint32(0x5BD1E995))
        self.uses_keys = any(spec.random for spec in plan)
        self.gradient = jax.grad(self._loss, has_aux=True)

    def _loss(self, params, state, xb, yb, ctx):
        outputs, new_state = _forward(params, state, xb, self.plan, ctx)
        # Keras' "sum_over_batch_size", over the batch's real rows
        batch_loss = objectives.per_row(objectives.row_sum(self.objective.loss(outputs, yb), ctx.rows), ctx.row_count)
        if self.penalised:
            for layer, anchor in self.inputs["anchors"].items():
                kernel = params[int(layer)][self.plan[int(layer)].penalised_array]
                # every axis of a model's kernel (a convolution's window too), not the models'
                axes = tuple(range(kernel.ndim if self.per_model else kernel.ndim - 1))
                pull = jnp.sum(jnp.square(kernel - anchor), axis=axes)
                batch_loss = batch_loss + 0.5 * self.inputs["penalties"][int(layer)] * pull
        return jnp.sum(batch_loss), (batch_loss, outputs, new_state)

    def _step_keys(self, step):
        """Per layer, each model's dropout key for this optimizer step."""
        if not self.uses_keys:
            return None
        per_step = kernels.mix32(self.dropout_keys + jnp.asarray(step, jnp.uint32) * jnp.uint32(0x85EBCA6B))
        return [kernels.mix32(per_step ^ jnp.uint32((layer + 1) * 0xC2B2AE35 % 2**32)) for layer in range(len(self.plan))]

    def optimizer_step(self, carry, xb, yb, multipliers, global_step, real, count):
        """One batch: gradients, clipping and each layer's update (a frozen layer's weights
        bit-identical and its optimizer state not advanced)."""
        params, state, slots, step = carry
        frozen = [multipliers[layer] == 0 for layer in range(len(self.plan))]  # (M,) each
        ctx = Context(True, [f & self.inputs["bn_inference"] for f in frozen], self._step_keys(global_step), real, count,
                      models_last=not self.per_model)
        grads, (batch_loss, outputs, new_state) = self.gradient(params, state, xb, yb, ctx)
        if self.optimizer.counts_steps:
            step = step + 1.0  # Keras' `iterations + 1` of this step
        grads = optimizers.clip_gradients(self.optimizer, grads, [~f for f in frozen], self.hyper,
                                          models_last=not self.per_model)
        new_params, new_slots = [], []
        for layer, (param_pair, grad_pair, slot_pair) in enumerate(zip(params, grads, slots)):
            rate = self.hyper["learning_rate"] * multipliers[layer]  # (M,)
            updated, kept = [], []
            for value, grad, value_slots in zip(param_pair, grad_pair, slot_pair):
                stepped, stepped_slots = optimizers.update(self.optimizer, value, grad, value_slots, rate, step,
                                                           self.hyper)
                updated.append(jnp.where(frozen[layer], value, stepped))
                kept.append({k: jnp.where(frozen[layer], value_slots[k], v) for k, v in stepped_slots.items()})
            new_params.append(tuple(updated))
            new_slots.append(tuple(kept))
        return (new_params, new_state, new_slots, step), batch_loss, outputs

    def _gather(self, order, start, size):
        """Rows `start … start+size` of each model's order: `(size, features, models)`."""
        rows = jax.lax.dynamic_slice_in_dim(order, start, size)  # (size, M), or (size,) per model
        if self.per_model:
            return self.x_train[rows], self.y_train[rows]
        return jnp.transpose(self.x_train[rows], (0, 2, 1)), jnp.transpose(self.y_train[rows], (0, 2, 1))

    def _restart_where_frozen_changed(self, carry, is_frozen, was_frozen):
        """Keras needs a fresh optimizer (compile again) to change which layers train: where a
        model's frozen set changes, its optimizer restarts from zero."""
        if not (self.optimizer.slots or self.optimizer.counts_steps):
            return carry
        restart = jnp.any(is_frozen != was_frozen, axis=0)  # (M,)
        params, state, slots, step = carry
        slots = jax.tree.map(lambda a: jnp.where(restart, jnp.zeros_like(a), a), slots)
        return (params, state, slots, jnp.where(restart, 0.0, step))

    def epoch(self, outer, per_epoch):
        """One epoch: every batch of the epoch's order, then the test split (Keras' `val_*`)."""
        carry, was_frozen = outer
        index, multipliers = per_epoch["epoch"], per_epoch["multipliers"]  # (), (L, M)
        order = per_epoch["orders"].astype(jnp.int32)  # (N, M)
        is_frozen = multipliers == 0
        carry = self._restart_where_frozen_changed(carry, is_frozen, was_frozen)
        batch, n_rows, group = self.batch, self.n_rows, self.group

        def run_batch(inner, xb, yb, start, batch_index):
            """One optimizer step on the batch at `start`; rows past the real ones are masked."""
            carry, loss_total, sums = inner
            real = start + jnp.arange(batch) < n_rows
            count = jnp.clip(n_rows - start, 1, batch).astype(jnp.float32)
            carry, batch_loss, outputs = self.optimizer_step(carry, xb, yb, multipliers,
                                                             index * self.n_batches + batch_index, real, count)
            # Keras' loss tracker: mean of batch losses weighted by batch size
            return carry, loss_total + batch_loss * count, self.objective.update(sums, outputs, yb, real)

        def run_group(group_index, inner):
            """`group` batches, unrolled; in the last group, a batch past the real rows is
            skipped (it changes nothing, the step count included)."""
            first = group_index * self.group_rows
            group_x, group_y = self._gather(order, first, self.group_rows)
            for offset in range(group):
                start = first + offset * batch
                xb, yb = group_x[offset * batch : (offset + 1) * batch], group_y[offset * batch : (offset + 1) * batch]
                step = functools.partial(run_batch, xb=xb, yb=yb, start=start, batch_index=group_index * group + offset)
                # a group starts within the real rows
                inner = step(inner) if offset == 0 else jax.lax.cond(start < n_rows, step, lambda kept: kept, inner)
            return inner

        loss_total = jnp.zeros(order.shape[1:], jnp.float32)
        sums = self.objective.init(carry[0][-1][1].shape)  # the output bias is (outputs, models)
        # as many groups as the real rows need: the loop's length is a runtime number
        n_groups = (n_rows + self.group_rows - 1) // self.group_rows
        carry, loss_total, sums = jax.lax.fori_loop(0, n_groups, run_group, (carry, loss_total, sums))
        validation = _evaluate(carry[0], carry[1], self.inputs["x_test"], self.inputs["y_test"], self.plan,
                               self.objective, self.per_model, self.n_test_rows)
        epoch_rows = n_rows.astype(jnp.float32)
        curves = {"loss": objectives.per_row(loss_total, epoch_rows), **self.objective.finalise(sums, epoch_rows)}
        curves.update({objectives.column("test", name, curve=True): value for name, value in validation.items()})
        return (carry, is_frozen), curves

    def epoch_or_skip(self, outer, per_epoch):
        """A padding epoch past the study's last leaves everything as it is."""
        models = per_epoch["orders"].shape[1:]  # (models,), or () for one model
        skipped = {name: jnp.zeros(models, jnp.float32) for name in self.objective.curve_names()}
        return jax.lax.cond(per_epoch["active"], self.epoch, lambda o, _: (o, skipped), outer, per_epoch)

    def final_metrics(self, params, state) -> dict:
        """The trained models on both splits, in inference mode (as `evaluate`)."""
        final = {}
        splits = (("train", (self.x_train, self.y_train, self.n_rows)),
                  ("test", (self.inputs["x_test"], self.inputs["y_test"], self.n_test_rows)))
        for split, (x, y, real) in splits:
            metrics = _evaluate(params, state, x, y, self.plan, self.objective, self.per_model, real)
            final.update({objectives.column(split, name): value for name, value in metrics.items()})
        return final


def _evaluate(params, state, x, y, plan, objective, per_model: bool, real_rows) -> dict:
    """Loss and metrics of every model on the first `real_rows` (a runtime count) of a split
    `x (N, I)` shared by all models, in inference mode (as `model.evaluate`), in chunks of
    rows (`evaluation_rows`). N is a whole number of sum blocks (`padded_split_rows`) and
    padding rows count as exact zeros, so the numbers do not depend on how far the split
    is padded."""
    n_rows = x.shape[0]
    n_models = models_per_block(plan, x.shape[1:])
    ctx = Context(training=False, models_last=not per_model)
    # one model's rows, or a Dense first layer that reads rows shared by all models as they are
    shared_input = per_model or plan[0].reads_shared_input

    def chunk(carry, rows_x, rows_y, first):
        loss_sum, sums = carry
        inputs = rows_x if shared_input else jnp.broadcast_to(rows_x[:, :, None], rows_x.shape + (n_models,))
        outputs, _ = _forward(params, state, inputs, plan, ctx)
        targets = rows_y if per_model else rows_y[:, :, None]
        real = first + jnp.arange(rows_x.shape[0]) < real_rows
        loss = objectives.row_sum(objective.loss(outputs, targets), real)
        return loss_sum + loss, objective.update(sums, outputs, targets, real)

    carry = (jnp.zeros(params[-1][1].shape[1:], jnp.float32), objective.init(params[-1][1].shape))
    size = evaluation_rows(plan, x.shape[1:], n_models)
    if n_rows <= size:
        loss_sum, sums = chunk(carry, x, y, 0)
    else:
        full = n_rows // size

        def scan_chunk(carry, index):
            rows_x = jax.lax.dynamic_slice_in_dim(x, index * size, size)
            rows_y = jax.lax.dynamic_slice_in_dim(y, index * size, size)
            return chunk(carry, rows_x, rows_y, index * size), None

        carry, _ = jax.lax.scan(scan_chunk, carry, jnp.arange(full))
        if full * size < n_rows:
            loss_sum, sums = chunk(carry, x[full * size :], y[full * size :], full * size)
        else:
            loss_sum, sums = carry
    count = real_rows.astype(jnp.float32)
    return {"loss": objectives.per_row(loss_sum, count), **objective.finalise(sums, count)}


def padded_split_rows(rows: int) -> int:
    """A split's rows as the program holds them: whole sum blocks (`objectives.row_sum`),
    so evaluation chunks are too."""
    return -(-rows // objectives.SUM_BLOCK) * objectives.SUM_BLOCK


def evaluation_rows(plan, n_inputs: int, n_models: int) -> int:
    """Rows per evaluation chunk: the widest activation of a chunk stays near
    `EVALUATION_VALUES` floats; whole sum blocks, at least one, at most `EVALUATION_ROWS`."""
    widest = max(layer_types.layer_sizes(n_inputs, plan))
    blocks = max(1, EVALUATION_VALUES // (widest * n_models) // objectives.SUM_BLOCK)
    return int(min(EVALUATION_ROWS, blocks * objectives.SUM_BLOCK))


def _forward(params, state, x, plan, ctx: Context):
    """The model on `x (B, I, M)`: each layer's own forward pass. Returns the output and the
    new state (BatchNormalization's moving statistics in training)."""
    hidden = x
    new_state = []
    for index, (spec, trainable, layer_state) in enumerate(zip(plan, params, state)):
        hidden, layer_state = spec.forward(trainable, layer_state, hidden, ctx, index)
        new_state.append(layer_state)
    return hidden, new_state
