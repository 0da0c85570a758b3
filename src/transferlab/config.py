"""The study-file schema: what a study file may say, checked field by field.

Pure: validating a study reads no file and loads no JAX. `study_schema()` is the
`StudyConfig` model with the `[[strategies]]` entries of every registered strategy (a
pydantic union told apart by `name`); `describe_problems` turns pydantic's findings into
one line naming the field, e.g. `strategies[2].freeze: 3 is outside 0..2`. Reading the
file, the data and a model file is `transferlab.loading`'s work.
"""

from __future__ import annotations

import re
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

from transferlab import initializers, layers, optimizers, strategies, tasks
from transferlab.errors import StrategyError
from transferlab.layers import BN_FROZEN_MODES

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


class ShapesTask(_Generated):
    """Generated images of simple shapes (`transferlab.data.images.generated_shapes`), one
    class per shape; the drawing parameters (outline or filled, thickness, noise, sizes,
    jitter, colour) make two tasks differ. Standardised per channel by default."""

    kind: Literal["shapes"]
    seed: Seed
    n_samples: Samples = 1000
    n_train: PositiveInt = 500
    image_size: Annotated[int, Field(ge=4, le=128)] = 16
    n_classes: Annotated[int, Field(ge=2, le=5)] = 4
    channels: Literal[1, 3] = 1
    filled: bool = False
    thickness: Annotated[Finite, Field(gt=0, le=16)] = 1.5
    noise: Annotated[Finite, Field(ge=0, le=10)] = 0.1
    size_min: Annotated[Finite, Field(gt=0, le=1)] = 0.4
    size_max: Annotated[Finite, Field(gt=0, le=1)] = 0.8
    jitter: Annotated[Finite, Field(ge=0, le=0.5)] = 0.1
    GENERATOR_FIELDS: ClassVar[tuple] = ("seed", "n_samples", "n_train", "image_size", "n_classes", "channels",
                                         "filled", "thickness", "noise", "size_min", "size_max", "jitter")
    DEFAULT_STANDARDIZE: ClassVar[bool] = True

    @model_validator(mode="after")
    def _sizes(self):
        if self.size_min > self.size_max:
            raise ValueError(f"size_min ({self.size_min}) must not exceed size_max ({self.size_max})")
        if self.n_samples * self.image_size ** 2 * self.channels > MAX_VALUES:
            raise ValueError(f"n_samples × image_size² × channels is above {MAX_VALUES:,} values; use fewer or "
                             "smaller images")
        if self.n_train >= self.n_samples:
            raise ValueError(f"n_train ({self.n_train}) must be smaller than n_samples ({self.n_samples}) "
                             "to leave rows for the test split")
        return self

    def describe(self) -> str:
        return f"shapes(seed={self.seed})"


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


    def dataset_options(self, categories: dict | None = None) -> dict:
        """The dataset options (`data.build.Options`) this table gives; `categories` are the
        categorical columns' categories over both tasks."""
        return self.options(
            target=None if self.target is None else (self.target if isinstance(self.target, str) else tuple(self.target)),
            features=None if self.features is None else tuple(self.features),
            drop=tuple(self.drop or ()), task=self.task, n_train=self.n_train, split_column=self.split_column,
            train=self.train, test=self.test, seed=self.seed,
            categorical=None if self.categorical is None else tuple(self.categorical), categories=categories,
            na_values=None if self.na_values is None else tuple(self.na_values),
            parse_dates=None if self.parse_dates is None else tuple(self.parse_dates),
        )


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
    """One of the datasets scikit-learn ships (no download); `shape = "image"` reads digits
    as 8×8×1 images."""

    kind: Literal["sklearn"]
    dataset: Literal["iris", "digits", "wine", "breast_cancer", "diabetes", "linnerud"] | None = None
    shape: Literal["table", "image"] = "table"

    @model_validator(mode="after")
    def _named(self):
        if self.dataset is None and self.model_file is None:
            raise ValueError("give dataset = one of iris, digits, wine, breast_cancer, diabetes, linnerud")
        return self

    @property
    def given(self) -> bool:
        return self.dataset is not None



