"""Study files: TOML parsed and validated into a `StudyConfig`.

Every problem becomes one `StudyFileError` line naming the file, the field and what
is expected, e.g. `study.toml: strategies[2].freeze: 3 is larger than the number of
hidden layers (2)`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)

from transferlab import models, optimizers, strategies, tasks
from transferlab.engine import BN_FROZEN_MODES
from transferlab.errors import DataError, StudyFileError
from transferlab.words import count

_STRICT = ConfigDict(extra="forbid", strict=True)
PositiveInt = Annotated[int, Field(ge=1)]

# Ceilings: far beyond any study this engine should run, low enough that a typo (an extra
# zero or three) is caught here instead of by the kernel's out-of-memory killer.
MAX_SEED = 2**32 - 1  # what scikit-learn and NumPy accept as a random_state
MAX_EPOCHS = 100_000  # every epoch's curves are stored: 100,000 epochs is 800,000 numbers per run
MAX_WIDTH = 65_536  # units, features, classes or targets: one 65,536² kernel is 16 GiB
MAX_SAMPLES = 10_000_000
MAX_VALUES = 200_000_000  # n_samples × n_features: 1.6 GB while scikit-learn generates them
MAX_REPEATS = 100_000
MAX_SOURCE_REPEATS = 10_000
MAX_SHARD_SIZE = 65_536
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Samples = Annotated[int, Field(ge=2, le=MAX_SAMPLES)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
STUDY_NAME = re.compile(r"\w(?:[\w .-]{0,98}[\w-])?")  # no separators, no "..", no trailing dot or space


class _Preparation(BaseModel):
    """What every task may say about its rows (`transferlab.data.build` does it): a `query`,
    the `classes` kept (in this order), a seeded subsample of `n_rows`, dropping rows with
    missing values, the split and the feature standardisation. `name` replaces the
    task's title in tables and the report."""

    model_config = _STRICT
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    query: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    classes: Annotated[list[int | str | bool], Field(min_length=1, max_length=MAX_WIDTH)] | None = None
    n_rows: Annotated[int, Field(ge=2, le=MAX_SAMPLES)] | None = None
    dropna: bool = False
    split: Literal["first", "random"] | None = None
    test_fraction: Annotated[Finite, Field(gt=0, lt=1)] | None = None
    train_part: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] | None = None
    standardize: bool | Literal["source"] | None = None
    model_file: str | None = None  # [source] only: an existing .keras source model

    DEFAULT_SPLIT: ClassVar[str] = "random"
    DEFAULT_STANDARDIZE: ClassVar[bool] = True

    def options(self, **extra) -> dict:
        """The dataset options (`data.build.Options`) this table gives."""
        given = {
            "name": self.name, "query": self.query,
            "classes": None if self.classes is None else tuple(self.classes),
            "n_rows": self.n_rows, "dropna": self.dropna,
            "split": self.split or self.DEFAULT_SPLIT, "test_fraction": self.test_fraction,
            "train_part": self.train_part,
            "standardize": self.DEFAULT_STANDARDIZE if self.standardize is None else self.standardize,
        }
        return {**given, **extra}

    @property
    def given(self) -> bool:
        """Does the table name a task (a source may be only a model file)?"""
        return True


class _Generated(_Preparation):
    """A generated task: the first `n_train` rows train, features as generated (unless the
    table says otherwise)."""

    DEFAULT_SPLIT: ClassVar[str] = "first"
    DEFAULT_STANDARDIZE: ClassVar[bool] = False

    def make(self, role: str, source_scaler=None, categories: dict | None = None) -> tasks.Task:
        options = self.options(seed=self.seed)
        del options["name"]
        if self.test_fraction is None or "n_train" in self.model_fields_set:
            options["n_train"] = self.n_train
        task = tasks.generate(self.kind, self.generator_params(), self.name or self.describe(),
                              source_scaler=source_scaler, **options)
        return dataclasses.replace(task, name=role)

    def generator_params(self) -> dict:
        """The generator's arguments (`tasks.generate`)."""
        return self.model_dump(include=set(type(self).GENERATOR_FIELDS))

    @property
    def given(self) -> bool:
        return self.seed is not None


class BlobsTask(_Generated):
    """A `make_blobs` classification task: the tutorial's parameters are the defaults."""

    kind: Literal["blobs"] = "blobs"
    seed: Seed
    n_samples: Samples = 1000
    centers: Annotated[int, Field(ge=2, le=MAX_WIDTH)] = 3
    n_features: Width = 2
    cluster_std: Annotated[Finite, Field(gt=0)] = 2.0
    n_train: PositiveInt = 500
    GENERATOR_FIELDS: ClassVar[tuple] = ("seed", "n_samples", "centers", "n_features", "cluster_std", "n_train")

    @model_validator(mode="after")
    def _train_split_fits(self):
        return _check_split(self)

    def describe(self) -> str:
        return f"blobs(seed={self.seed})"


