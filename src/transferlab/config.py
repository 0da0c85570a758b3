"""Study files: TOML parsed and validated into a `StudyConfig`.

Every problem becomes one `StudyFileError` line naming the file, the field and what
is expected, e.g. `study.toml: strategies[2].freeze: 3 is larger than the number of
hidden layers (2)`.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from transferlab import models, strategies, tasks
from transferlab.engine import SGDConfig


class StudyFileError(ValueError):
    """A study file that cannot run; the message is one line that says where and what to do."""


_STRICT = ConfigDict(extra="forbid", strict=True)
PositiveInt = Annotated[int, Field(ge=1)]


class TaskConfig(BaseModel):
    """A `make_blobs` task: the tutorial's parameters are the defaults."""

    model_config = _STRICT
    kind: Literal["blobs"] = "blobs"
    seed: int
    n_samples: Annotated[int, Field(ge=2)] = 1000
    centers: Annotated[int, Field(ge=2)] = 3
    n_features: PositiveInt = 2
    cluster_std: Annotated[float, Field(gt=0)] = 2.0
    n_train: PositiveInt = 500

    @model_validator(mode="after")
    def _train_split_fits(self):
        if self.n_train >= self.n_samples:
            raise ValueError(
                f"n_train ({self.n_train}) must be smaller than n_samples ({self.n_samples}) "
                "to leave rows for the test split"
            )
        return self

    def make(self, name: str) -> tasks.Task:
        return tasks.blobs(
            seed=self.seed,
            n_samples=self.n_samples,
            centers=self.centers,
            n_features=self.n_features,
            cluster_std=self.cluster_std,
            n_train=self.n_train,
            name=name,
        )


class SourceConfig(TaskConfig):
    """The source task; or `model_file`, an existing `.keras` source model (then `seed` is optional)."""

    seed: int | None = None
    model_file: str | None = None

    @model_validator(mode="after")
    def _task_or_file(self):
        if self.seed is None and self.model_file is None:
            raise ValueError("give the source task's seed, or model_file = a .keras source model")
        return self


class ModelConfig(BaseModel):
    """The tutorial's MLP: hidden Dense layers, then a softmax output sized to the task."""

    model_config = _STRICT
    hidden: Annotated[list[PositiveInt], Field(min_length=1)] = [5, 5]
    activation: str = "relu"
    kernel_initializer: str = "he_uniform"
    output_activation: str = "softmax"

    @model_validator(mode="after")
    def _known_names(self):
        for field in ("activation", "output_activation"):
            if getattr(self, field) not in models.ACTIVATIONS:
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
    """SGD settings; defaults are Keras' SGD and fit defaults and the tutorial's 100 epochs."""

    model_config = _STRICT
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 32
    learning_rate: Annotated[float, Field(gt=0)] = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False

    def sgd(self) -> SGDConfig:
        return SGDConfig(**self.model_dump())


class ExecutionConfig(BaseModel):
    """How runs are grouped for the engine; changes speed and memory, never results."""

    model_config = _STRICT
    shard_size: PositiveInt = 256


class StudyConfig(BaseModel):
    """A whole study: tasks, model, training, strategies and repeats."""

    model_config = _STRICT
    name: str
    seed: Annotated[int, Field(ge=0)] = 1
    repeats: PositiveInt = 30
    source_repeats: PositiveInt = 1
    source: SourceConfig
    target: TaskConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    strategies: Annotated[list[dict[str, Any]], Field(min_length=1)]
    execution: ExecutionConfig = ExecutionConfig()

    def sha256(self) -> str:
        """Hash of everything that decides the results (not `execution`, which only sets speed)."""
        content = self.model_dump(mode="json", exclude={"execution"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def architecture(self, n_inputs: int, n_outputs: int) -> models.Architecture:
        return models.mlp(
            n_inputs,
            tuple(self.model.hidden),
            n_outputs,
            activation=self.model.activation,
            kernel_initializer=self.model.kernel_initializer,
            output_activation=self.model.output_activation,
        )

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
        params[key] = value
    return cls(**params)


def check_strategies(config: StudyConfig, arch: models.Architecture) -> list:
    """Parse every strategy and check it fits the architecture; returns the strategy values."""
    parsed, labels = [], {}
    for index, entry in enumerate(config.strategies):
        where = f"strategies[{index}]"
        strategy = parse_strategy(entry, where)
        try:
            strategy.recipe(arch, 1)
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
    except (OSError, UnicodeDecodeError) as error:
        raise StudyFileError(f"{path}: cannot read the study file ({error})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudyFileError(f"{path}: not valid TOML: {error}") from None
    return study_from_dict(raw, source=str(path), base_dir=path.parent)


def study_from_dict(raw: dict, source: str = "study", base_dir: Path | None = None) -> StudyConfig:
    """Validate a study given as a dict (the Python API's way in)."""
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
    else:
        task = config.source
        if (task.n_features, task.centers) != (config.target.n_features, config.target.centers):
            raise StudyFileError(
                f"{source}: target: the source task has {task.n_features} features and "
                f"{task.centers} classes but the target has {config.target.n_features} and "
                f"{config.target.centers}; this version transfers between tasks of the same shape"
            )
        arch = config.architecture(config.target.n_features, config.target.centers)
        try:
            check_strategies(config, arch)
        except ValueError as error:
            raise StudyFileError(f"{source}: {error}") from None
    return config


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
    message = problem["msg"].removeprefix("Value error, ")
    if "input" in problem and kind.endswith("_type"):
        message += f", got {type(problem['input']).__name__} {problem['input']!r}"
    return f"{where}: {message}{suffix}" if where else f"{message}{suffix}"


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
