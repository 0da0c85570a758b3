"""The Python API in one place: load a study, run it, report it, read its results.

    >>> import transferlab
    >>> results = transferlab.run("examples/tutorial.toml", "runs/tutorial")  # doctest: +SKIP
    >>> results.verdict[["strategy", "outcome", "diff"]]  # doctest: +SKIP

Running, reporting and reading results configure the process on first use
(`transferlab.configure`), so nothing else is needed before the first call; loading a
study needs no JAX and loads none. Refusals raise `transferlab.errors.TransferlabError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from transferlab.config import StudyConfig
from transferlab.loading import read_study_file, study_from_dict
from transferlab.sweep import Sweep, matrix_from_dict, sweep_from_dict

if TYPE_CHECKING:  # the report's modules load matplotlib: imported when a report is written
    from transferlab.reports import Outputs
    from transferlab.sweep_report import SweepOutputs
    from transferlab.tasks import Task


def load_study(study: str | Path | dict) -> StudyConfig | Sweep:
    """Read and validate a study: its file, data, model file and plan.

    Parameters
    ----------
    study : str, Path or dict
        A study file (TOML; paths in it are relative to its folder), or the same content
        as a dict (`source` and `target` may be `Task` objects, `strategies` may hold
        strategy values such as `Finetune(lr=0.1)`).

    Returns
    -------
    StudyConfig or Sweep
        The validated study; a `Sweep` when it has a `[sweep]` or `[matrix]` table.

    Raises
    ------
    StudyFileError
        One line naming the file and the field at fault.

    Examples
    --------
    >>> config = transferlab.load_study("examples/tutorial.toml")  # doctest: +SKIP
    >>> config.repeats  # doctest: +SKIP
    30
    """
    if isinstance(study, dict):
        raw, source, base_dir = study, "study", None
    else:
        path = Path(study)
        raw, source, base_dir = read_study_file(path), str(path), path.parent
    if "matrix" in raw:  # every ordered pair of tasks
        return matrix_from_dict(raw, source=source, base_dir=base_dir)
    if "sweep" in raw:  # many studies
        return sweep_from_dict(raw, source=source, base_dir=base_dir)
    return study_from_dict(raw, source=source, base_dir=base_dir)


def run(study: str | Path | dict | StudyConfig | Sweep, out: str | Path, *, report: bool = True) -> Results:
    """Run a study (or resume it: finished runs are kept) into the folder `out`.

    Parameters
    ----------
    study : str, Path, dict, StudyConfig or Sweep
        A study file, a study dict, or a study already loaded with `load_study`.
    out : str or Path
        The output folder: its `results.sqlite` holds every run; rerun to resume.
    report : bool, default True
        Also write the tables, figures and `report.html` into `out`.

    Returns
    -------
    Results
        Every table of the folder as DataFrames.

    Raises
    ------
    TransferlabError
        A study, data or model file that cannot be used, or a folder that holds another study.

    Examples
    --------
    >>> results = transferlab.run("examples/tutorial.toml", "runs/tutorial")  # doctest: +SKIP
    >>> results.summary[["strategy", "mean", "std"]]  # doctest: +SKIP
    """
    from transferlab.study import run_study, run_sweep

    loaded = study if isinstance(study, (StudyConfig, Sweep)) else load_study(study)
    if isinstance(loaded, Sweep):
        run_sweep(loaded, out)
    else:
        run_study(loaded, out)
    if report:
        build(out)
    return results(out)


def build(out: str | Path, threshold: float | None = None) -> Outputs | SweepOutputs:
    """Write (again) the tables, figures and `report.html` of the output folder `out`.

    Parameters
    ----------
    out : str or Path
        A study, sweep or matrix folder.
    threshold : float, optional
        The time-to-threshold level (default: the study's `[report] threshold`, else 95%
        of standalone's final mean).

    Returns
    -------
    Outputs or SweepOutputs
        What was written, with the tables as DataFrames.

    Raises
    ------
    StoreError
        `out` holds no transferlab results, or results this version cannot read.

    Examples
    --------
    >>> transferlab.report("runs/tutorial")  # doctest: +SKIP
    """
    from transferlab.reports import build_report

    return build_report(out, threshold)


@dataclass(frozen=True)
class Results(Mapping):
    """Every table of an output folder as pandas DataFrames.

    Also readable as a mapping (`results["runs"]`), as `transferlab.results` always was.

    Attributes
    ----------
    summary : DataFrame
        Per direction (and point) and strategy: n, mean, std, 95% interval, the difference
        to standalone with its interval, test and Holm-corrected p.
    verdict : DataFrame
        Per direction (and point), each strategy against standalone: outcome, difference,
        interval, Holm-corrected p, smallest detectable difference.
    runs : DataFrame
        One row per run: identity, seed, status, final metrics.
    curves : DataFrame
        Every run's per-epoch metrics, long (`split`, `name`, `epoch`, `value`).
    learning_speed : DataFrame
        Jumpstart, area under the curve, time to threshold and final score statistics.
    scores : DataFrame
        Each source model's transferability scores on the target's training rows.
    score_agreement : DataFrame
        Each score against the measured outcome (weighted τ, Pearson r, top-1 hit); for a
        matrix, the source tasks ranked per target.
    points : DataFrame
        A sweep's or matrix's points (empty for a plain study).
    """

    folder: Path
    summary: pd.DataFrame
    verdict: pd.DataFrame
    runs: pd.DataFrame
    curves: pd.DataFrame
    learning_speed: pd.DataFrame
    scores: pd.DataFrame
    score_agreement: pd.DataFrame
    points: pd.DataFrame

    def __getitem__(self, name: str) -> pd.DataFrame:
        """The table `name` (`"runs"`, `"summary"`, ...)."""
        if name not in self._names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        """The tables' names."""
        return iter(self._names())

    def __len__(self) -> int:
        """How many tables there are."""
        return len(self._names())

    @staticmethod
    def _names() -> tuple[str, ...]:
        from transferlab.frames import TABLES

        return TABLES


def results(folder: str | Path) -> Results:
    """Every table of an output folder (a study, sweep or matrix) as DataFrames.

    Parameters
    ----------
    folder : str or Path
        The output folder; nothing in it is written.

    Returns
    -------
    Results
        `summary`, `verdict`, `runs`, `curves`, `learning_speed`, `scores`,
        `score_agreement` and `points`.

    Raises
    ------
    StoreError
        `folder` holds no transferlab results, or results this version cannot read.

    Examples
    --------
    >>> tables = transferlab.results("runs/tutorial")  # doctest: +SKIP
    >>> tables.runs.groupby("strategy")["test_accuracy"].mean()  # doctest: +SKIP
    """
    from transferlab.frames import results as read

    return Results(Path(folder), **read(folder))


def score_models(target: Task | str | Path | dict | StudyConfig, model_files: Sequence[str | Path], *,
                 layer: int | None = None) -> pd.DataFrame:
    """Rank candidate source models for a target without training.

    Every transferability score (`transferlab.scores`) of each model file on the target's
    training rows, from one forward pass per architecture.

    Parameters
    ----------
    target : Task, str, Path, dict or StudyConfig
        A `Task`; a study (file, dict or loaded) whose target task is scored, prepared as
        the study prepares it; or a `[target]` table as a dict (`{"kind": "blobs", "seed": 2}`).
    model_files : list of str or Path
        Keras model files (`.keras`), read with `safe_mode=True`.
    layer : int, optional
        The hidden layer whose output the feature scores read (default: a study's
        `[scores] layer`, else the last).

    Returns
    -------
    DataFrame
        One row per model file: `file`, `layer`, one column per score (NaN where it does
        not apply) and `notes` (why not).

    Raises
    ------
    TransferlabError
        A target, model file or layer that cannot be scored, in one line.

    Examples
    --------
    >>> transferlab.score_models({"kind": "blobs", "seed": 2}, ["a.keras", "b.keras"])  # doctest: +SKIP
    """
    from transferlab._backend import configure
    from transferlab.transferability import score_model_files, wide_scores

    configure()
    files = [Path(path) for path in model_files]
    if not files:
        from transferlab.errors import ModelFileError

        raise ModelFileError("give at least one model file (.keras) to score")
    task, study_layer = scoring_target(target)
    return wide_scores(score_model_files(task, files, layer if layer is not None else study_layer))


def scoring_target(target: Task | str | Path | dict | StudyConfig,
                   base_dir: Path | None = None) -> tuple[Task, int | None]:
    """The target task `score_models` scores on, and the study's `[scores] layer`.

    A `Task` as it is, a study's target (as its plan makes it) with the layer the study
    names, or a `[target]` table made on its own (paths relative to `base_dir`); the layer
    is None where no study names one.
    """
    from transferlab.tasks import Task

    if isinstance(target, Task):
        return target, None
    if isinstance(target, dict) and "target" not in target:  # a [target] table
        from transferlab.datasets import make
        from transferlab.errors import StudyFileError
        from transferlab.loading import validate

        if target.get("standardize") == "source":
            raise StudyFileError('target.standardize: "source" applies a source task\'s scaler, and a target scored '
                                 "on its own has none; give the study file instead (its target is prepared as the "
                                 "study prepares it), or standardize = true or false", "target.standardize")
        raw = {"name": "score", "source": target, "target": target, "strategies": [{"name": "standalone"}]}
        return make(validate(raw, "target", base_dir).target, "target"), None
    loaded = target if isinstance(target, (StudyConfig, Sweep)) else load_study(target)
    if isinstance(loaded, Sweep):
        from transferlab.errors import StudyFileError

        raise StudyFileError(f"{target}: a sweep or matrix has many targets; run it (its report ranks the sources "
                             "per target), or score against one [target] table")
    from transferlab.plan import plan_of

    return plan_of(loaded).directions[0].target_task, loaded.scores.layer