class RegressionTask(_Generated):
    """A `make_regression` task; different seeds give different coefficients."""

    kind: Literal["regression"]
    seed: Seed
    n_samples: Samples = 1000
    n_features: Width = 2
    n_informative: Width | None = None
    n_targets: Width = 1
    noise: Annotated[Finite, Field(ge=0)] = 10.0
    n_train: PositiveInt = 500
    GENERATOR_FIELDS: ClassVar[tuple] = ("seed", "n_samples", "n_features", "n_informative", "n_targets", "noise", "n_train")

    @model_validator(mode="after")
    def _train_split_fits(self):
        if self.n_informative is not None and self.n_informative > self.n_features:
            raise ValueError(
                f"n_informative ({self.n_informative}) cannot exceed n_features ({self.n_features})"
            )
        return _check_split(self)

    def describe(self) -> str:
        return f"regression(seed={self.seed})"


def _check_split(task):
    values = task.n_samples * task.n_features
    if values > MAX_VALUES:
        raise ValueError(
            f"n_samples × n_features is {values:,}; at most {MAX_VALUES:,} values fit a task "
            "(they are generated in memory): use fewer samples or features"
        )
    if task.n_train >= task.n_samples:
        raise ValueError(
            f"n_train ({task.n_train}) must be smaller than n_samples ({task.n_samples}) "
            "to leave rows for the test split"
        )
    return task


class _Dataset(_Preparation):
    """A task from data: which columns (`target`, `features` or `drop`), whether it is
    classification or regression (`task`; by default the target's type decides), the split
    (`split`, or `split_column` with its `train`/`test` values, or `train_path` and
    `test_path`), `n_train` training rows of the split's training part, and the `seed` of
    the random split and subsample."""

    target: Annotated[str, Field(min_length=1)] | Annotated[list[str], Field(min_length=1)] | None = None
    features: Annotated[list[str], Field(min_length=1)] | None = None
    drop: list[str] | None = None
    task: Literal["classification", "regression"] | None = None
    n_train: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] | None = None
    split_column: Annotated[str, Field(min_length=1)] | None = None
    train: str | int | bool = "train"
    test: str | int | bool = "test"
    seed: Seed = 0
    # messy real tables: one-hot encoded text columns, placeholders for missing values,
    # date columns (for a query), European numbers (CSV only)
    categorical: Annotated[list[str], Field(min_length=1)] | None = None
    na_values: Annotated[list[str | int | float], Field(min_length=1)] | None = None
    parse_dates: Annotated[list[str], Field(min_length=1)] | None = None
    decimal: Annotated[str, Field(min_length=1, max_length=1)] | None = None
    thousands: Annotated[str, Field(min_length=1, max_length=1)] | None = None

    @model_validator(mode="after")
    def _one_split(self):
        if self.split_column is not None and self.split is not None:
            raise ValueError("give split or split_column (the column decides the split), not both")
        if self.features is not None and self.drop is not None:
            raise ValueError("give features or drop, not both")
        return self

    def make(self, role: str, source_scaler=None, categories: dict | None = None) -> tasks.Task:
        from transferlab.data import build

        if (self.decimal or self.thousands) and self.kind != "csv":
            raise DataError("decimal and thousands are how a CSV file writes numbers; this data is not CSV",
                                  "decimal" if self.decimal else "thousands")
        options = self.options(
            target=None if self.target is None else (self.target if isinstance(self.target, str) else tuple(self.target)),
            features=None if self.features is None else tuple(self.features),
            drop=tuple(self.drop or ()), task=self.task, n_train=self.n_train, split_column=self.split_column,
            train=self.train, test=self.test, seed=self.seed,
            categorical=None if self.categorical is None else tuple(self.categorical), categories=categories,
            na_values=None if self.na_values is None else tuple(self.na_values),
            parse_dates=None if self.parse_dates is None else tuple(self.parse_dates),
        )
        return tasks.Task(**build.task_parts(self.table(), build.Options(**options), role, source_scaler))


