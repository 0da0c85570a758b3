"""Results for notebooks: every table of an output folder as pandas DataFrames, read from
its database (nothing is written), and `export` to Parquet or CSV files.

`results(DIR)` works on any folder: a study, a sweep or a matrix. Its tables carry the
run's identity (direction, role, strategy, source model, repeat, seed) and, for a sweep
or matrix, the point (`point` and one column per swept value, or `source_task` and
`target_task`):

- `runs`: one row per run with its status and final metrics;
- `curves`: every run's per-epoch metrics, long (`split`, `name`, `epoch`, `value`);
- `summary`: per direction (and point) and strategy, the final score's statistics;
- `learning_speed`: the same statistics for jumpstart, area under the curve, time to
  threshold and the final score;
- `verdict`: per direction (and point), each strategy against standalone: the outcome
  (better, worse, no detectable difference, not tested), the difference with its 95%
  interval and Holm-corrected p, and the smallest difference detectable at 80% power;
- `scores`: each source model's transferability scores on the target's training rows
  (`score`, `layer`, `value`, and a `note` where a score does not apply);
- `score_agreement`: each score against the measured outcome — per direction, strategy and
  score: weighted τ and Pearson r with bootstrap 95% intervals over source models and the
  top-1 hit; for a matrix, per target, strategy and score: the source tasks ranked (τ_w,
  top-1 hit);
- `points`: a sweep's or matrix's points (empty for a plain study).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferlab import curve_table, predictability, speed, stats, verdict
from transferlab._backend import configure
from transferlab.store import Store

TABLES = ("runs", "curves", "summary", "verdict", "learning_speed", "scores", "score_agreement", "points")
FORMATS = ("parquet", "csv")


def results(folder: str | Path, with_curves: bool = True) -> dict[str, pd.DataFrame]:
    """Every table of `folder` (a study, sweep or matrix) as DataFrames (`curves` left empty
    without `with_curves`)."""
    configure()  # the first study, report or read of a process sets the backend up (a no-op after)
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    with Store.in_folder(folder, readonly=True) as store, store.snapshot():
        sweep = store.sweep()
        points = store.points() if sweep is not None else [{"study_id": None, "index": None, "values": {}}]
        for point in points:
            study_id, plan = store.stored_plan(point["study_id"])
            config = store.study(study_id)["config"]
            extra = _point_columns(point, sweep)
            runs = store.runs_frame(study_id)
            frames["runs"].append(_labelled(runs).assign(**extra))
            if with_curves:
                whole = curve_table.batches(store, study_id, _labelled(runs), extra, batch_runs=len(runs) + 1)
                frames["curves"].append(next(whole).frame())
            scores = store.scores_frame(study_id)
            frames["scores"].append(scores.assign(**extra))
            for direction in plan.directions:
                chosen = runs[runs["direction"] == direction.name]
                summary = stats.summary_table(chosen, direction.score)
                on_direction = scores[scores["direction"] == direction.name]
                if not on_direction.empty and (sweep is None or sweep["spec"]["mode"] != "matrix"):
                    outcomes = predictability.source_outcomes(chosen, direction.score)
                    agreement = predictability.agreement_table(on_direction, outcomes,
                                                               direction.objective.higher_is_better)
                    frames["score_agreement"].append(agreement.assign(direction=direction.name, **extra))
                frames["summary"].append(summary.assign(direction=direction.name, metric=direction.score, **extra))
                frames["verdict"].append(_verdict_frame(summary, direction).assign(**extra))
                tables, threshold, _ = speed.for_direction(store, study_id, plan, direction, runs, summary, config)
                if tables:
                    frames["learning_speed"].append(speed.long_table(tables, direction.name, threshold).assign(**extra))
            if point["index"] is not None:
                frames["points"].append(pd.DataFrame([{"study_id": study_id, **extra}]))
            higher_is_better = plan.directions[0].objective.higher_is_better
    tables = {name: _concat(parts) for name, parts in frames.items()}
    if sweep is not None and sweep["spec"]["mode"] == "matrix" and not tables["scores"].empty:
        tables["score_agreement"] = matrix_ranking(tables["scores"], tables["summary"], higher_is_better)
    return tables


def matrix_ranking(scores: pd.DataFrame, summary: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """A matrix's source tasks ranked per target by each score against the measured means
    (`predictability.ranking_table`), with `target_task` named as in the other tables."""
    renamed = {"source_task": "source", "target_task": "target"}
    ranking = predictability.ranking_table(scores.rename(columns=renamed), summary.rename(columns=renamed),
                                           higher_is_better)
    return ranking.rename(columns={"target": "target_task"})


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The points' tables as one; categorical columns stay categorical (their categories joined)."""
    if not parts:
        return pd.DataFrame()
    if len(parts) == 1:
        return parts[0]
    for column in parts[0].columns:
        if all(isinstance(part[column].dtype, pd.CategoricalDtype) for part in parts if column in part):
            categories = pd.api.types.union_categoricals([part[column] for part in parts if column in part]).categories
            parts = [part.assign(**{column: part[column].cat.set_categories(categories)}) if column in part else part
                     for part in parts]
    return pd.concat(parts, ignore_index=True)


