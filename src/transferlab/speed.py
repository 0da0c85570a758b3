"""How fast each strategy learns, from every run's stored per-epoch test curve: the
standard measures of transfer (Taylor & Stone 2009, "Transfer Learning for Reinforcement
Learning Domains: A Survey", JMLR 10):

- *jumpstart*: the test score after the first epoch;
- *area under the learning curve*: the mean test score over all epochs;
- *time to threshold*: the first epoch whose test score reaches a threshold (default 95%
  of standalone's final mean). A run that never reaches it is *censored*: it is counted
  (`censored` per strategy) and enters the statistics as epochs + 1 — a restricted mean
  time, the usual summary of censored times — so a strategy that often fails to get
  there is never made to look fast by dropping its failures;
- *asymptote*: the final test score.

Each measure gets the final score's statistics (`stats.summary_table`: mean (std), 95%
interval with the source model as the unit, Δ vs standalone with its interval, Holm).
The per-run values are computed by the database (`Store.learning_measures`); this module
only derives the threshold and the tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transferlab import objectives, stats

MEASURES = {
    "jumpstart": "jumpstart (after epoch 1)",
    "auc": "area under the learning curve (mean over epochs)",
    "time_to_threshold": "epochs to threshold",
    "final": "asymptote (final)",
}
THRESHOLD_SHARE = 0.95
HIGHER_IS_BETTER = {"jumpstart": True, "auc": True, "time_to_threshold": False, "final": True}


def curve_metric(score: str) -> str:
    """`test_accuracy` → `accuracy`: the metric of the score's per-epoch curve."""
    return objectives.metric_of(score).name


def threshold_for(given: float | None, study_config: dict, summary: pd.DataFrame) -> tuple[float | None, str]:
    """The time-to-threshold level and where it came from, in words: `given` (the report's
    `--threshold`), else the study's `[report] threshold`, else the default share of
    standalone's final mean."""
    if given is not None:
        return float(given), "given to the report"
    configured = (study_config.get("report") or {}).get("threshold")
    if configured is not None:
        return float(configured), "the study's [report] threshold"
    default = default_threshold(summary)
    if default is None:
        return None, "no standalone runs to take a default from: give [report] threshold"
    return default, f"{THRESHOLD_SHARE:.0%} of standalone's final mean"


def tables_for(runs: pd.DataFrame, measures: pd.DataFrame, epochs: int, score: str,
               threshold: float | None) -> dict[str, pd.DataFrame]:
    """A direction's learning-speed tables from its runs and their per-run measures
    (`Store.learning_measures`); without a threshold, no time to threshold."""
    tables = speed_tables(with_measures(runs, measures, epochs, score))
    if threshold is None:
        del tables["time_to_threshold"]
    return tables


def for_direction(store, study_id: int, plan, direction, runs: pd.DataFrame, summary: pd.DataFrame,
                  config: dict, given: float | None = None) -> tuple[dict[str, pd.DataFrame], float | None, str]:
    """One direction's learning-speed tables, its threshold and where that came from, read
    from a study's database (`runs`: its `Store.runs_frame`; `summary`: its final scores)."""
    threshold, source = threshold_for(given, config, summary)
    measures = store.learning_measures(study_id, direction.name, curve_metric(direction.score), threshold)
    if summary.empty:
        return {}, threshold, source
    chosen = runs[runs["direction"] == direction.name]
    return tables_for(chosen, measures, plan.training.epochs, direction.score, threshold), threshold, source


def default_threshold(summary: pd.DataFrame, share: float = THRESHOLD_SHARE) -> float | None:
    """`share` of standalone's final mean (None without a standalone row to take it from)."""
    if summary.empty:
        return None
    base = summary[summary["strategy"] == stats.BASELINE]
    if base.empty or np.isnan(base.iloc[0]["mean"]):
        return None
    return float(share * base.iloc[0]["mean"])


def with_measures(runs: pd.DataFrame, measures: pd.DataFrame, epochs: int, score: str) -> pd.DataFrame:
    """The runs with a column per measure: `jumpstart`, `auc`, `final` (the stored final
    score), `time_to_threshold` (epochs + 1 when censored) and `censored`."""
    table = runs.merge(measures, on="run_id", how="left")
    table["final"] = table[score]
    reached = table["reached"]
    table["censored"] = reached.isna() & (table["status"] == "done")
    table["time_to_threshold"] = reached.fillna(epochs + 1).astype(float)
    return table


def speed_tables(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per measure, the summary table (as for the final score), with `censored` counts on
    the time to threshold."""
    tables = {measure: stats.summary_table(runs, measure) for measure in MEASURES}
    done = runs[(runs["role"] == "target") & (runs["status"] == "done")]
    censored = done.groupby("strategy")["censored"].sum()
    tables["time_to_threshold"]["censored"] = [
        int(censored.get(strategy, 0)) for strategy in tables["time_to_threshold"]["strategy"]
    ]
    return tables


def compact_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per strategy, one column per measure: `mean` and, against standalone, the
    difference with `*` where Holm-corrected p < 0.05; censored runs beside the time."""
    rows = []
    final = tables["final"]
    for index, strategy in enumerate(final["strategy"]):
        row = {"strategy": strategy}
        for measure, table in tables.items():
            found = table[table["strategy"] == strategy]
            if found.empty:
                row[_short(measure)] = ""
                continue
            entry = found.iloc[0]
            digits = 1 if measure == "time_to_threshold" else 3
            text = "–" if np.isnan(entry["mean"]) else f"{entry['mean']:.{digits}f}"
            if not np.isnan(entry["diff"]):
                text += f" ({entry['diff']:+.{digits}f}{'*' if entry['p_holm'] < 0.05 else ''})"
            if measure == "time_to_threshold" and entry.get("censored", 0):
                text += f", {int(entry['censored'])} of {int(entry['n'])} never"
            row[_short(measure)] = text
        rows.append(row)
    return pd.DataFrame(rows)


def _short(measure: str) -> str:
    return {"jumpstart": "jumpstart", "auc": "area under curve", "time_to_threshold": "epochs to threshold",
            "final": "final"}[measure]


def long_table(tables: dict[str, pd.DataFrame], direction: str, threshold: float | None) -> pd.DataFrame:
    """Every measure's summary in one long table (for `learning_speed.csv`)."""
    frames = [table.assign(measure=measure, direction=direction, threshold=threshold)
              for measure, table in tables.items()]
    return pd.concat(frames, ignore_index=True)