class _FileDataset(_Dataset):
    """A data file (`path`, relative to the study file), or separate `train_path` and `test_path`."""

    path: Annotated[str, Field(min_length=1)] | None = None
    train_path: Annotated[str, Field(min_length=1)] | None = None
    test_path: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_location(self):
        pair = (self.train_path is not None, self.test_path is not None)
        if self.path is not None and any(pair):
            raise ValueError("give path, or train_path and test_path, not both")
        if any(pair) and not all(pair):
            raise ValueError("give both train_path and test_path (or one path)")
        if all(pair) and (self.split is not None or self.split_column is not None):
            raise ValueError("train_path and test_path are the split; drop split and split_column")
        if not self.given and self.model_file is None:
            raise ValueError(f"give path = the {self.kind} file (or train_path and test_path)")
        return self

    @property
    def given(self) -> bool:
        return self.path is not None or self.train_path is not None

    def paths(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("path", "train_path", "test_path") if getattr(self, k) is not None}

    def table(self):
        from transferlab.data import read

        keys = self.keys()
        if self.kind == "csv":
            keys["csv_options"] = {"decimal": self.decimal, "thousands": self.thousands}
        if self.path is not None:
            return read.read_file(self.kind, self.path, **keys)
        return read.read_pair(self.kind, Path(self.train_path), Path(self.test_path), **keys)

    def keys(self) -> dict:
        return {}


class CsvTask(_FileDataset):
    kind: Literal["csv"]


class ParquetTask(_FileDataset):
    kind: Literal["parquet"]


class NpzTask(_FileDataset):
    """Arrays `x_key` (rows, features) and `y_key` (labels, or (rows, targets)) of an `.npz`."""

    kind: Literal["npz"]
    x_key: Annotated[str, Field(min_length=1)] = "x"
    y_key: Annotated[str, Field(min_length=1)] = "y"

    def keys(self) -> dict:
        return {"x_key": self.x_key, "y_key": self.y_key}


class SklearnTask(_Dataset):
    """One of the datasets scikit-learn ships (no download)."""

    kind: Literal["sklearn"]
    dataset: Literal["iris", "digits", "wine", "breast_cancer", "diabetes", "linnerud"] | None = None

    @model_validator(mode="after")
    def _named(self):
        if self.dataset is None and self.model_file is None:
            raise ValueError("give dataset = one of iris, digits, wine, breast_cancer, diabetes, linnerud")
        return self

    @property
    def given(self) -> bool:
        return self.dataset is not None

    def table(self):
        from transferlab.data import read

        return read.load_sklearn(self.dataset)


