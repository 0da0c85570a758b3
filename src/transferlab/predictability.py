"""Could it have been predicted? Each transferability score against what the study measured.

For one study, the units are its source models: for each transfer strategy, each score's
value per source model against the strategy's measured mean on that source model —
Kendall's weighted τ (`scipy.stats.weightedtau`, its default hyperbolic weights on rank, so
agreement among the top source models counts most) and Pearson's r, each with a
percentile bootstrap 95% interval over source models, and whether the score's top-ranked
source model was the measured best (within its interval). For a matrix, the units are the
source tasks of each target (a task's score: the mean over its source models), ranked per
target and summarised over targets.

"Measured" is the strategy's headline test score, oriented so that higher is better (the
negative of a loss-like metric), so a positive τ always means the score ranked the source
models the way training did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from transferlab import stats
from transferlab.scores import SCORES

RESAMPLES = 1000  # bootstrap resamples of the source models (or targets)
BOOTSTRAP_SEED = 0  # fixed: the same stored numbers give the same intervals
MIN_UNITS = 3  # fewer source models (or source tasks) than this: no correlation is reported
GRID_STRATEGIES = 3  # the printed grid shows intervals up to this many strategies

AGREEMENT_COLUMNS = ["strategy", "score", "sources", "tau_w", "tau_low", "tau_high", "r", "r_low", "r_high",
                     "top_source", "best_source", "hit", "note"]


def source_outcomes(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per transfer strategy and source model: finished target runs' n, mean and 95%
    interval of `metric` (diverged runs left out, as everywhere)."""
    done = runs[(runs["role"] == "target") & (runs["status"] == "done") & (runs["source_index"] >= 0)]
    rows = []
    for (strategy, source), values in done.groupby(["strategy", "source_index"], sort=False)[metric]:
        low, high = stats.mean_interval(values.to_numpy())
        rows.append({"strategy": strategy, "source_index": int(source), "n": len(values), "mean": values.mean(),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["strategy", "source_index", "n", "mean", "ci_low", "ci_high"])


def score_columns(scores: pd.DataFrame, unit: str = "source_index") -> pd.DataFrame:
    """Stored scores (long) as one column per score, one row per `unit`."""
    wide = scores.pivot_table(index=unit, columns="score", values="value", aggfunc="mean", dropna=False)
    return wide.reindex(columns=[name for name in SCORES if name in wide.columns])


def agreement_table(scores: pd.DataFrame, outcomes: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """For each strategy and score: τ_w and r with bootstrap intervals over source models,
    the score's top source model, the measured best and whether they agree (`hit`)."""
    wide = score_columns(scores)
    rows = []
    for strategy, measured in outcomes.groupby("strategy", sort=False):
        measured = measured.set_index("source_index")
        for name in wide.columns:
            rows.append({"strategy": strategy, "score": name,
                         **_agreement(wide[name], measured, higher_is_better)})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def _agreement(score: pd.Series, measured: pd.DataFrame, higher_is_better: bool) -> dict:
    both = score.dropna().index.intersection(measured.index)
    if len(both) < MIN_UNITS:
        reason = "the score does not apply here" if score.notna().sum() == 0 else (
            f"{len(both)} source models with both a score and a measured mean; a correlation needs {MIN_UNITS}")
        return {"sources": len(both), "note": reason, "hit": None}
    x = score.loc[both].to_numpy(float)
    y = _oriented(measured.loc[both, "mean"].to_numpy(float), higher_is_better)
    tau, r = _tau(x, y), float(_pearson_rows(x[None], y[None])[0])
    tau_low, tau_high, r_low, r_high = _bootstrap(x, y)
    top, best = both[int(np.argmax(x))], both[int(np.argmax(y))]
    return {"sources": len(both), "tau_w": tau, "tau_low": tau_low, "tau_high": tau_high, "r": r, "r_low": r_low,
            "r_high": r_high, "top_source": int(top), "best_source": int(best),
            "hit": _hit(measured, top, best, higher_is_better), "note": ""}


def _oriented(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    return values if higher_is_better else -values


def _hit(measured: pd.DataFrame, top, best, higher_is_better: bool) -> bool:
    """The score's pick is the measured best, or its mean lies within the best's 95% interval
    (training could not tell them apart)."""
    if top == best:
        return True
    mean = measured.loc[top, "mean"]
    low, high = measured.loc[best, "ci_low"], measured.loc[best, "ci_high"]
    return bool(mean >= low) if higher_is_better else bool(mean <= high)


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(scipy_stats.weightedtau(x, y).statistic)


def _bootstrap(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Percentile 95% intervals of τ_w and r over `RESAMPLES` resamples of the units (with
    replacement; resamples where either side is constant are left out), computed for all
    resamples at once (`weighted_tau_rows` equals `scipy.stats.weightedtau` row by row)."""
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(x), size=(RESAMPLES, len(x)))
    xs, ys = x[picks], y[picks]
    return (*_percentiles(weighted_tau_rows(xs, ys)), *_percentiles(_pearson_rows(xs, ys)))


def weighted_tau_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`scipy.stats.weightedtau(x[k], y[k]).statistic` for every row k of `(B, n)` arrays:
    Vigna's weighted τ with additive hyperbolic weights 1/(r + 1) on the decreasing
    lexicographic rank by (x, y), averaged with the one ranked by (y, x); NaN where either
    row is constant."""
    chunk = max(1, (1 << 21) // (x.shape[1] ** 2))
    return np.concatenate([(_ranked_tau(x[i : i + chunk], y[i : i + chunk])
                            + _ranked_tau(y[i : i + chunk], x[i : i + chunk])) / 2
                           for i in range(0, len(x), chunk)])


def _ranked_tau(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The weighted τ of each row, weights from the rank by decreasing (x, y)."""
    order = np.lexsort((y, x), axis=-1)[:, ::-1]
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(x.shape[1])[None, :], axis=-1)
    weight = 1.0 / (rank + 1.0)
    pair = weight[:, :, None] + weight[:, None, :]
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    spread = np.sum(pair * np.abs(sx), axis=(1, 2)) * np.sum(pair * np.abs(sy), axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 0, np.sum(pair * sx * sy, axis=(1, 2)) / np.sqrt(spread), np.nan)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dx, dy = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    spread = np.sum(dx * dx, axis=1) * np.sum(dy * dy, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 0, np.sum(dx * dy, axis=1) / np.sqrt(spread), np.nan)


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) < RESAMPLES // 2:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


# --- a matrix: source tasks ranked per target ------------------------------------------


RANKING_COLUMNS = ["target", "strategy", "score", "sources", "tau_w", "top_source", "best_source", "hit", "note"]


def ranking_table(scores: pd.DataFrame, summary: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """Per target, strategy and score: the source tasks ranked by the score (the mean over
    each task's source models) against their measured means (`summary`: one row per
    source, target and strategy with mean, ci_low, ci_high): τ_w and the top-1 hit."""
    rows = []
    for target, on_target in scores.groupby("target", sort=False):
        wide = score_columns(on_target, unit="source")
        measured_here = summary[(summary["target"] == target) & (summary["strategy"] != stats.BASELINE)]
        for strategy, measured in measured_here.groupby("strategy", sort=False):
            measured = measured.set_index("source")
            for name in wide.columns:
                found = _ranking(wide[name], measured, higher_is_better)
                rows.append({"target": target, "strategy": strategy, "score": name, **found})
    return pd.DataFrame(rows, columns=RANKING_COLUMNS)


def _ranking(score: pd.Series, measured: pd.DataFrame, higher_is_better: bool) -> dict:
    both = score.dropna().index.intersection(measured.index)
    if len(both) < MIN_UNITS:
        return {"sources": len(both), "hit": None,
                "note": f"{len(both)} source tasks with a score; a ranking needs {MIN_UNITS}"}
    x = score.loc[both].to_numpy(float)
    y = _oriented(measured.loc[both, "mean"].to_numpy(float), higher_is_better)
    top, best = both[int(np.argmax(x))], both[int(np.argmax(y))]
    return {"sources": len(both), "tau_w": _tau(x, y), "top_source": top, "best_source": best,
            "hit": _hit(measured, top, best, higher_is_better), "note": ""}


SUMMARY_COLUMNS = ["strategy", "score", "targets", "mean_tau_w", "tau_low", "tau_high", "hits"]


def ranking_summary(per_target: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and score, over targets: the mean τ_w with a bootstrap 95% interval
    over targets, and how many targets' best source the score picked (`hits`)."""
    rows = []
    for (strategy, name), found in per_target.groupby(["strategy", "score"], sort=False):
        taus = found["tau_w"].dropna().to_numpy(float)
        low, high = _mean_interval(taus)
        rows.append({"strategy": strategy, "score": name, "targets": len(taus),
                     "mean_tau_w": float(taus.mean()) if len(taus) else float("nan"), "tau_low": low,
                     "tau_high": high, "hits": int(found["hit"].fillna(False).astype(bool).sum())})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _mean_interval(values: np.ndarray) -> tuple[float, float]:
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


# --- as printed ------------------------------------------------------------------------


def agreement_grid(agreement: pd.DataFrame) -> pd.DataFrame:
    """One row per score, one column per strategy: `τ_w [95% CI]` and whether its top
    source model was the best (`top-1 ✓` / `✗`); `–` where there is no correlation. With
    more than `GRID_STRATEGIES` strategies, one row per strategy and column per score,
    `τ_w ✓/✗` only (the intervals are in the report and `score_agreement.csv`)."""
    if agreement["strategy"].nunique() <= GRID_STRATEGIES:
        return _grid(agreement, lambda row: "–" if pd.isna(row.tau_w) else (
            f"{with_interval(row.tau_w, row.tau_low, row.tau_high)} top-1 {'✓' if row.hit else '✗'}"))
    cells = agreement.assign(cell=["–" if pd.isna(row.tau_w) else f"{row.tau_w:+.2f} {'✓' if row.hit else '✗'}"
                                   for row in agreement.itertuples(index=False)])
    wide = cells.pivot(index="strategy", columns="score", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(agreement["strategy"])),
                        columns=list(dict.fromkeys(agreement["score"]))).reset_index()
    wide.columns.name = None
    return wide


def ranking_grid(summary: pd.DataFrame) -> pd.DataFrame:
    """A matrix's summary as printed: mean τ_w over targets [95% CI] and top-1 hits (`4/6`:
    the score's top source was the best, or within its interval, for 4 of 6 targets)."""
    return _grid(summary, lambda row: "–" if pd.isna(row.mean_tau_w) else (
        f"{with_interval(row.mean_tau_w, row.tau_low, row.tau_high)} {row.hits}/{row.targets}"))


def _grid(table: pd.DataFrame, cell) -> pd.DataFrame:
    strategies = list(dict.fromkeys(table["strategy"]))
    rows = []
    for name in dict.fromkeys(table["score"]):
        chosen = table[table["score"] == name].set_index("strategy")
        rows.append({"score": name, **{strategy: cell(next(chosen.loc[[strategy]].itertuples()))
                                       for strategy in strategies if strategy in chosen.index}})
    return pd.DataFrame(rows)


def with_interval(value: float, low: float, high: float) -> str:
    """`+0.52 [-0.10, +0.90]` (the interval left out where there is none; `–` for no value)."""
    if value is None or pd.isna(value):
        return "–"
    return f"{value:+.2f}" + ("" if pd.isna(low) else f" [{low:+.2f}, {high:+.2f}]")


def hit_text(hit) -> str:
    """A top-1 hit as the report's tables write it: yes, no, or nothing where not decided."""
    return "" if hit is None or pd.isna(hit) else ("yes" if hit else "no")
