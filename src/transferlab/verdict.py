"""What a study found, in words: each strategy against standalone (better, worse, or no
detectable difference, with the smallest difference the study could have detected), one
sentence that says it with its limits, and the warnings a reader needs before trusting it.

Pure functions of a summary table (`stats.summary_table`) and the source models' own
scores. Power is that of a two-sided two-sample t-test (noncentral t, as statsmodels'
`TTestIndPower`) on the replication units, with the pooled spread of both groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as scipy_stats

from transferlab.stats import BASELINE, leaves_range

ALPHA = 0.05
POWER = 0.80
SMALL_DIFFERENCES = (0.01, 0.02)  # what a reader asks about: source models needed to detect these
MIN_SOURCES = 5  # fewer source models: a finding describes those models, not the source task
FAR_BELOW = 0.1  # a source model this far below the others' median score is flagged
MOST_UNITS = 100_000

BETTER, WORSE, NO_DIFFERENCE, NOT_TESTED = "better", "worse", "no detectable difference", "not tested"


@dataclass(frozen=True)
class Finding:
    """One strategy against standalone: the outcome, the difference with its interval and
    Holm-corrected p; for no detectable difference, the smallest difference detectable at
    80% power (`detectable`) and the units per group needed for each of SMALL_DIFFERENCES."""

    strategy: str
    outcome: str
    diff: float
    low: float
    high: float
    p_holm: float
    units: int
    detectable: float = float("nan")
    needed: tuple = ()

    @property
    def difference_text(self) -> str:
        """`+0.125 [+0.072, +0.177]`, empty without a test."""
        return "" if self.outcome == NOT_TESTED else f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    @property
    def detectable_text(self) -> str:
        return f"±{self.detectable:.3f}" if self.outcome == NO_DIFFERENCE else ""

    def needed_texts(self, beyond: str) -> list[str]:
        """Per SMALL_DIFFERENCES the source models needed (`beyond` past MOST_UNITS); empty
        strings unless there was no detectable difference."""
        if self.outcome != NO_DIFFERENCE:
            return [""] * len(SMALL_DIFFERENCES)
        return [beyond if n is None else f"{n:,}" for n in self.needed]


def power(effect: float, n1: int, n2: int, alpha: float = ALPHA) -> float:
    """Power of a two-sided two-sample t-test for a standardised difference `effect`."""
    df = n1 + n2 - 2
    noncentrality = effect * math.sqrt(n1 * n2 / (n1 + n2))
    critical = scipy_stats.t.ppf(1 - alpha / 2, df)
    value = float(scipy_stats.nct.sf(critical, df, noncentrality) + scipy_stats.nct.cdf(-critical, df, noncentrality))
    return 1.0 if np.isnan(value) and noncentrality > critical else value  # far out, SciPy's nct gives up


def minimum_detectable(sd: float, n1: int, n2: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The smallest difference (in the metric's units) detected with probability `target`."""
    if n1 < 2 or n2 < 2 or not np.isfinite(sd):
        return float("nan")
    effect = optimize.brentq(lambda d: power(d, n1, n2, alpha) - target, 1e-9, 50.0)
    return float(effect * sd)


def units_needed(sd: float, difference: float, alpha: float = ALPHA, target: float = POWER) -> int | None:
    """Replication units per group (as many on each side) to detect `difference`; None
    beyond MOST_UNITS."""
    if not np.isfinite(sd):
        return None
    if sd == 0:
        return 2
    effect = difference / sd
    if power(effect, MOST_UNITS, MOST_UNITS, alpha) < target:
        return None
    low, high = 2, MOST_UNITS
    while low < high:
        middle = (low + high) // 2
        if power(effect, middle, middle, alpha) >= target:
            high = middle
        else:
            low = middle + 1
    return low


def pooled_sd(sd1: float, n1: int, sd2: float, n2: int) -> float:
    return math.sqrt(((n1 - 1) * sd1**2 + (n2 - 1) * sd2**2) / (n1 + n2 - 2))


def _units(row) -> tuple[int, float]:
    """A summary row's number of replication units and their spread."""
    if row["unit"] == "source model":
        return int(row["sources"]), float(row["between_source_std"])
    return int(row["n"]), float(row["std"])