class ImagesTask(_FileDataset):
    """A folder of images, one subfolder per class (`keras.utils.image_dataset_from_directory`'s
    layout): `image_size = [height, width]` resizes every image (else they must share a
    size), `color_mode` is grayscale, rgb (Keras' default) or rgba, `rescale` multiplies
    the values (e.g. 1/255); then each channel is standardised by default."""

    kind: Literal["images"]
    image_size: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=2, max_length=2)] | None = None
    color_mode: Literal["grayscale", "rgb", "rgba"] = "rgb"
    rescale: Finite | None = None

    def keys(self) -> dict:
        return {"image_size": None if self.image_size is None else tuple(self.image_size),
                "color_mode": self.color_mode, "rescale": self.rescale}


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


class ShapesSource(_ModelFileSource, ShapesTask):
    seed: Seed | None = None


TASK_KINDS = ("blobs", "regression", "shapes", "csv", "parquet", "npz", "sklearn", "images", "task")
DATA_TASKS = {"csv": CsvTask, "parquet": ParquetTask, "npz": NpzTask, "sklearn": SklearnTask, "images": ImagesTask,
              "task": GivenTask}


def _task_kind(value) -> str:
    if isinstance(value, tasks.Task):
        return "task"
    return value.get("kind", "blobs") if isinstance(value, dict) else getattr(value, "kind", "blobs")


def _task_union(blobs: type, regression: type, shapes: type):
    members = [Annotated[blobs, Tag("blobs")], Annotated[regression, Tag("regression")],
               Annotated[shapes, Tag("shapes")]]
    members += [Annotated[cls, Tag(kind)] for kind, cls in DATA_TASKS.items()]
    return Annotated[
        Union[tuple(members)],
        Discriminator(
            _task_kind,
            custom_error_type="unknown_kind",
            custom_error_message="kind must be one of " + ", ".join(repr(k) for k in TASK_KINDS[:-1]),
        ),
    ]


TaskConfig = _task_union(BlobsTask, RegressionTask, ShapesTask)
SourceConfig = _task_union(BlobsSource, RegressionSource, ShapesSource)


_MLP_FIELDS = ("hidden", "activation", "kernel_initializer", "batch_norm", "dropout")


