"""Objectives: per task kind, the loss, its metrics and the headline score, as Keras has them.

This module owns every piece of metric knowledge in transferlab. An objective bundles
what the engine and the reports need to know about a kind of task: the per-row loss
(Keras' formula), each metric as running sums over batches (`init` / `update` /
`finalise`, so an epoch's training metric is Keras' running mean and evaluation can go
through the rows in chunks), the headline score, and how to evaluate a given model's
outputs with those same formulas. Each metric's display name, range and direction is a
`Metric`; stored columns are named `{split}_{metric}` (finals) and `{metric}` /
`val_{metric}` (curves, as Keras' `History`), and `column` / `parse_column` are the one
place those names are made and read. Adding a metric changes this module only.
Arrays have the engine's layout: `(rows, outputs, models)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from transferlab._lazy import jnp  # the formulas run in the engine; the names are read anywhere

_EPSILON = 1e-7  # keras.config.epsilon(), used by Keras' cross-entropies
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Metric:
    """What a reader and a statistic need to know about one metric.

    `low` / `high` bound its values (None: unbounded); `axis_floor` is where a plot's axis
    stops when values run far below it (a diverged run's R² can be −10⁶)."""

    name: str
    display: str
    higher_is_better: bool
    low: float | None = None
    high: float | None = None
    axis_floor: float | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        """The range its values (and so a mean's interval) can take, ±inf where unbounded."""
        return (-np.inf if self.low is None else self.low, np.inf if self.high is None else self.high)


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    Metric("loss", "loss", higher_is_better=False, low=0.0),
    Metric("accuracy", "accuracy", higher_is_better=True, low=0.0, high=1.0),
    Metric("mae", "MAE", higher_is_better=False, low=0.0),
    Metric("r2", "R²", higher_is_better=True, high=1.0, axis_floor=-1.0),
)}


def column(split: str, metric: str, *, curve: bool = False) -> str:
    """A stored column's name: a final metric `test_r2`; a curve `r2` (train) or `val_r2` (test)."""
    if curve:
        return metric if split == "train" else f"val_{metric}"
    return f"{split}_{metric}"


def parse_column(name: str) -> tuple[str, Metric]:
    """`test_r2` / `val_r2` → ("test", R²); `r2` → ("train", R²): the inverse of `column`."""
    for prefix, split in (("train_", "train"), ("test_", "test"), ("val_", "test")):
        if name.startswith(prefix) and name[len(prefix):] in METRICS:
            return split, METRICS[name[len(prefix):]]
    if name in METRICS:
        return "train", METRICS[name]
    raise KeyError(f"{name!r} is not a metric column; metrics: {', '.join(METRICS)}")


def curve_key(name: str) -> tuple[str, str]:
    """A History name's (split, metric name) by Keras' rule (`val_` is the test split), for
    any metric, named here or not: `val_top2_accuracy` → ("test", "top2_accuracy")."""
    return ("test", name[4:]) if name.startswith("val_") else ("train", name)


def metric_of(name: str) -> Metric:
    """The metric a column (`test_accuracy`, `val_loss`, `mae`) holds."""
    return parse_column(name)[1]


def display(name: str) -> str:
    """A column as a reader writes it: `test_r2` → `test R²`, `val_mae` → `test MAE`, `mae` → `MAE`."""
    split, metric = parse_column(name)
    if name == metric.name:
        return metric.display
    return f"{split} {metric.display}"