def _verdict_frame(summary: pd.DataFrame, direction) -> pd.DataFrame:
    """Each strategy's finding against standalone, as the report's verdict table states it."""
    found = verdict.findings(summary, direction.objective.higher_is_better)
    return pd.DataFrame([{"direction": direction.name, "metric": direction.score, "strategy": f.strategy,
                          "outcome": f.outcome, "diff": f.diff, "diff_ci_low": f.low, "diff_ci_high": f.high,
                          "p_holm": f.p_holm, "units": f.units, "detectable": f.detectable} for f in found],
                        columns=["direction", "metric", "strategy", "outcome", "diff", "diff_ci_low", "diff_ci_high",
                                 "p_holm", "units", "detectable"])


SOURCE_MODEL = "source model"


def _labelled(runs: pd.DataFrame) -> pd.DataFrame:
    """Source-model runs are labelled `source model`, never `standalone` (how they train):
    a filter on `strategy == "standalone"` must give the baseline alone."""
    return runs.assign(strategy=runs["strategy"].where(runs["role"] != "source", SOURCE_MODEL))


def _point_columns(point: dict, sweep: dict | None) -> dict:
    if sweep is None:
        return {}
    if sweep["spec"]["mode"] == "matrix":
        return {"point": point["index"], "source_task": point["values"]["source"],
                "target_task": point["values"]["target"]}
    return {"point": point["index"], **point["values"]}


def export(folder: str | Path, format: str = "parquet", out: str | Path | None = None) -> list[Path]:
    """Write every table of `results(folder)` to `out` (default `FOLDER/export/`) as
    `NAME.parquet` or `NAME.csv`; returns the paths. The curves are written a batch of runs
    at a time, so memory stays flat however many runs the folder holds."""
    configure()  # the first study, report or read of a process sets the backend up (a no-op after)
    from transferlab.folder import atomic_path, prepare_output_path

    if format not in FORMATS:
        raise ValueError(f"--format {format!r}: use parquet or csv")
    out = prepare_output_path(Path(out) if out is not None else Path(folder) / "export", folder=True)
    written = []
    for name, frame in results(folder, with_curves=False).items():
        path = out / f"{name}.{format}"
        with atomic_path(path) as temporary:
            if name == "curves":
                write = curve_table.write_parquet if format == "parquet" else curve_table.write_csv
                write(_curve_batches(folder), temporary)
            elif format == "parquet":
                frame.to_parquet(temporary, index=False)
            else:
                frame.to_csv(temporary, index=False)
        written.append(path)
    return written


def _curve_batches(folder: str | Path):
    """The `curves` table a batch of runs at a time, as `results()` has it."""
    with Store.in_folder(folder, readonly=True) as store, store.snapshot():
        sweep = store.sweep()
        points = store.points() if sweep is not None else [{"study_id": None, "index": None, "values": {}}]
        for point in points:
            study_id, _ = store.stored_plan(point["study_id"])
            yield from curve_table.batches(store, study_id, _labelled(store.runs_frame(study_id)),
                                           _point_columns(point, sweep))
