"""Study files: TOML parsed and validated into a `StudyConfig`.

Every problem becomes one `StudyFileError` line naming the file, the field and what
is expected, e.g. `study.toml: strategies[2].freeze: 3 is larger than the number of
hidden layers (2)`.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from transferlab import models, optimizers, strategies, tasks
from transferlab.engine import BN_FROZEN_MODES, SGDConfig


class StudyFileError(ValueError):
    """A study file that cannot run; the message is one line that says where and what to do."""


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


class BlobsTask(BaseModel):
    """A `make_blobs` classification task: the tutorial's parameters are the defaults."""

    model_config = _STRICT
    kind: Literal["blobs"] = "blobs"
    seed: Seed
    n_samples: Samples = 1000
    centers: Annotated[int, Field(ge=2, le=MAX_WIDTH)] = 3
    n_features: Width = 2
    cluster_std: Annotated[Finite, Field(gt=0)] = 2.0
    n_train: PositiveInt = 500

    @model_validator(mode="after")
    def _train_split_fits(self):
        return _check_split(self)

    def make(self, name: str) -> tasks.Task:
        return tasks.generate(self.kind, self.generator_params(), name)

    def generator_params(self) -> dict:
        """The generator's arguments (`tasks.generate`): every field but the kind."""
        return self.model_dump(exclude={"kind", "model_file"})

    def describe(self) -> str:
        return f"blobs(seed={self.seed})"


class RegressionTask(BaseModel):
    """A `make_regression` task; different seeds give different coefficients."""

    model_config = _STRICT
    kind: Literal["regression"]
    seed: Seed
    n_samples: Samples = 1000
    n_features: Width = 2
    n_informative: Width | None = None
    n_targets: Width = 1
    noise: Annotated[Finite, Field(ge=0)] = 10.0
    n_train: PositiveInt = 500

    @model_validator(mode="after")
    def _train_split_fits(self):
        if self.n_informative is not None and self.n_informative > self.n_features:
            raise ValueError(
                f"n_informative ({self.n_informative}) cannot exceed n_features ({self.n_features})"
            )
        return _check_split(self)

    make = BlobsTask.make
    generator_params = BlobsTask.generator_params

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
    model_file: str | None = None


class RegressionSource(_ModelFileSource, RegressionTask):
    seed: Seed | None = None
    model_file: str | None = None


TASK_KINDS = ("blobs", "regression")


def _task_kind(value) -> str:
    return value.get("kind", "blobs") if isinstance(value, dict) else getattr(value, "kind", "blobs")


