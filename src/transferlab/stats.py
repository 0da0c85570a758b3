"""Statistics a reviewer would accept, from a table of finished target runs.

Per strategy: n, mean, std and a 95% t-interval. A strategy that reuses source
models is replicated at the *source model* level: with S > 1 its interval and its
test use the S per-source means (repeats on one source model are not independent
evidence about transfer). Each strategy is compared with the baseline by Welch's
t-test (`scipy.stats.ttest_ind(equal_var=False)`) with its 95% interval for the
difference, and p-values are Holm-corrected across the comparisons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

BASELINE = "standalone"
CONFIDENCE = 0.95


def replication_units(runs: pd.DataFrame, metric: str = "test_accuracy") -> pd.Series:
    """The values a strategy's inference rests on: per-source means when it has several
    source models, else the runs themselves."""
    sources = runs["source_index"].unique()
    if len(sources) > 1:
        return runs.groupby("source_index")[metric].mean()
    return runs[metric]


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    low, high = scipy_stats.t.interval(
        confidence, df=len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values)
    )
    if not np.isfinite(low):  # zero spread: the interval collapses to the mean
        return (float(values.mean()), float(values.mean()))
    return (float(low), float(high))


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def summary_table(runs: pd.DataFrame, metric: str = "test_accuracy", baseline: str = BASELINE) -> pd.DataFrame:
    """One row per strategy (in the order they first appear): the tutorial's numbers and the tests."""
    runs = runs[(runs["role"] == "target") & (runs["status"] == "done")]
    order = list(dict.fromkeys(runs["strategy"]))
    base_units = replication_units(runs[runs["strategy"] == baseline], metric) if baseline in order else None
    rows = []
    for strategy in order:
        group = runs[runs["strategy"] == strategy]
        values = group[metric].to_numpy(float)
        units = replication_units(group, metric)
        n_sources = int((group["source_index"] >= 0).any() and group["source_index"].nunique())
        low, high = mean_interval(units.to_numpy(float))
        row = {
            "strategy": strategy,
            "n": len(values),
            "sources": n_sources,
            "unit": "source model" if len(units) != len(values) else "run",
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
            "ci_low": low,
            "ci_high": high,
            "between_source_std": float(units.std(ddof=1)) if n_sources > 1 else float("nan"),
            "diff": float("nan"),
            "diff_ci_low": float("nan"),
            "diff_ci_high": float("nan"),
            "p_value": float("nan"),
        }
        if base_units is not None and strategy != baseline and len(units) > 1 and len(base_units) > 1:
            test = scipy_stats.ttest_ind(units.to_numpy(float), base_units.to_numpy(float), equal_var=False)
            interval = test.confidence_interval(CONFIDENCE)
            row.update(
                diff=float(units.mean() - base_units.mean()),
                diff_ci_low=float(interval.low),
                diff_ci_high=float(interval.high),
                p_value=float(test.pvalue),
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p_value"].tolist())
    return table


def per_source_table(runs: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """Mean (std) of each transfer strategy on each source model: the spread the tutorial hides."""
    runs = runs[(runs["role"] == "target") & (runs["status"] == "done") & (runs["source_index"] >= 0)]
    if runs.empty:
        return pd.DataFrame(columns=["strategy", "source_index", "n", "mean", "std"])
    order = list(dict.fromkeys(runs["strategy"]))
    grouped = runs.groupby(["strategy", "source_index"])[metric]
    table = grouped.agg(n="count", mean="mean", std=lambda v: v.std(ddof=1)).reset_index()
    table["strategy"] = pd.Categorical(table["strategy"], categories=order, ordered=True)
    return table.sort_values(["strategy", "source_index"]).reset_index(drop=True).assign(
        strategy=lambda t: t["strategy"].astype(str)
    )


CURVES = ("loss", "accuracy", "mae", "r2", "val_loss", "val_accuracy", "val_mae", "val_r2")


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Per direction, strategy and epoch: mean and std over runs of every curve the runs
    recorded (accuracy for classification, MAE and R² for regression)."""
    curves = curves[curves["role"] == "target"]
    keys = [k for k in ("direction", "strategy", "epoch") if k in curves.columns]
    metrics = [name for name in CURVES if name in curves.columns and curves[name].notna().any()]
    grouped = curves.groupby(keys, sort=False)[metrics]
    table = grouped.agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    return table.reset_index()


def format_mean_std(mean: float, std: float) -> str:
    """The tutorial's `mean (std)`."""
    return f"{mean:.3f} ({std:.3f})"


def side_by_side(summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per strategy, a `mean (std)` and a Δ-vs-baseline column per direction: the
    tutorial's reverse experiment read at a glance."""
    order = list(dict.fromkeys(s for table in summaries.values() for s in table["strategy"]))
    rows = []
    for strategy in order:
        row = {"strategy": strategy}
        for name, table in summaries.items():
            match = table[table["strategy"] == strategy]
            if match.empty:
                row[f"{name} mean (std)"] = row[f"{name} Δ"] = ""
                continue
            found = match.iloc[0]
            row[f"{name} mean (std)"] = format_mean_std(found["mean"], found["std"])
            row[f"{name} Δ"] = "" if np.isnan(found["diff"]) else (
                f"{found['diff']:+.3f}" + ("*" if found["p_holm"] < 0.05 else "")
            )
        rows.append(row)
    return pd.DataFrame(rows)


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as printed and reported: formatted strings, one row per strategy."""
    rows = []
    for row in summary.itertuples(index=False):
        diff = (
            ""
            if np.isnan(row.diff)
            else f"{row.diff:+.3f} [{row.diff_ci_low:+.3f}, {row.diff_ci_high:+.3f}]"
        )
        rows.append(
            {
                "strategy": row.strategy,
                "n": str(row.n) + (f" ({row.sources} src)" if row.sources > 1 else ""),
                "mean (std)": format_mean_std(row.mean, row.std),
                "95% CI": "" if np.isnan(row.ci_low) else f"[{row.ci_low:.3f}, {row.ci_high:.3f}]",
                "Δ vs standalone [95% CI]": diff,
                "p (Holm)": "" if np.isnan(row.p_holm) else f"{row.p_holm:.2g}",
            }
        )
    return pd.DataFrame(rows)
