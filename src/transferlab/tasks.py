"""Tasks: the data a model is trained and judged on.

A `Task` holds train/test arrays: one-hot targets for classification, real-valued
targets for regression. The built-in `blobs` task is the tutorial's `make_blobs`
problem, row for row; `regression` is scikit-learn's `make_regression`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.datasets import make_blobs, make_regression

KINDS = ("classification", "regression")


class TaskError(ValueError):
    """Task data that cannot be trained on; the message says what to fix."""


@dataclass(frozen=True, eq=False)
class Task:
    """Train/test arrays of one problem.

    `x_*` is `(rows, features)` float32; `y_*` is `(rows, classes)` one-hot float32 for
    `kind="classification"`, `(rows, targets)` float32 for `kind="regression"`.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    kind: str = "classification"
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TaskError(f"task {self.name!r}: kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        check_task_arrays(self)

    @property
    def loss(self) -> str:
        """The Keras loss the task trains with."""
        return "categorical_crossentropy" if self.kind == "classification" else "mean_squared_error"

    @property
    def score(self) -> str:
        """The headline test metric: accuracy for classification, R² for regression."""
        return "test_accuracy" if self.kind == "classification" else "test_r2"

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.y_train.shape[1])

    @property
    def labels_train(self) -> np.ndarray:
        return np.argmax(self.y_train, axis=1)

    @property
    def labels_test(self) -> np.ndarray:
        return np.argmax(self.y_test, axis=1)


def check_task_arrays(task: Task) -> None:
    """Shapes, dtypes and finiteness, named by task and array, so the engine never sees bad data."""
    for split in ("train", "test"):
        x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
        if x.ndim != 2 or y.ndim != 2:
            raise TaskError(
                f"task {task.name!r}: x_{split} and y_{split} must be 2-D (rows, columns); "
                f"got shapes {x.shape} and {y.shape}"
            )
        if x.shape[0] != y.shape[0]:
            raise TaskError(
                f"task {task.name!r}: x_{split} has {x.shape[0]} rows but y_{split} has "
                f"{y.shape[0]}; give one target per row"
            )
        if x.shape[0] == 0:
            raise TaskError(f"task {task.name!r}: the {split} split is empty")
        for label, array in ((f"x_{split}", x), (f"y_{split}", y)):
            bad = ~np.isfinite(array)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise TaskError(
                    f"task {task.name!r}: {label} has a NaN or infinite value in row {row}; "
                    "clean or impute the data first"
                )
    if task.x_train.shape[1] != task.x_test.shape[1]:
        raise TaskError(
            f"task {task.name!r}: train has {task.x_train.shape[1]} features, test has "
            f"{task.x_test.shape[1]}"
        )
    if task.y_train.shape[1] != task.y_test.shape[1]:
        raise TaskError(
            f"task {task.name!r}: train has {task.y_train.shape[1]} outputs, test has "
            f"{task.y_test.shape[1]}"
        )


def split_task(name: str, x: np.ndarray, y: np.ndarray, n_train: int, kind: str, params: dict) -> Task:
    """The first `n_train` rows train and the rest test, as the tutorial splits its data."""
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Task(name, x[:n_train], y[:n_train], x[n_train:], y[n_train:], kind, params)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Keras' `to_categorical`: integer labels → float32 one-hot rows."""
    return np.eye(n_classes, dtype=np.float32)[labels]


def blobs(
    seed: int,
    n_samples: int = 1000,
    centers: int = 3,
    n_features: int = 2,
    cluster_std: float = 2.0,
    n_train: int = 500,
    name: str | None = None,
) -> Task:
    """The tutorial's problem: `make_blobs(...)`, first `n_train` rows train, the rest test."""
    if not 0 < n_train < n_samples:
        raise TaskError(f"blobs: n_train must be between 1 and n_samples-1 ({n_samples - 1})")
    x, labels = make_blobs(
        n_samples=n_samples,
        centers=centers,
        n_features=n_features,
        cluster_std=cluster_std,
        random_state=seed,
    )
    return split_task(
        name or f"blobs(seed={seed})",
        x,
        one_hot(labels, centers),
        n_train,
        "classification",
        dict(
            seed=seed,
            n_samples=n_samples,
            centers=centers,
            n_features=n_features,
            cluster_std=cluster_std,
            n_train=n_train,
        ),
    )


def regression(
    seed: int,
    n_samples: int = 1000,
    n_features: int = 2,
    n_informative: int | None = None,
    n_targets: int = 1,
    noise: float = 10.0,
    n_train: int = 500,
    name: str | None = None,
) -> Task:
    """`make_regression(..., random_state=seed)`: each seed draws its own coefficients. The
    first `n_train` rows train, the rest test; targets are standardised with the train
    split's mean and standard deviation, so one learning rate serves every seed."""
    if not 0 < n_train < n_samples:
        raise TaskError(f"regression: n_train must be between 1 and n_samples-1 ({n_samples - 1})")
    x, y = make_regression(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative or n_features,
        n_targets=n_targets,
        noise=noise,
        random_state=seed,
    )
    y = y.reshape(n_samples, n_targets)
    mean, std = y[:n_train].mean(axis=0), y[:n_train].std(axis=0)
    y = (y - mean) / np.where(std > 0, std, 1.0)
    return split_task(
        name or f"regression(seed={seed})",
        x,
        y,
        n_train,
        "regression",
        dict(
            seed=seed,
            n_samples=n_samples,
            n_features=n_features,
            n_informative=n_informative or n_features,
            n_targets=n_targets,
            noise=noise,
            n_train=n_train,
        ),
    )


GENERATORS = {"blobs": blobs, "regression": regression}


def generate(kind: str, params: dict, name: str) -> Task:
    """A generated task by its kind (`blobs`, `regression`) and the generator's arguments."""
    return GENERATORS[kind](**params, name=name)