@dataclass(frozen=True)
class Objective:
    """Loss, metrics and headline score of one kind of task."""

    name: ClassVar[str]  # the Keras loss
    metrics: ClassVar[tuple[str, ...]]
    headline: ClassVar[str]

    def targets(self, y: np.ndarray) -> np.ndarray:
        """The task's target array as this loss reads it."""
        return np.asarray(y, np.float32)

    def loss(self, outputs, targets):
        """Per-row loss `(rows, models)`."""
        raise NotImplementedError

    def init(self, output_shape: tuple[int, int]) -> dict:
        """Zero sums for outputs `(outputs, models)`."""
        raise NotImplementedError

    def update(self, sums: dict, outputs, targets, rows=None) -> dict:
        """Add one batch `(rows, outputs, models)` to the sums; where `rows` (a `(rows,)`
        mask) is given, only the rows it marks count (padding is left out)."""
        raise NotImplementedError

    def finalise(self, sums: dict, n_rows) -> dict:
        """Each metric `(models,)` from the sums over `n_rows` rows (a number, or a
        runtime scalar when the rows are padded)."""
        raise NotImplementedError

    def curve_names(self) -> tuple[str, ...]:
        """Per-epoch curves, named as Keras' `History` names them."""
        names = ("loss",) + self.metrics
        return names + tuple(f"val_{name}" for name in names)

    def final_names(self) -> tuple[str, ...]:
        """Final metrics as stored: `train_loss`, `train_accuracy`, `test_loss`, ..."""
        return tuple(column(split, name) for split in SPLITS for name in ("loss",) + self.metrics)

    @property
    def score(self) -> Metric:
        """The headline metric."""
        return METRICS[self.headline]

    @property
    def score_column(self) -> str:
        """The headline test metric as stored (`test_accuracy`, `test_r2`): what studies compare."""
        return column("test", self.headline)

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger headline score is better."""
        return self.score.higher_is_better

    def evaluate(self, outputs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Loss and metrics of one model's `outputs` `(rows, outputs)` against a task's `y`,
        with the formulas the engine trains and evaluates with (so a given source model's
        recorded score means what a trained one's does)."""
        outputs = jnp.asarray(np.asarray(outputs, np.float32))[:, :, None]
        targets = jnp.asarray(self.targets(y))[:, :, None]
        if outputs.shape[1] != targets.shape[1]:
            raise ValueError(f"{outputs.shape[1]} outputs, but the {self.name} targets have {targets.shape[1]}")
        sums = self.update(self.init(outputs.shape[1:]), outputs, targets)
        values = {"loss": per_row(row_sum(self.loss(outputs, targets)), len(outputs)),
                  **self.finalise(sums, len(outputs))}
        return {name: float(np.asarray(value).reshape(-1)[0]) for name, value in values.items()}


class _Accuracy:
    """Keras' accuracy as a running count of correct rows."""

    def init(self, output_shape):
        return {"correct": jnp.zeros(output_shape[1:], jnp.float32)}

    def update(self, sums, outputs, targets, rows=None):
        hits = self.hits(outputs, targets).astype(jnp.float32)
        return {"correct": sums["correct"] + row_sum(hits, rows)}

    def finalise(self, sums, n_rows):
        return {"accuracy": per_row(sums["correct"], n_rows)}


@dataclass(frozen=True)
class CategoricalCrossentropy(_Accuracy, Objective):
    """Softmax outputs, one-hot targets: `keras.losses.categorical_crossentropy`, accuracy."""

    name: ClassVar[str] = "categorical_crossentropy"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    headline: ClassVar[str] = "accuracy"

    def loss(self, outputs, targets):
        probabilities = outputs / jnp.sum(outputs, axis=1, keepdims=True)
        probabilities = jnp.clip(probabilities, _EPSILON, 1.0 - _EPSILON)
        return -jnp.sum(targets * jnp.log(probabilities), axis=1)

    @staticmethod
    def hits(outputs, targets):
        return jnp.argmax(outputs, axis=1) == jnp.argmax(jnp.broadcast_to(targets, outputs.shape), axis=1)


@dataclass(frozen=True)
class BinaryCrossentropy(_Accuracy, Objective):
    """One sigmoid output, targets 0/1: `keras.losses.binary_crossentropy` and Keras'
    binary accuracy (output > 0.5): Keras' way for two classes."""

    name: ClassVar[str] = "binary_crossentropy"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    headline: ClassVar[str] = "accuracy"

    def targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, np.float32)
        return y[:, 1:2] if y.ndim == 2 and y.shape[1] == 2 else y.reshape(len(y), -1)

    def loss(self, outputs, targets):
        outputs = jnp.clip(outputs, _EPSILON, 1.0 - _EPSILON)
        cross = targets * jnp.log(outputs) + (1.0 - targets) * jnp.log(1.0 - outputs)
        return -jnp.mean(cross, axis=1)

    @staticmethod
    def hits(outputs, targets):
        predicted = (outputs > 0.5).astype(jnp.float32)
        return jnp.mean((predicted == targets).astype(jnp.float32), axis=1)


