"""Statistics a reviewer would accept, from a table of finished target runs.

Per strategy: n, mean, std and a 95% t-interval. A strategy that reuses source
models is replicated at the *source model* level: with S > 1 its interval and its
test use the S per-source means (repeats on one source model are not independent
evidence about transfer). Each strategy is compared with the baseline by Welch's
t-test (`scipy.stats.ttest_ind(equal_var=False)`) with its 95% interval for the
difference, and p-values are Holm-corrected across the comparisons.

Runs that diverged (their loss became NaN or infinite) have no metric to average: they
are counted per strategy (`diverged`) and left out of means, intervals and tests, and
every table that does so says it (`DIVERGED_NOTE`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from transferlab import objectives

BASELINE = "standalone"
FINISHED = ("done", "diverged")  # run statuses that count as trained (a diverged run has no metric)
CONFIDENCE = 0.95
DIVERGED_NOTE = "diverged runs (loss NaN or infinite) are left out of means, intervals and tests"


def replication_units(runs: pd.DataFrame, metric: str) -> pd.Series:
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
    if np.all(values == values[0]):  # zero spread: the interval collapses to the mean
        return (float(values[0]), float(values[0]))
    low, high = scipy_stats.t.interval(
        confidence, df=len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values)
    )
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


def summary_table(runs: pd.DataFrame, metric: str, baseline: str = BASELINE) -> pd.DataFrame:
    """See `_summary_table`; SciPy's precision warnings for near-identical groups are not
    printed (the table shows n and std, which say the same)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _summary_table(runs, metric, baseline)


def _summary_table(runs: pd.DataFrame, metric: str, baseline: str) -> pd.DataFrame:
    """One row per strategy (in the order they first appear): the tutorial's numbers and the
    tests over the runs that finished; `diverged` counts those whose loss became NaN/inf and
    `planned` the runs of the strategy in all (still pending ones included)."""
    targets = runs[runs["role"] == "target"]
    finished = targets[targets["status"].isin(FINISHED)]
    runs = finished[finished["status"] == "done"]
    order = list(dict.fromkeys(finished["strategy"]))
    base_units = replication_units(runs[runs["strategy"] == baseline], metric) if baseline in order else None
    rows = []
    for strategy in order:
        group = runs[runs["strategy"] == strategy]
        values = group[metric].to_numpy(float)
        diverged = int((finished.loc[finished["strategy"] == strategy, "status"] == "diverged").sum())
        planned = int((targets["strategy"] == strategy).sum())
        units = replication_units(group, metric)
        n_sources = int((group["source_index"] >= 0).any() and group["source_index"].nunique())
        low, high = mean_interval(units.to_numpy(float))
        row = {
            "strategy": strategy,
            "n": len(values),
            "diverged": diverged,
            "planned": planned,
            "sources": n_sources,
            "unit": "source model" if len(units) != len(values) else "run",
            "mean": float(values.mean()) if len(values) else float("nan"),
            "std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
            "ci_low": low,
            "ci_high": high,
            "between_source_std": float(units.std(ddof=1)) if n_sources > 1 else float("nan"),
            "diff": float("nan"),
            "diff_ci_low": float("nan"),
            "diff_ci_high": float("nan"),
            "p_value": float("nan"),
        }
        comparable = (
            base_units is not None and strategy != baseline and len(units) > 1 and len(base_units) > 1
            and (units.std() > 0 or base_units.std() > 0)  # Welch's test needs some spread
        )
        if comparable:
            low, high, p_value = welch(units.to_numpy(float), base_units.to_numpy(float))
            row.update(diff=float(units.mean() - base_units.mean()), diff_ci_low=low, diff_ci_high=high,
                       p_value=p_value)
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p_value"].tolist())
    return table


def welch(values: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """Welch's t-test of mean(values) − mean(reference): its 95% interval and p-value."""
    test = scipy_stats.ttest_ind(values, reference, equal_var=False)
    interval = test.confidence_interval(CONFIDENCE)
    return float(interval.low), float(interval.high), float(test.pvalue)


def per_source_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean (std) of each transfer strategy on each source model: the spread the tutorial hides."""
    runs = runs[(runs["role"] == "target") & (runs["status"] == "done") & (runs["source_index"] >= 0)]
    if runs.empty:
        return pd.DataFrame(columns=["strategy", "source_index", "n", "mean", "std"])
    order = list(dict.fromkeys(runs["strategy"]))
    grouped = runs.groupby(["strategy", "source_index"])[metric]
    table = grouped.agg(n="count", mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan).reset_index()
    table["strategy"] = pd.Categorical(table["strategy"], categories=order, ordered=True)
    return table.sort_values(["strategy", "source_index"]).reset_index(drop=True).assign(
        strategy=lambda t: t["strategy"].astype(str)
    )


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """The tutorial's `mean (std)`; `–` where there is nothing to average."""
    if np.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ({std:.{digits}f})" if not np.isnan(std) else f"{mean:.{digits}f}"


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


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric column's values (and so a mean's interval) can take: its objective's."""
    return objectives.metric_of(metric).bounds


def format_p(p: float) -> str:
    """A p-value as a reader expects it: `0.82`, `0.011`, `0.003`, `< 0.001`, `1`."""
    if np.isnan(p):
        return ""
    if p < 0.001:
        return "< 0.001"
    if p >= 0.995:
        return "1"
    return f"{p:.2f}" if p >= 0.1 else f"{p:.3f}"


def leaves_range(low: float, high: float, bounds: tuple[float, float]) -> bool:
    return low < bounds[0] or high > bounds[1]


def format_interval(low: float, high: float, bounds: tuple[float, float], digits: int = 3) -> str:
    """`[low, high]`, clipped to the metric's range and marked † where the t-interval leaves it."""
    clipped = leaves_range(low, high, bounds)
    low, high = max(low, bounds[0]), min(high, bounds[1])
    return f"[{low:.{digits}f}, {high:.{digits}f}]" + ("†" if clipped else "")


def display_table(summary: pd.DataFrame, digits: int = 3, bounds: tuple[float, float] = (-np.inf, np.inf)) -> pd.DataFrame:
    """The summary as printed and reported: formatted strings, one row per strategy; mean
    intervals clipped to `bounds` (the metric's range, `metric_bounds`)."""
    rows = []
    any_diverged = "diverged" in summary.columns and bool((summary["diverged"] > 0).any())
    for row in summary.itertuples(index=False):
        d = digits
        diff = (
            ""
            if np.isnan(row.diff)
            else f"{row.diff:+.{d}f} [{row.diff_ci_low:+.{d}f}, {row.diff_ci_high:+.{d}f}]"
        )
        rows.append(
            {
                "strategy": row.strategy,
                "n": str(row.n) + (f" ({row.sources} src)" if row.sources > 1 else ""),
                "mean (std)": format_mean_std(row.mean, row.std, d),
                "95% CI": "" if np.isnan(row.ci_low) else format_interval(row.ci_low, row.ci_high, bounds, d),
                "Δ vs standalone [95% CI]": diff,
                "p (Holm)": format_p(row.p_holm),
            }
        )
        if any_diverged:
            rows[-1]["diverged"] = f"{row.diverged} of {row.n + row.diverged}" if row.diverged else ""
    return pd.DataFrame(rows, columns=None if rows else ["strategy", "n", "mean (std)", "95% CI"])