class GivenTask(BaseModel):
    """A `Task` object given in Python (`Task.from_frame`, `Task.from_arrays`)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    kind: Literal["task"] = "task"
    task: tasks.Task
    model_file: str | None = None
    standardize: None = None

    @field_serializer("task")
    def _summary(self, task: tasks.Task) -> dict:
        return {"name": task.provenance.get("name", task.name), "fingerprint": task.fingerprint()}

    def make(self, role: str, source_scaler=None, categories: dict | None = None) -> tasks.Task:
        return self.task

    @property
    def given(self) -> bool:
        return True


class _ModelFileSource:
    """A source is a task to train source models on, or `model_file`, an existing `.keras`
    source model (then the task's `seed` is optional: give it to report the source task)."""

    @model_validator(mode="after")
    def _task_or_file(self):
        if self.seed is None and self.model_file is None:
            raise ValueError("give the source task's seed, or model_file = a .keras source model")
        return self


class BlobsSource(_ModelFileSource, BlobsTask):
    seed: Seed | None = None


class RegressionSource(_ModelFileSource, RegressionTask):
    seed: Seed | None = None


TASK_KINDS = ("blobs", "regression", "csv", "parquet", "npz", "sklearn", "task")
DATA_TASKS = {"csv": CsvTask, "parquet": ParquetTask, "npz": NpzTask, "sklearn": SklearnTask, "task": GivenTask}


def _task_kind(value) -> str:
    if isinstance(value, tasks.Task):
        return "task"
    return value.get("kind", "blobs") if isinstance(value, dict) else getattr(value, "kind", "blobs")


def _task_union(blobs: type, regression: type):
    members = [Annotated[blobs, Tag("blobs")], Annotated[regression, Tag("regression")]]
    members += [Annotated[cls, Tag(kind)] for kind, cls in DATA_TASKS.items()]
    return Annotated[
        Union[tuple(members)],
        Discriminator(
            _task_kind,
            custom_error_type="unknown_kind",
            custom_error_message="kind must be one of " + ", ".join(repr(k) for k in TASK_KINDS[:-1]),
        ),
    ]


TaskConfig = _task_union(BlobsTask, RegressionTask)
SourceConfig = _task_union(BlobsSource, RegressionSource)


_MLP_FIELDS = ("hidden", "activation", "kernel_initializer", "batch_norm", "dropout")


class ModelConfig(BaseModel):
    """The hidden layers, then an output layer sized to the task. Either the tutorial's MLP
    (`hidden` Dense layers, each optionally followed by BatchNormalization and Dropout) or
    an explicit `layers` list of layer tables. The output layer: for two classes one
    sigmoid unit (binary cross-entropy, Keras' way), else softmax over the classes (or
    `output_activation`); one linear unit per target for regression."""

    model_config = _STRICT
    hidden: Annotated[list[Width], Field(min_length=1, max_length=1000)] = [5, 5]
    activation: str = "relu"
    kernel_initializer: str = "he_uniform"
    output_activation: str | None = None
    batch_norm: bool = False
    dropout: Annotated[Finite, Field(ge=0, lt=1)] = 0.0
    layers: Annotated[list[dict[str, Any]], Field(max_length=1000)] | None = None

    @model_validator(mode="after")
    def _known_names(self):
        if self.layers is not None:
            given = [name for name in _MLP_FIELDS if name in self.model_fields_set]
            if given:
                raise ValueError(f"give either layers or {given[0]} (layers lists every hidden layer)")
            for index, entry in enumerate(self.layers):
                spec = models.layers.from_dict(entry, f"layers[{index}]")
                if isinstance(spec, models.Dense) and spec.units > MAX_WIDTH:
                    raise ValueError(f"layers[{index}].units: {spec.units} is above {MAX_WIDTH}")
        for field in ("activation", "output_activation"):
            if getattr(self, field) is not None and getattr(self, field) not in models.ACTIVATIONS:
                raise ValueError(
                    f"{field} {getattr(self, field)!r} is not supported; use one of "
                    + ", ".join(models.ACTIVATIONS)
                )
        if self.kernel_initializer not in models.INITIALIZERS:
            raise ValueError(
                f"kernel_initializer {self.kernel_initializer!r} is not supported; use one of "
                + ", ".join(models.INITIALIZERS)
            )
        return self


def _hyperparameter_field(declared: optimizers.Hyperparameter):
    """A study-file field for one optimizer hyperparameter, from its declaration."""
    if declared.type is bool:
        return (bool | None, None)
    bounds = {"gt": declared.above, "ge": declared.at_least, "lt": declared.below}
    return (Annotated[Finite, Field(**{k: v for k, v in bounds.items() if v is not None})] | None, None)


class _Training(BaseModel):
    """Optimizer and `fit` settings. Defaults are Keras': `SGD()` (learning rate 0.01) and
    `fit` (batch size 32), with the tutorial's 100 epochs; `optimizer = "adam"`, `"adamw"`
    or `"rmsprop"` takes that Keras optimizer's parameters, each defaulting as Keras does
    (`optimizers.DEFAULTS`). A parameter the chosen optimizer does not take is an error.
    The hyperparameter fields are made from `optimizers.HYPERPARAMETERS`."""

    model_config = _STRICT
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 100
    batch_size: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] = 32
    optimizer: Literal[optimizers.OPTIMIZERS] = "sgd"

    @model_validator(mode="after")
    def _one_clipping(self):
        given = [name for name in optimizers.CLIPPING if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of clipnorm, clipvalue and global_clipnorm, not {' and '.join(given)} (Keras takes one)")
        return self

    @field_validator(*optimizers.PARAMETERS, check_fields=False)
    @classmethod
    def _taken_by_the_optimizer(cls, value, info: ValidationInfo):
        optimizer = info.data.get("optimizer", "sgd")
        takes = optimizers.DEFAULTS[optimizer]
        if value is not None and info.field_name not in takes:
            raise ValueError(
                f"{optimizer} has no parameter {info.field_name} (its parameters: {', '.join(takes)}); "
                "remove it or choose an optimizer that takes it"
            )
        return value

    def settings(self) -> optimizers.TrainingSettings:
        """The resolved settings the engine trains with (every default filled in)."""
        given = {name: getattr(self, name) for name in optimizers.HYPERPARAMETERS}
        return optimizers.settings(self.epochs, self.batch_size, self.optimizer, given)


TrainingConfig = create_model(
    "TrainingConfig", __base__=_Training, __module__=__name__,
    **{name: _hyperparameter_field(declared) for name, declared in optimizers.HYPERPARAMETERS.items()},
)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?[bB]|[bB])?\s*")
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """`"2 GB"`, `"512MiB"`, `"1.5 GiB"` → bytes."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a size; write it like \"2 GB\" or \"512 MiB\"")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


class ExecutionConfig(BaseModel):
    """Runs per stored shard (one transaction each): changes memory and how much an
    interruption loses, never a result (the engine trains in fixed blocks). Without
    `shard_size`, the largest shard whose estimated peak memory fits `memory` (default:
    half of what the machine has available) is used."""

    model_config = _STRICT
    shard_size: Annotated[int, Field(ge=1, le=MAX_SHARD_SIZE)] | None = None
    memory: str | None = None
    # where shards train: this process, or the workers of a Ray cluster (`address`: "auto"
    # for the cluster this machine belongs to, or HEAD:PORT); never changes a result
    executor: Literal["local", "ray"] = "local"
    address: str = "auto"
    cpus_per_shard: Annotated[int, Field(ge=1, le=1024)] = 1

    @field_validator("memory")
    @classmethod
    def _a_size(cls, value):
        if value is not None and parse_size(value) < 2**20:
            raise ValueError(f"{value!r} is below 1 MiB; give the memory the study may use, e.g. \"2 GB\"")
        return value

    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_size(self.memory)

    def executor_for(self, ray_address: str | None = None):
        """The executor these settings (or `--ray ADDRESS`, which wins) ask for."""
        from transferlab.executors import LocalExecutor, RayExecutor

        if ray_address is None and self.executor == "local":
            return LocalExecutor()
        return RayExecutor(ray_address or self.address, self.cpus_per_shard)


class ReportConfig(BaseModel):
    """How the report reads the results (never part of the study's identity: changing it
    and running `transferlab report` again is fine)."""

    model_config = _STRICT
    threshold: Finite | None = None  # time to threshold: default 95% of standalone's final mean


class StudyConfig(BaseModel):
    """A whole study: tasks, model, training, strategies and repeats.

    `reverse` also runs every strategy from the target task to the source task;
    `bn_frozen` says how a frozen BatchNormalization layer runs ("inference", Keras'
    convention, or "train")."""

    model_config = _STRICT
    name: str
    seed: Seed = 1
    repeats: Annotated[int, Field(ge=1, le=MAX_REPEATS)] = 30
    source_repeats: Annotated[int, Field(ge=1, le=MAX_SOURCE_REPEATS)] = 1
    reverse: bool = False
    bn_frozen: Literal[BN_FROZEN_MODES] = "inference"
    # how a reused output layer's units meet the target's classes, for every strategy that
    # does not say (`transferlab.heads`): by class name, or by position on purpose
    head: Literal["by_name", "by_position"] = "by_name"
    source: SourceConfig
    target: TaskConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    strategies: Annotated[list[dict[str, Any]], Field(min_length=1)]
    execution: ExecutionConfig = ExecutionConfig()
    report: ReportConfig = ReportConfig()
    _tasks: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _roles(self):
        if self.target.model_file is not None:
            raise ValueError("target.model_file: only the source may be a model file; remove it from [target]")
        if self.source.standardize == "source":
            raise ValueError("source.standardize: \"source\" is for the target (it applies the source task's "
                             "scaler); use true or false")
        if self.target.standardize == "source" and not self.source.given:
            raise ValueError("target.standardize: \"source\" needs a source task to take the scaler from; "
                             "describe the source task in [source] or use true")
        return self

    def tasks(self) -> dict[str, tasks.Task | None]:
        """The source task (None when the source is only a model file) and the target task,
        built once from their tables; a `DataError` names the role and the field. Categorical
        columns take their categories from both tasks' training rows (built twice: first
        to find them), so both tasks have the same input columns."""
        if not self._tasks:
            source = _made(self.source, "source") if self.source.given else None
            if getattr(self.source, "categorical", None) or getattr(self.target, "categorical", None):
                probe = _made(self.target.model_copy(update={"standardize": False}), "target")
                shared = _shared_categories(source, probe)
                source = _made(self.source, "source", categories=shared) if source is not None else None
                target = _made(self.target, "target", None if source is None else source.scaler, shared)
            else:
                target = _made(self.target, "target", None if source is None else source.scaler)
            self._tasks.update(source=source, target=target)
        return dict(self._tasks)

    @model_validator(mode="after")
    def _safe_name(self):
        if not STUDY_NAME.fullmatch(self.name):
            raise ValueError(
                f"name {self.name!r} is not a safe folder name (it names the output folder): use 1 to 100 "
                "letters, digits, spaces, '.', '_' or '-', starting with a letter or digit and ending with neither "
                "a dot nor a space"
            )
        return self

    def architecture(self, n_inputs: int, head: models.Dense) -> models.Architecture:
        """The `[model]` hidden layers on `n_inputs` features under the output layer `head`."""
        if self.model.layers is not None:
            hidden = tuple(models.layers.from_dict(entry) for entry in self.model.layers)
            return models.Architecture(n_inputs, hidden + (head,))
        body = models.mlp(
            n_inputs,
            tuple(self.model.hidden),
            1,
            activation=self.model.activation,
            kernel_initializer=self.model.kernel_initializer,
            batch_norm=self.model.batch_norm,
            dropout=self.model.dropout,
        )
        return models.Architecture(n_inputs, body.layers[:-1] + (head,))

    def head_for(self, task: tasks.Task, source_head: models.Dense | None = None) -> models.Dense:
        """The output layer a task needs: one sigmoid unit for two classes (unless
        `output_activation` says otherwise), softmax (or `output_activation`) over more
        classes, one linear unit per regression target. A given source model's output
        layer is kept when it already fits the task (two softmax units for two classes)."""
        if task.kind != "classification":
            return models.output_layer(task.n_outputs, "linear")
        chosen = self.model.output_activation
        if (chosen is None and source_head is not None and source_head.units == task.n_outputs
                and source_head.activation == "softmax"):
            return models.output_layer(source_head.units, "softmax")
        if task.n_outputs == 2 and chosen in (None, "sigmoid"):
            return models.output_layer(1, "sigmoid")
        return models.output_layer(task.n_outputs, chosen or "softmax")

    def parsed_strategies(self) -> list:
        return [parse_strategy(entry, f"strategies[{i}]", self.head) for i, entry in enumerate(self.strategies)]


class TaskDataError(StudyFileError):
    """A task's data cannot be made; the message starts with the role and field (`target.query`)."""