@dataclass(frozen=True)
class MeanSquaredError(Objective):
    """Linear outputs: `keras.losses.mean_squared_error`, with MAE and R² as Keras'
    `MeanAbsoluteError` and `R2Score` (uniform average over outputs) compute them."""

    name: ClassVar[str] = "mean_squared_error"
    metrics: ClassVar[tuple[str, ...]] = ("mae", "r2")
    headline: ClassVar[str] = "r2"

    def loss(self, outputs, targets):
        return jnp.mean(jnp.square(targets - outputs), axis=1)

    def init(self, output_shape):
        per_model = jnp.zeros(output_shape[1:], jnp.float32)
        per_output = jnp.zeros(output_shape, jnp.float32)
        return {"absolute": per_model, "sum_y": per_output, "sum_y2": per_output, "squared_error": per_output}

    def update(self, sums, outputs, targets, rows=None):
        targets = jnp.broadcast_to(targets, outputs.shape)
        residual = targets - outputs
        return {
            "absolute": sums["absolute"] + row_sum(jnp.mean(jnp.abs(residual), axis=1), rows),
            "sum_y": sums["sum_y"] + row_sum(targets, rows),
            "sum_y2": sums["sum_y2"] + row_sum(jnp.square(targets), rows),
            "squared_error": sums["squared_error"] + row_sum(jnp.square(residual), rows),
        }

    def finalise(self, sums, n_rows):
        mean_y = per_row(sums["sum_y"], n_rows)
        total = sums["sum_y2"] - sums["sum_y"] * mean_y
        scores = 1.0 - sums["squared_error"] / total
        scores = jnp.where(jnp.isinf(scores), 0.0, scores)  # keras.metrics.R2Score's convention
        return {"mae": per_row(sums["absolute"], n_rows), "r2": jnp.mean(scores, axis=0)}


def per_row(total, n_rows):
    """`total / n_rows` as XLA computes it for a constant count (times the reciprocal), also
    when the count arrives at run time, so both give the same bits."""
    if isinstance(n_rows, int):
        return total / n_rows
    return total * (1.0 / n_rows)


SUM_BLOCK = 256


def row_sum(values, rows=None):
    """The sum over the first (row) axis; with a `(rows,)` mask, of the marked rows only.

    A whole number of `SUM_BLOCK`s of rows is summed block by block, each by pairwise
    halving (an order fixed here, not left to XLA's reduction, whose order depends on the
    array's shape), and the block sums are added in order; so appending padding rows
    (exact zeros, whole blocks) never changes a bit of the result: a padded split sums to
    what the unpadded one does."""
    if rows is not None:
        values = jnp.where(rows.reshape((-1,) + (1,) * (values.ndim - 1)), values, 0.0)
    n_rows = values.shape[0]
    if n_rows < SUM_BLOCK or n_rows % SUM_BLOCK:
        return jnp.sum(values, axis=0)
    blocks = values.reshape((n_rows // SUM_BLOCK, SUM_BLOCK) + values.shape[1:])
    while blocks.shape[1] > 1:
        half = blocks.shape[1] // 2
        blocks = blocks[:, :half] + blocks[:, half:]
    blocks = blocks[:, 0]
    total = blocks[0]
    for block in range(1, n_rows // SUM_BLOCK):
        total = total + blocks[block]
    return total


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective for objective in (CategoricalCrossentropy(), BinaryCrossentropy(), MeanSquaredError())
}
LOSSES = tuple(OBJECTIVES)


def get(loss: str) -> Objective:
    if loss not in OBJECTIVES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    return OBJECTIVES[loss]


def for_kind(kind: str) -> Objective:
    """The objective of a task kind when its output layer is not known: its headline and
    metrics are those of every objective of that kind."""
    return OBJECTIVES["mean_squared_error" if kind == "regression" else "categorical_crossentropy"]


def for_task(kind: str, head) -> Objective:
    """The objective a task of `kind` trains with under the output layer `head`: binary
    cross-entropy for one sigmoid unit, categorical cross-entropy for other classifiers,
    mean squared error for regression."""
    if kind == "regression":
        return OBJECTIVES["mean_squared_error"]
    if head.units == 1 and head.activation == "sigmoid":
        return OBJECTIVES["binary_crossentropy"]
    return OBJECTIVES["categorical_crossentropy"]