def findings(summary: pd.DataFrame, higher_is_better: bool = True) -> list[Finding]:
    """Every strategy against the baseline, ranked by its difference (best first; those
    without a test last)."""
    if summary.empty:
        return []
    base = summary[summary["strategy"] == BASELINE]
    if base.empty:
        return []
    base_units, base_sd = _units(base.iloc[0])
    found = []
    for _, row in summary[summary["strategy"] != BASELINE].iterrows():
        units, sd = _units(row)
        common = dict(strategy=row["strategy"], diff=row["diff"], low=row["diff_ci_low"], high=row["diff_ci_high"],
                      p_holm=row["p_holm"], units=units)
        if np.isnan(row["p_holm"]):
            found.append(Finding(outcome=NOT_TESTED, **common))
        elif row["p_holm"] < ALPHA:
            found.append(Finding(outcome=BETTER if (row["diff"] > 0) == higher_is_better else WORSE, **common))
        else:
            spread = pooled_sd(sd, units, base_sd, base_units)
            found.append(Finding(outcome=NO_DIFFERENCE, detectable=minimum_detectable(spread, units, base_units),
                                 needed=tuple(units_needed(spread, d) for d in SMALL_DIFFERENCES), **common))
    sign = 1 if higher_is_better else -1
    return sorted(found, key=lambda f: (f.outcome == NOT_TESTED, -sign * (0 if np.isnan(f.diff) else f.diff)))


def sentence(found: list[Finding], summary: pd.DataFrame, metric_label: str) -> str:
    """What the study found and what limits it, in one sentence."""
    if not found:
        return "No strategy could be compared with standalone."
    better = [f for f in found if f.outcome == BETTER]
    worse = [f for f in found if f.outcome == WORSE]
    unclear = [f for f in found if f.outcome == NO_DIFFERENCE]
    parts = []
    if better:
        best = better[0]
        parts.append(f"{_names(better)} beat standalone on {metric_label} (best: {best.strategy}, "
                     f"{best.diff:+.3f} [{best.low:+.3f}, {best.high:+.3f}])")
    else:
        parts.append(f"no strategy beat standalone on {metric_label}")
    if worse:
        parts.append(f"{_names(worse)} did worse")
    if unclear:
        largest = max(f.detectable for f in unclear)
        parts.append(f"{_names(unclear)} showed no detectable difference (differences below about "
                     f"{largest:.3f} could go unseen)")
    text = "; ".join(parts)
    limit = _source_limit(summary)
    return text[0].upper() + text[1:] + (f". {limit}." if limit else ".")


def _names(found: list[Finding]) -> str:
    return _plain(f.strategy for f in found)


def _source_limit(summary: pd.DataFrame) -> str:
    if summary.empty:
        return ""
    reusing = summary[summary["sources"] > 0]
    if reusing.empty:
        return ""
    fewest = int(reusing["sources"].min())
    if fewest == 1:
        return "One source model: the result holds for this source model only"
    if fewest < MIN_SOURCES:
        return (f"Only {fewest} source models: the result describes these models more than transfer from "
                "the source task")
    return ""


def warnings_for(summary: pd.DataFrame, source_scores: list[tuple[int, float]], bounds: tuple[float, float]) -> list[str]:
    """What a reader must know before trusting the table: too few source models, a poor
    source model, intervals clipped to the metric's range, comparisons without a test."""
    notes = []
    if summary.empty:
        return notes + _poor_sources(source_scores)
    reusing = summary[summary["sources"] > 0]
    few = reusing[reusing["sources"] < MIN_SOURCES]
    if not few.empty:
        counts = sorted(set(few["sources"].astype(int)))
        models = " or ".join(str(c) for c in counts) + (" source model" if counts == [1] else " source models")
        notes.append(f"{models} (fewer than {MIN_SOURCES}): the intervals and tests of {_plain(few['strategy'])} "
                     f"describe {'this model' if counts == [1] else 'these models'}, not transfer from the source "
                     f"task in general; set source_repeats = {MIN_SOURCES} or more")
    notes += _poor_sources(source_scores)
    for row in summary.itertuples(index=False):
        if not np.isnan(row.ci_low) and leaves_range(row.ci_low, row.ci_high, bounds):
            notes.append(f"{row.strategy}: the 95% t-interval [{row.ci_low:.3f}, {row.ci_high:.3f}] leaves the "
                         f"metric's range; shown clipped to it (†); more replication units narrow it")
    for row in summary.itertuples(index=False):
        if row.strategy != BASELINE and np.isnan(row.p_holm) and row.n > 0:
            units = row.sources if row.unit == "source model" else row.n
            notes.append(f"{row.strategy}: no test against standalone ({units} replication "
                         f"unit{'s' if units != 1 else ''}; a test needs at least 2 on each side, with some spread)")
    return notes


def _poor_sources(source_scores: list[tuple[int, float]]) -> list[str]:
    notes = []
    for index, score in source_scores:
        others = [s for i, s in source_scores if i != index and np.isfinite(s)]
        if not others or not np.isfinite(score):
            continue
        median = float(np.median(others))
        if score < median - FAR_BELOW:
            notes.append(f"source model {index} scored {score:.3f} on its own task, far below the others "
                         f"(median {median:.3f}): the strategies that reuse it inherit a poor start")
    return notes


def _plain(strategies) -> str:
    names = list(strategies)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