class ModelConfig(BaseModel):
    """The hidden layers, then an output layer sized to the task. Either the tutorial's MLP
    (`hidden` Dense layers, each optionally followed by BatchNormalization and Dropout) or
    an explicit `layers` list of layer tables (convolutions and pooling on image tasks;
    `input_shape`, when given, must be the task's row shape, e.g. `[8, 8, 1]`). The output layer: for two classes one
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
    input_shape: Annotated[list[Annotated[int, Field(ge=1, le=MAX_SAMPLES)]], Field(min_length=1, max_length=3)] | None = None

    @model_validator(mode="after")
    def _known_names(self):
        if self.layers is not None:
            given = [name for name in _MLP_FIELDS if name in self.model_fields_set]
            if given:
                raise ValueError(f"give either layers or {given[0]} (layers lists every hidden layer)")
            for index, entry in enumerate(self.layers):
                spec = layers.from_dict(entry, f"layers[{index}]")
                if isinstance(spec, layers.Dense) and spec.units > MAX_WIDTH:
                    raise ValueError(f"layers[{index}].units: {spec.units} is above {MAX_WIDTH}")
        for field in ("activation", "output_activation"):
            if getattr(self, field) is not None and getattr(self, field) not in layers.ACTIVATIONS:
                raise ValueError(
                    f"{field} {getattr(self, field)!r} is not supported; use one of "
                    + ", ".join(layers.ACTIVATIONS)
                )
        if self.kernel_initializer not in initializers.INITIALIZERS:
            raise ValueError(
                f"kernel_initializer {self.kernel_initializer!r} is not supported; use one of "
                + ", ".join(initializers.INITIALIZERS)
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



class ReportConfig(BaseModel):
    """How the report reads the results (never part of the study's identity: changing it
    and running `transferlab report` again is fine)."""

    model_config = _STRICT
    threshold: Finite | None = None  # time to threshold: default 95% of standalone's final mean


class ScoresConfig(BaseModel):
    """Which features the transferability scores read (`transferlab.scores`): the output of
    hidden layer `layer` of the source model, counted as strategies count layers; default
    the last hidden layer (the output layer's input). Never part of the study's identity:
    the next `transferlab run` recomputes the scores when it changes."""

    model_config = _STRICT
    layer: Annotated[int, Field(ge=1)] | None = None


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
    strategies: Annotated[list[Any], Field(min_length=1)]  # entries: `study_schema()` types them
    execution: ExecutionConfig = ExecutionConfig()
    report: ReportConfig = ReportConfig()
    scores: ScoresConfig = ScoresConfig()
    _strategies: list = PrivateAttr(default_factory=list)
    _plan: tuple | None = PrivateAttr(default=None)  # (the config it was built for, the plan): `plan.plan_of`

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

    @model_validator(mode="after")
    def _safe_name(self):
        if not STUDY_NAME.fullmatch(self.name):
            raise ValueError(
                f"name {self.name!r} is not a safe folder name (it names the output folder): use 1 to 100 "
                "letters, digits, spaces, '.', '_' or '-', starting with a letter or digit and ending with neither "
                "a dot nor a space"
            )
        return self


    @model_validator(mode="after")
    def _strategy_values(self):
        """Each entry as its strategy value (parameters a strategy refuses are named), once."""
        values, labels = [], {}
        for index, entry in enumerate(self.strategies):
            where = f"strategies[{index}]"
            try:
                strategy = strategies.from_entry(entry, self.head)
            except StrategyError as error:
                raise ValueError(f"{where}.{error.parameter}: {error}" if error.parameter else f"{where}: {error}")
            if strategy.label in labels:
                raise ValueError(f"{where}: {strategy.label!r} repeats {labels[strategy.label]}; list it once")
            labels[strategy.label] = where
            values.append(strategy)
        self._strategies = values
        return self

    @field_serializer("strategies")
    def _as_written(self, entries: list) -> list[dict]:
        """The entries as the study wrote them (defaults it left out stay out)."""
        return [entry.model_dump(exclude_unset=True) if isinstance(entry, BaseModel) else entry for entry in entries]

    @classmethod
    def model_validate(cls, obj, **kwargs):
        """Validated against `study_schema()` (the registered strategies) when called on
        `StudyConfig` itself."""
        if cls is StudyConfig:
            return study_schema().model_validate(obj, **kwargs)
        return super().model_validate(obj, **kwargs)

    def strategy_values(self) -> list[strategies.Strategy]:
        """The strategies, as values (`Transfer(freeze=1)`), in the study's order."""
        return list(self._strategies)


def study_schema() -> type[StudyConfig]:
    """`StudyConfig` with the `[[strategies]]` entries of every strategy registered now."""
    version = strategies.REGISTRY.version
    if _SCHEMAS.get("version") != version:
        entry = strategies.entry_schema()
        _SCHEMAS.update(version=version, model=create_model(
            "StudyConfig", __base__=StudyConfig, __module__=__name__,
            strategies=(Annotated[list[entry], Field(min_length=1)], ...)))
    return _SCHEMAS["model"]


_SCHEMAS: dict = {}


def describe_problems(error: ValidationError) -> str:
    """Every problem pydantic found, each as one clause: the first in full, then the others."""
    texts = [_problem_text(problem) for problem in error.errors()]
    if len(texts) == 1:
        return texts[0]
    return f"{texts[0]} (and {len(texts) - 1} more problem{'s' if len(texts) > 2 else ''}: {'; '.join(texts[1:])})"


def _problem_text(problem: dict) -> str:
    where = _dotted(problem["loc"])
    kind = problem["type"]
    loc = problem["loc"]
    if kind == "unknown_strategy":
        name = problem["input"].get("name") if isinstance(problem["input"], dict) else None
        known = strategies.describe_strategies()
        if name is None:
            return f"{where}.name: missing; choose one of {known}"
        return (f"{where}.name: unknown strategy {name!r}; choose one of {known}; for a strategy of your own, "
                "load its file first (transferlab --extension FILE.py ...) or install its package")
    if kind == "extra_forbidden" and loc[0] == "strategies" and len(loc) == 4:
        allowed = ", ".join(strategies.strategy_parameters(strategies.strategy_class(loc[2]))) or "none"
        return f"{where}: {loc[2]} has no parameter {loc[3]!r} (its parameters: {allowed})"
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
    if "input" in problem and (kind.endswith("_type") or kind == "finite_number"):
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
    "units": _WIDTH_REASON,
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
        if index == 2 and loc[0] == "strategies":
            continue  # the strategy's name: the union's tag
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
