"""Loading a study: its file read, its schema checked, its data, model file and plan made, once.

This is the edge. `read_study_file` turns a TOML file into a dict (every problem one
`StudyFileError` line naming the file); `study_from_dict` validates a dict against the
schema (`transferlab.config`), resolves file paths against the study file's folder,
applies the rules that need more than one field, then builds the plan — reading the
data, loading a `source.model_file` safely and checking every strategy against the
source model — so that running, estimating and reporting the study trust it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from transferlab import config as schema
from transferlab import models, plan, strategies, tasks
from transferlab.errors import StudyFileError


def read_study_file(path: str | Path) -> dict:
    """A study file's TOML as a dict, or one `StudyFileError` line naming the file."""
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
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudyFileError(f"{path}: not valid TOML: {error}") from None


def study_from_dict(raw: dict, source: str = "study", base_dir: Path | None = None) -> schema.StudyConfig:
    """Validate and load a study given as a dict (the Python API's way in); `strategies`
    may hold strategy values (`Finetune(lr=0.1)`) as well as dicts, `source` and `target`
    `Task` objects. Its plan is built here (data read, model file loaded, strategies
    checked) and kept: `plan.plan_of(config)` returns it."""
    config = validate(raw, source, base_dir)
    given = None
    if config.source.model_file is not None:
        given = models.load_model_file(config.source.model_file)
    try:
        plan.plan_of(config, given)
    except StudyFileError as error:
        raise StudyFileError(f"{source}: {error}") from None
    return config


def validate(raw: dict, source: str = "study", base_dir: Path | None = None) -> schema.StudyConfig:
    """The schema's checks and the rules between fields, with paths resolved; no data read."""
    raw = dict(raw)
    if isinstance(raw.get("strategies"), list):
        raw["strategies"] = [entry if isinstance(entry, dict) else strategies.strategy_to_dict(entry)
                             for entry in raw["strategies"]]
    for role in ("source", "target"):
        if isinstance(raw.get(role), tasks.Task):
            raw[role] = {"kind": "task", "task": raw[role]}
    try:
        config = schema.study_schema().model_validate(raw)
    except ValidationError as error:
        raise StudyFileError(f"{source}: {schema.describe_problems(error)}") from None
    _resolve_paths(config, base_dir)
    if config.source.model_file is not None:
        _check_model_file_rules(config, raw, source)
    return config


def _check_model_file_rules(config: schema.StudyConfig, raw: dict, source: str) -> None:
    """A given source model is one model, its own architecture, and one direction."""
    if config.source_repeats != 1:
        raise StudyFileError(f"{source}: source_repeats: a study that names source.model_file has one source "
                             "model; set source_repeats = 1 or drop model_file to train several")
    if "model" in raw:
        raise StudyFileError(f"{source}: model: the architecture comes from source.model_file; remove the "
                             "[model] table")
    if config.reverse:
        raise StudyFileError(f"{source}: reverse: a reverse study trains source models on the target task; it "
                             "cannot reverse a given source.model_file — drop model_file or set reverse = false")


def _resolve_paths(config: schema.StudyConfig, base_dir: Path | None) -> None:
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