def _task_union(blobs: type, regression: type):
    return Annotated[
        Annotated[blobs, Tag("blobs")] | Annotated[regression, Tag("regression")],
        Discriminator(
            _task_kind,
            custom_error_type="unknown_kind",
            custom_error_message="kind must be one of " + ", ".join(repr(k) for k in TASK_KINDS),
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


class TrainingConfig(BaseModel):
    """Optimizer and `fit` settings. Defaults are Keras': `SGD()` (learning rate 0.01) and
    `fit` (batch size 32), with the tutorial's 100 epochs; `optimizer = "adam"`, `"adamw"`
    or `"rmsprop"` takes that Keras optimizer's parameters, each defaulting as Keras does
    (`optimizers.DEFAULTS`). A parameter the chosen optimizer does not take is an error."""

    model_config = _STRICT
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 100
    batch_size: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] = 32
    optimizer: Literal[optimizers.OPTIMIZERS] = "sgd"
    learning_rate: Annotated[Finite, Field(gt=0)] | None = None
    momentum: Annotated[Finite, Field(ge=0, lt=1)] | None = None
    nesterov: bool | None = None
    beta_1: Annotated[Finite, Field(ge=0, lt=1)] | None = None
    beta_2: Annotated[Finite, Field(ge=0, lt=1)] | None = None
    epsilon: Annotated[Finite, Field(gt=0)] | None = None
    amsgrad: bool | None = None
    rho: Annotated[Finite, Field(ge=0, lt=1)] | None = None
    centered: bool | None = None
    weight_decay: Annotated[Finite, Field(ge=0)] | None = None
    clipnorm: Annotated[Finite, Field(gt=0)] | None = None
    clipvalue: Annotated[Finite, Field(gt=0)] | None = None
    global_clipnorm: Annotated[Finite, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_clipping(self):
        given = [name for name in optimizers.CLIPPING if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of clipnorm, clipvalue and global_clipnorm, not {' and '.join(given)} (Keras takes one)")
        return self

    @field_validator(*optimizers.PARAMETERS)
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

    def sgd(self) -> SGDConfig:
        """The resolved settings the engine trains with (every default filled in)."""
        names = optimizers.PARAMETERS + optimizers.CLIPPING
        given = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        return SGDConfig(
            epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
            **{**optimizers.DEFAULTS[self.optimizer], **given},
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

    @field_validator("memory")
    @classmethod
    def _a_size(cls, value):
        if value is not None and parse_size(value) < 2**20:
            raise ValueError(f"{value!r} is below 1 MiB; give the memory the study may use, e.g. \"2 GB\"")
        return value

    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_size(self.memory)


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
    source: SourceConfig
    target: TaskConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    strategies: Annotated[list[dict[str, Any]], Field(min_length=1)]
    execution: ExecutionConfig = ExecutionConfig()

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
        return [parse_strategy(entry, f"strategies[{i}]") for i, entry in enumerate(self.strategies)]


# --- strategies --------------------------------------------------------------------------


def parse_strategy(entry: dict[str, Any], where: str = "strategy"):
    """Build a strategy value from `{"name": ..., **params}`; errors name the field."""
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
    try:
        return cls(**params)
    except strategies.StrategyError as error:
        raise ValueError(f"{where}.{error.parameter}: {error}") from None


def check_strategies(
    config: StudyConfig, source_arch: models.Architecture, head: models.Dense
) -> list:
    """Parse every strategy and check it applies to the source model and the target's output
    layer over the study's epochs; returns the strategy values."""
    parsed, labels = [], {}
    for index, entry in enumerate(config.strategies):
        where = f"strategies[{index}]"
        strategy = parse_strategy(entry, where)
        try:
            strategy.recipe(source_arch, head, config.training.epochs)
        except strategies.StrategyError as error:
            field = f"{where}.{error.parameter}" if error.parameter else where
            raise ValueError(f"{field}: {error}") from None
        if strategy.label in labels:
            raise ValueError(f"{where}: {strategy.label!r} repeats {labels[strategy.label]}; list it once")
        labels[strategy.label] = where
        parsed.append(strategy)
    return parsed


# --- loading -----------------------------------------------------------------------------


def load_study(path: str | Path) -> StudyConfig:
    """Read, validate and resolve a study file, or raise one `StudyFileError` line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyFileError(f"{path}: study file not found") from None
    except IsADirectoryError:
        raise StudyFileError(f"{path}: is a folder; give the path of a study file (TOML)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise StudyFileError(f"{path}: cannot read the study file ({error})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudyFileError(f"{path}: not valid TOML: {error}") from None
    return study_from_dict(raw, source=str(path), base_dir=path.parent)


def study_from_dict(raw: dict, source: str = "study", base_dir: Path | None = None) -> StudyConfig:
    """Validate a study given as a dict (the Python API's way in); `strategies` may hold
    strategy values (`Finetune(lr=0.1)`) as well as dicts. A `source.model_file` is loaded
    (safely) to check that the strategies fit it."""
    if isinstance(raw.get("strategies"), list):
        raw = {
            **raw,
            "strategies": [
                entry if isinstance(entry, dict) else strategies.strategy_to_dict(entry)
                for entry in raw["strategies"]
            ],
        }
    try:
        config = StudyConfig.model_validate(raw)
    except ValidationError as error:
        raise StudyFileError(f"{source}: {_first_problem(error)}") from None
    if config.source.model_file is not None:
        model_path = Path(config.source.model_file)
        if base_dir is not None and not model_path.is_absolute():
            model_path = (base_dir / model_path).resolve()
        config.source.model_file = str(model_path)
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
        _check_model_file(config, source)
    else:
        source_task, target_task = config.source.make("source"), config.target.make("target")
        try:
            try:
                check_input_width(source_task.n_features, target_task.n_features, "source task", "target task")
            except ValueError as error:
                raise ValueError(f"target: {error}") from None
            directions = [(source_task, target_task)] + ([(target_task, source_task)] if config.reverse else [])
            for from_task, to_task in directions:
                source_arch = config.architecture(from_task.n_features, config.head_for(from_task))
                check_strategies(config, source_arch, config.head_for(to_task))
        except ValueError as error:
            raise StudyFileError(f"{source}: {error}") from None
    return config


def _check_model_file(config: StudyConfig, source: str) -> None:
    """The strategies must fit the given source model (its errors name the model file)."""
    model_file = config.source.model_file
    arch = models.architecture_of(models.load_model_file(model_file), source=model_file)
    target_task = config.target.make("target")
    check_model_fits(arch, target_task, model_file)
    try:
        check_strategies(config, arch, config.head_for(target_task, arch.head))
    except ValueError as error:
        raise StudyFileError(f"{source}: {error} (source model {Path(model_file).name}: {arch.describe()})") from None


def check_model_fits(arch: models.Architecture, target_task: tasks.Task, model_file: str) -> None:
    """A given source model must take the target's input features (its error names the file)."""
    try:
        check_input_width(arch.n_inputs, target_task.n_features, "source model", "target task")
    except ValueError as error:
        raise models.ModelFileError(f"{model_file}: {error}") from None


def check_input_width(source_width: int, target_width: int, source_name: str, target_name: str) -> None:
    """Reuse needs the same input features; only `standalone` fits another input width."""
    if source_width != target_width:
        raise ValueError(
            f"the {source_name} has {source_width} input features but the {target_name} has "
            f"{target_width}; no reuse strategy adapts the input layer (only standalone fits): use a "
            f"source with {target_width} features"
        )


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = _dotted(problem["loc"])
    others = error.error_count() - 1
    suffix = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    kind = problem["type"]
    if kind == "missing":
        return f"{where}: missing; this field is required{suffix}"
    if kind == "extra_forbidden":
        return f"{where}: unknown field; check the spelling against the study-file format in the README{suffix}"
    if kind in ("less_than_equal", "too_long") and problem["loc"]:
        field = next((part for part in reversed(problem["loc"]) if isinstance(part, str)), "")
        reason = _CEILING_REASONS.get(field, "a ceiling that catches typos before they exhaust memory")
        limit = problem.get("ctx", {}).get("le", problem.get("ctx", {}).get("max_length"))
        shown = problem["input"] if kind == "less_than_equal" else f"{len(problem['input'])} entries"
        return f"{where}: {shown} is above the ceiling of {limit} ({reason}){suffix}"
    message = problem["msg"].removeprefix("Value error, ")
    if "input" in problem and kind.endswith("_type"):
        message += f", got {type(problem['input']).__name__} {problem['input']!r}"
    return f"{where}: {message}{suffix}" if where else f"{message}{suffix}"


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
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items() if v is not None]
    for name, entries in arrays.items():
        for entry in entries:
            lines.append(f"\n[[{name}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines)


def toml_value(value) -> str:
    """One value as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)