def _made(table, role: str, source_scaler=None, categories: dict | None = None) -> tasks.Task:
    try:
        return table.make(role, source_scaler, categories)
    except DataError as error:
        field = f"{role}.{error.field}" if error.field else role
        raise TaskDataError(f"{field}: {error}") from None


def _shared_categories(*built) -> dict | None:
    """The categories of every categorical column over the tasks' training rows together."""
    from transferlab.data.encode import merge

    found = [task.provenance["categorical"]["own_categories"] for task in built
             if task is not None and task.provenance.get("categorical")]
    return merge(*found) if found else None


# --- strategies --------------------------------------------------------------------------


def parse_strategy(entry: dict[str, Any], where: str = "strategy", head: str = "by_name"):
    """Build a strategy value from `{"name": ..., **params}`; errors name the field. `head`
    is the study's rule for reused output layers, for a strategy that takes one and does
    not say."""
    name = entry.get("name")
    if name is None:
        raise ValueError(f"{where}.name: missing; choose one of {strategies.describe_strategies()}")
    cls = strategies.STRATEGIES.get(name)
    if cls is None:
        raise ValueError(
            f"{where}.name: unknown strategy {name!r}; choose one of {strategies.describe_strategies()}"
        )
    allowed = strategies.strategy_parameters(cls)
    params = {}
    for key, value in entry.items():
        if key == "name":
            continue
        if key not in allowed:
            valid = ", ".join(allowed) or "none"
            raise ValueError(f"{where}.{key}: {name} has no parameter {key!r} (its parameters: {valid})")
        expected = type(allowed[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ValueError(
                f"{where}.{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}"
            )
        if expected is float and not math.isfinite(value):
            raise ValueError(f"{where}.{key}: {value!r} is not a finite number")
        if expected is int and not -MAX_WIDTH <= value <= MAX_WIDTH:
            raise ValueError(f"{where}.{key}: {value} is outside {-MAX_WIDTH}..{MAX_WIDTH}")
        params[key] = value
    if "head" in allowed and "head" not in params:
        params["head"] = head
    try:
        return cls(**params)
    except strategies.StrategyError as error:
        raise ValueError(f"{where}.{error.parameter}: {error}") from None


def check_strategies(
    config: StudyConfig, source_arch: models.Architecture, head: models.Dense,
    n_inputs: int | None = None, features: tuple[tuple[str, ...] | None, tuple[str, ...]] | None = None,
    classes=None,
) -> list:
    """Parse every strategy and check it applies to the source model, the target's
    `n_inputs` features (the source's when None) and output layer over the study's epochs;
    returns the strategy values. `features` (source names or None, target names) name the
    columns when a strategy needs equal input widths and they differ."""
    parsed, labels = [], {}
    for index, entry in enumerate(config.strategies):
        where = f"strategies[{index}]"
        strategy = parse_strategy(entry, where, config.head)
        try:
            strategy.recipe(source_arch, head, config.training.epochs, n_inputs, classes)
        except strategies.InputWidthError as error:
            raise ValueError(f"{where}: {strategy.label} {_width_problem(error, features)}") from None
        except strategies.StrategyError as error:
            field = f"{where}.{error.parameter}" if error.parameter else where
            raise ValueError(f"{field}: {error}") from None
        if strategy.label in labels:
            raise ValueError(f"{where}: {strategy.label!r} repeats {labels[strategy.label]}; list it once")
        labels[strategy.label] = where
        parsed.append(strategy)
    return parsed


def _width_problem(error, features) -> str:
    """`reuses the source's first layer, which takes 4 features (a, b, c, d), but the target has 3 (a, b, e)`."""
    from transferlab.data.select import listing

    source_names, target_names = features or (None, None)
    source_list = f" ({listing(source_names)})" if source_names else ""
    target_list = f" ({listing(target_names)})" if target_names else ""
    return (f"reuses the source's first layer, which takes {count(error.source_width, 'feature')}{source_list}, but the "
            f"target has {error.target_width}{target_list}; use new_input (a fresh first layer on the target's "
            "features) or standalone, or give both tasks the same features")


# --- loading -----------------------------------------------------------------------------


def load_study(path: str | Path):
    """Read, validate and resolve a study file (a `StudyConfig`, or a `Sweep` when it has a
    `[sweep]` table), or raise one `StudyFileError` line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyFileError(f"{path}: study file not found") from None
    except IsADirectoryError:
        raise StudyFileError(f"{path}: is a folder; give the path of a study file (TOML)") from None
    except UnicodeDecodeError:
        from transferlab.data.read import first_bad_byte

        raise StudyFileError(f"{path}: not UTF-8 text ({first_bad_byte(path)}); save the study file as UTF-8") from None
    except OSError as error:
        raise StudyFileError(f"{path}: cannot read the study file ({error})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudyFileError(f"{path}: not valid TOML: {error}") from None
    if "matrix" in raw:  # every ordered pair of tasks: a `transferlab.sweep.Sweep`
        from transferlab.sweep import matrix_from_dict

        return matrix_from_dict(raw, source=str(path), base_dir=path.parent)
    if "sweep" in raw:  # many studies: `transferlab.sweep.Sweep`
        from transferlab.sweep import sweep_from_dict

        return sweep_from_dict(raw, source=str(path), base_dir=path.parent)
    return study_from_dict(raw, source=str(path), base_dir=path.parent)


def study_from_dict(raw: dict, source: str = "study", base_dir: Path | None = None) -> StudyConfig:
    """Validate a study given as a dict (the Python API's way in); `strategies` may hold
    strategy values (`Finetune(lr=0.1)`) as well as dicts, `source` and `target` `Task`
    objects. The tasks' data are read and made once here; a `source.model_file` is loaded
    (safely) to check that the strategies fit it."""
    raw = dict(raw)
    if isinstance(raw.get("strategies"), list):
        raw["strategies"] = [
            entry if isinstance(entry, dict) else strategies.strategy_to_dict(entry) for entry in raw["strategies"]
        ]
    for role in ("source", "target"):
        if isinstance(raw.get(role), tasks.Task):
            raw[role] = {"kind": "task", "task": raw[role]}
    try:
        config = StudyConfig.model_validate(raw)
    except ValidationError as error:
        raise StudyFileError(f"{source}: {_first_problem(error)}") from None
    _resolve_paths(config, base_dir)
    if config.source.model_file is not None:
        if config.source_repeats != 1:
            raise StudyFileError(
                f"{source}: source_repeats: a study that names source.model_file has one source "
                "model; set source_repeats = 1 or drop model_file to train several"
            )
        if "model" in raw:
            raise StudyFileError(
                f"{source}: model: the architecture comes from source.model_file; remove the "
                "[model] table"
            )
        if config.reverse:
            raise StudyFileError(
                f"{source}: reverse: a reverse study trains source models on the target task; "
                "it cannot reverse a given source.model_file — drop model_file or set reverse = false"
            )
    try:
        built = config.tasks()
    except TaskDataError as error:
        raise StudyFileError(f"{source}: {error}") from None
    if config.source.model_file is not None:
        _check_model_file(config, source)
        return config
    source_task, target_task = built["source"], built["target"]
    try:
        directions = [(source_task, target_task)] + ([(target_task, source_task)] if config.reverse else [])
        for from_task, to_task in directions:
            source_arch = config.architecture(from_task.n_features, config.head_for(from_task))
            check_strategies(config, source_arch, config.head_for(to_task), to_task.n_features,
                             (from_task.feature_names, to_task.feature_names))
    except ValueError as error:
        raise StudyFileError(f"{source}: {error}") from None
    return config


def _resolve_paths(config: StudyConfig, base_dir: Path | None) -> None:
    """File paths in the study are relative to the study file's folder; stored absolute."""
    for table in (config.source, config.target):
        for name in ("model_file", "path", "train_path", "test_path"):
            value = getattr(table, name, None)
            if value is None:
                continue
            path = Path(value).expanduser()
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            setattr(table, name, str(path.resolve()))


def _check_model_file(config: StudyConfig, source: str) -> None:
    """The strategies must fit the given source model (its errors name the model file)."""
    model_file = config.source.model_file
    arch = models.architecture_of(models.load_model_file(model_file), source=model_file)
    built = config.tasks()
    target_task = built["target"]
    source_names = built["source"].feature_names if built["source"] is not None else None
    if built["source"] is not None and built["source"].n_features != arch.n_inputs:
        raise StudyFileError(
            f"{source}: source: the source task has {count(built['source'].n_features, 'feature')} but "
            f"{Path(model_file).name} takes {arch.n_inputs}; describe the task the model was trained on, "
            "or leave only model_file in [source]")
    try:
        check_strategies(config, arch, config.head_for(target_task, arch.head), target_task.n_features,
                         (source_names, target_task.feature_names))
    except ValueError as error:
        raise StudyFileError(f"{source}: {error} (source model {Path(model_file).name}: {arch.describe()})") from None


def _first_problem(error: ValidationError) -> str:
    """Every problem pydantic found, each as one clause: the first in full, then the others."""
    texts = [_problem_text(problem) for problem in error.errors()]
    if len(texts) == 1:
        return texts[0]
    return f"{texts[0]} (and {len(texts) - 1} more problem{'s' if len(texts) > 2 else ''}: {'; '.join(texts[1:])})"


def _problem_text(problem: dict) -> str:
    where = _dotted(problem["loc"])
    kind = problem["type"]
    if kind == "missing":
        return f"{where}: missing; this field is required"
    if kind == "extra_forbidden":
        return f"{where}: unknown field; check the spelling against the study-file format in the README"
    if kind in ("less_than_equal", "too_long") and problem["loc"]:
        field = next((part for part in reversed(problem["loc"]) if isinstance(part, str)), "")
        reason = _CEILING_REASONS.get(field, "a ceiling that catches typos before they exhaust memory")
        limit = problem.get("ctx", {}).get("le", problem.get("ctx", {}).get("max_length"))
        shown = problem["input"] if kind == "less_than_equal" else f"{len(problem['input'])} entries"
        return f"{where}: {shown} is above the ceiling of {limit} ({reason})"
    message = problem["msg"].removeprefix("Value error, ")
    if "input" in problem and kind.endswith("_type"):
        message += f", got {type(problem['input']).__name__} {problem['input']!r}"
    return f"{where}: {message}" if where else message


_WIDTH_REASON = "one layer that wide needs gigabytes per model"
_CEILING_REASONS = {
    "seed": "seeds are 32-bit, as scikit-learn and NumPy take them",
    "epochs": "every epoch's curves are stored for every run",
    "hidden": _WIDTH_REASON,
    "n_features": _WIDTH_REASON,
    "n_informative": _WIDTH_REASON,
    "centers": _WIDTH_REASON,
    "n_targets": _WIDTH_REASON,
    "n_samples": "the data are generated in memory",
    "batch_size": "a batch cannot exceed the largest data set",
    "repeats": "each run is planned in the database before training",
    "source_repeats": "each source model is saved as a file",
    "shard_size": "a shard's row orders are held in memory",
}


def _dotted(loc: tuple) -> str:
    text = ""
    for index, part in enumerate(loc):
        if index == 1 and loc[0] in ("source", "target") and part in TASK_KINDS:
            continue  # the union's tag, not a field the user wrote
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


# --- writing -----------------------------------------------------------------------------


def as_toml(config: dict) -> str:
    """The stored configuration, shown back in study-file form."""
    lines = []
    tables = {k: v for k, v in config.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in config.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    for key, value in config.items():
        if key not in tables and key not in arrays:
            lines.append(f"{key} = {toml_value(value)}")
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None]
    for name, entries in arrays.items():
        for entry in entries:
            lines.append(f"\n[[{name}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    """A bare key where TOML allows one, else quoted (`"target.n_train"`)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def toml_value(value) -> str:
    """One value as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. a Task object's summary
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    return repr(value)
