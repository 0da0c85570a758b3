"""Two studies side by side: the strategies they share, each study's mean score, and the
difference between the studies with its interval (Welch's test on the replication units,
Holm across the strategies), plus which configuration fields differ. For example a study
rerun with `bn_frozen = "train"`, another learning rate, or more source models."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab import stats
from transferlab.errors import StoreError
from transferlab.plan import changed_fields, configuration
from transferlab.store import Store


@dataclass
class Comparison:
    names: tuple[str, str]
    metric: str
    table: pd.DataFrame  # one row per shared strategy
    differences: str  # the configuration fields that differ, `path: a → b; …`
    warnings: list[str] = field(default_factory=list)  # what makes the difference mean something else


def compare_studies(folder_a: str | Path, folder_b: str | Path) -> Comparison:
    """Compare the forward direction of two finished (or partly finished) study folders."""
    studies = [_read(Path(folder)) for folder in (folder_a, folder_b)]
    (name_a, metric_a, runs_a, config_a, tasks_a), (name_b, metric_b, runs_b, config_b, tasks_b) = studies
    if metric_a != metric_b:
        raise StoreError(f"{folder_a} reports {metric_a} and {folder_b} {metric_b}: only studies with the same "
                         "headline metric can be compared")
    order_a = list(dict.fromkeys(runs_a["strategy"]))
    shared = [s for s in order_a if s in set(runs_b["strategy"])]
    if not shared:
        raise StoreError(f"{folder_a} and {folder_b} share no strategy (by label); nothing to compare")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for strategy in shared:
            units_a = stats.replication_units(runs_a[runs_a["strategy"] == strategy], metric_a).to_numpy(float)
            units_b = stats.replication_units(runs_b[runs_b["strategy"] == strategy], metric_a).to_numpy(float)
            row = {"strategy": strategy, "units_a": len(units_a), "mean_a": units_a.mean(),
                   "units_b": len(units_b), "mean_b": units_b.mean(), "diff": units_b.mean() - units_a.mean(),
                   "diff_ci_low": np.nan, "diff_ci_high": np.nan, "p_value": np.nan}
            if len(units_a) > 1 and len(units_b) > 1 and (units_a.std() > 0 or units_b.std() > 0):
                low, high, p_value = stats.welch(units_b, units_a)
                row.update(diff_ci_low=low, diff_ci_high=high, p_value=p_value)
            rows.append(row)
    table = pd.DataFrame(rows)
    table["p_holm"] = stats.holm(table["p_value"].tolist())
    return Comparison((name_a, name_b), metric_a, table, changed_fields(config_a, config_b),
                      _task_warnings(tasks_a, tasks_b))


def _task_warnings(tasks_a: dict, tasks_b: dict) -> list[str]:
    """A warning per task whose data differ (fingerprints): B − A then mixes data and settings."""
    found = []
    for role in ("source", "target"):
        a, b = tasks_a.get(role), tasks_b.get(role)
        if a is not None and b is not None and a.fingerprint != b.fingerprint:
            found.append(f"the {role} tasks differ ({a.description}, fingerprint {a.fingerprint[:12]}… in A; "
                         f"{b.description}, {b.fingerprint[:12]}… in B): the differences mix data and settings")
    return found


def display(comparison: Comparison) -> pd.DataFrame:
    """The comparison as printed: formatted strings."""
    return pd.DataFrame([{
        "strategy": row.strategy,
        "A: mean (units)": f"{row.mean_a:.3f} ({row.units_a})",
        "B: mean (units)": f"{row.mean_b:.3f} ({row.units_b})",
        "Δ (B − A) [95% CI]": "" if np.isnan(row.diff_ci_low) else
        f"{row.diff:+.3f} [{row.diff_ci_low:+.3f}, {row.diff_ci_high:+.3f}]",
        "p (Holm)": stats.format_p(row.p_holm),
    } for row in comparison.table.itertuples(index=False)])


def _read(folder: Path):
    """A folder's study name, headline metric, finished forward target runs and configuration."""
    with Store.in_folder(folder, readonly=True) as store:
        if store.sweep() is not None:
            raise StoreError(f"{folder / 'results.sqlite'}: this folder holds a sweep; compare two study folders")
        study_id, plan = store.stored_plan()
        runs = store.runs_frame(study_id)
    forward = plan.directions[0]
    done = runs[(runs["direction"] == forward.name) & (runs["role"] == "target") & (runs["status"] == "done")]
    return plan.name, forward.score, done, configuration(plan.to_dict()), plan.task_specs()
