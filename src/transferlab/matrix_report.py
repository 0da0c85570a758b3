"""What a transfer matrix shows: per strategy, the difference to the target's own
standalone baseline for every ordered pair (rows: source task, columns: target task),
marked where the Holm-corrected p-value over the whole matrix is below 0.05; the
asymmetry i → j against j → i; and for each target the best source and strategy."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transferlab import stats


def with_matrix_holm(table: pd.DataFrame) -> pd.DataFrame:
    """`p_matrix`: Welch p-values Holm-corrected across every comparison in the matrix
    (all pairs and strategies), as the heatmaps mark them."""
    table = table.copy()
    table["p_matrix"] = stats.holm(table["p_value"].tolist()) if not table.empty else []
    return table


def delta_grid(table: pd.DataFrame, strategy: str, labels: list[str], column: str = "diff") -> pd.DataFrame:
    """Rows source task, columns target task: `column` of `strategy` (NaN on the diagonal)."""
    grid = pd.DataFrame(np.nan, index=labels, columns=labels)
    for row in table[table["strategy"] == strategy].itertuples(index=False):
        grid.loc[row.source, row.target] = getattr(row, column)
    return grid


def grid_text(table: pd.DataFrame, strategy: str, labels: list[str]) -> pd.DataFrame:
    """The Δ grid as printed: `+0.031*` (`*`: Holm p < 0.05 within the matrix), `·` on the diagonal."""
    delta, p = delta_grid(table, strategy, labels), delta_grid(table, strategy, labels, "p_matrix")
    text = pd.DataFrame("", index=labels, columns=labels)
    for source in labels:
        for target in labels:
            value = delta.loc[source, target]
            text.loc[source, target] = "·" if source == target else (
                "–" if np.isnan(value) else f"{value:+.3f}{'*' if p.loc[source, target] < 0.05 else ''}")
    text.insert(0, "source ↓ target →", labels)
    return text.reset_index(drop=True)


def asymmetry(table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per strategy and pair of tasks: Δ(i → j), Δ(j → i) and their difference."""
    rows = []
    for strategy in dict.fromkeys(table["strategy"]):
        if strategy == stats.BASELINE:
            continue
        delta = delta_grid(table, strategy, labels)
        for a in range(len(labels)):
            for b in range(a + 1, len(labels)):
                forward, backward = delta.iloc[a, b], delta.iloc[b, a]
                rows.append({"strategy": strategy, "task_i": labels[a], "task_j": labels[b],
                             "delta_i_to_j": forward, "delta_j_to_i": backward, "asymmetry": forward - backward})
    return pd.DataFrame(rows)


def best_per_target(table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """For each target: the source and strategy with the largest difference to standalone,
    with its interval and the matrix-corrected p-value."""
    rows = []
    candidates = table[(table["strategy"] != stats.BASELINE) & table["diff"].notna()]
    for target in labels:
        found = candidates[candidates["target"] == target]
        if found.empty:
            continue
        best = found.loc[found["diff"].idxmax()]
        rows.append({"target": target, "source": best["source"], "strategy": best["strategy"],
                     "mean": best["mean"], "ci_low": best["ci_low"], "ci_high": best["ci_high"],
                     "diff": best["diff"], "diff_ci_low": best["diff_ci_low"], "diff_ci_high": best["diff_ci_high"],
                     "p_matrix": best["p_matrix"]})
    return pd.DataFrame(rows)


def _p(p: float) -> str:
    written = stats.format_p(p)
    return written if written.startswith("<") else f"= {written}"


def best_lines(best: pd.DataFrame) -> list[str]:
    lines = []
    for row in best.itertuples(index=False):
        verdict = "better than standalone" if row.diff > 0 and row.p_matrix < 0.05 else "no detectable gain"
        lines.append(f"{row.target}: best {row.strategy} from {row.source}, Δ {row.diff:+.3f} "
                     f"[{row.diff_ci_low:+.3f}, {row.diff_ci_high:+.3f}] (Holm p {_p(row.p_matrix)}: {verdict})")
    return lines
