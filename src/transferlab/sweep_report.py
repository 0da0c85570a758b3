"""What a sweep shows: every point's final-score table in one long CSV, a pivot (strategy ×
point: mean and Δ vs standalone), the sample-efficiency figure (score and Δ against the
swept value, 95% bands, a log axis for `n_train`) and, for a sweep over `n_train`, the
headline: the largest `n_train` at which each strategy still beats standalone
significantly. All rebuilt from the results database alone."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from transferlab import matrix_report, objectives, plots, predictability, speed, stats
from transferlab.config import as_toml
from transferlab.folder import atomic_path, write_text
from transferlab.store import Store
from transferlab.words import count


@dataclass
class SweepOutputs:
    folder: Path
    name: str
    axes: dict[str, list]
    table: pd.DataFrame  # one row per point and strategy
    metric: str
    headline: list[str]
    pending: list[str]
    files: dict[str, Path] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    mode: str = "grid"
    labels: list[str] = field(default_factory=list)  # a matrix's tasks
    speed: dict[int, pd.DataFrame] = field(default_factory=dict)  # per point: learning speed, one row per strategy
    score_ranking: pd.DataFrame = field(default_factory=pd.DataFrame)  # a matrix: per target, each score's ranking
    score_summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # … summarised over targets

    @property
    def is_matrix(self) -> bool:
        return self.mode == "matrix"

    def grids(self) -> dict[str, pd.DataFrame]:
        """A matrix's Δ grid per strategy, as printed."""
        return {strategy: matrix_report.grid_text(self.table, strategy, self.labels)
                for strategy in dict.fromkeys(self.table["strategy"]) if strategy != stats.BASELINE}

    @property
    def pivot(self) -> pd.DataFrame:
        return pivot_table(self.table, list(self.axes))

    @property
    def metric_label(self) -> str:
        return plots.metric_name(self.metric)


def build_sweep_report(folder: str | Path) -> SweepOutputs:
    """Tables, the sweep figure and `report.html` of a sweep folder."""
    folder = Path(folder)
    with Store.in_folder(folder, readonly=True) as store, store.snapshot():
        sweep = store.sweep()
        points = store.points()
        rows, pending, config, speeds, long, scores = [], [], {}, {}, [], []
        metric = objectives.for_kind("classification").score_column  # until a point says otherwise
        higher_is_better = True
        for point in points:
            read = _read_point(store, point, with_speed=sweep["spec"]["mode"] != "matrix")
            rows += read["rows"]
            scores.append(read["scores"].assign(**point["values"]))
            higher_is_better = read["higher_is_better"]
            pending += read["pending"]
            metric, config = read["metric"], read["config"]
            if read["speed"]:
                speeds[point["index"]] = speed.compact_table(read["speed"])
                long.append(speed.long_table(read["speed"], "forward", read["threshold"]).assign(
                    point=point["index"], **point["values"]))
    axes = sweep["spec"]["axes"]
    missing = len(sweep["spec"]["points"]) - len(points)
    if missing:
        pending.append(f"{missing} of {count(len(sweep['spec']['points']), 'point')} not started")
    table = pd.DataFrame(rows)
    mode = sweep["spec"]["mode"]
    if mode == "matrix":
        scored = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame()
        return _matrix_outputs(folder, sweep, table, metric, pending, config, scored, higher_is_better)
    outputs = SweepOutputs(folder, sweep["name"], axes, table, metric, headline(table, axes), pending, config=config,
                           speed=speeds)
    csvs = {"sweep_summary.csv": table,
            "sweep_learning_speed.csv": pd.concat(long, ignore_index=True) if long else pd.DataFrame(columns=["measure"])}
    for name, frame in csvs.items():
        outputs.files[name] = folder / name
        with atomic_path(outputs.files[name]) as temporary:
            frame.to_csv(temporary, index=False)
    if not table.empty:
        outputs.files["sweep.png"] = plots.sweep_figure(table, axes, folder / "sweep.png", outputs.metric_label)
        if len(axes) > 1:  # one figure per dimension, a panel per combination of the others
            for index, axis in enumerate(axes):
                name = f"sweep_{index + 1}.png"
                outputs.files[name] = plots.sweep_dimension_figure(table, axes, axis, folder / name,
                                                                   outputs.metric_label)
    outputs.files["report.html"] = write_text(folder / "report.html", render_html(outputs))
    return outputs


def _read_point(store: Store, point: dict, with_speed: bool) -> dict:
    """One point's final-score rows, what is still to train, and (for a sweep) its
    learning-speed tables, read through its stored plan."""
    study_id, plan = store.stored_plan(point["study_id"])
    store.check_source_files(study_id, plan)
    runs = store.runs_frame(study_id)
    direction = plan.directions[0]
    chosen = runs[runs["direction"] == direction.name]
    summary = stats.summary_table(chosen, direction.score)
    targets = chosen[chosen["role"] == "target"]
    done = int(targets["status"].isin(stats.FINISHED).sum())
    read = {"rows": [{"point": point["index"], **point["values"], **row} for row in summary.to_dict("records")],
            "pending": [f"{_label(point['values'])}: {done} of {len(targets)} target runs"] if done < len(targets) else [],
            "metric": direction.score, "config": plan.study, "speed": {}, "threshold": None,
            "scores": store.scores_frame(study_id), "higher_is_better": direction.objective.higher_is_better}
    if with_speed:  # a matrix shows its grids, not each pair's learning speed
        read["speed"], read["threshold"], _ = speed.for_direction(store, study_id, plan, direction, runs, summary,
                                                                  store.study(study_id)["config"])
    return read


def _matrix_outputs(folder: Path, sweep: dict, table: pd.DataFrame, metric: str, pending: list[str],
                    config: dict, scores: pd.DataFrame, higher_is_better: bool) -> SweepOutputs:
    labels = list(sweep["spec"]["axes"]["matrix.tasks"])
    table = matrix_report.with_matrix_holm(table)
    best = matrix_report.best_per_target(table, labels) if not table.empty else pd.DataFrame()
    outputs = SweepOutputs(folder, sweep["name"], {"source": labels, "target": labels}, table, metric,
                           matrix_report.best_lines(best), pending, config=config, mode="matrix", labels=labels)
    if not scores.empty and not table.empty:
        outputs.score_ranking = predictability.ranking_table(scores, table, higher_is_better)
        outputs.score_summary = predictability.ranking_summary(outputs.score_ranking)
    files = {"matrix_summary.csv": table, "matrix_best.csv": best,
             "matrix_asymmetry.csv": matrix_report.asymmetry(table, labels) if not table.empty else pd.DataFrame(),
             "matrix_score_ranking.csv": outputs.score_ranking, "matrix_score_summary.csv": outputs.score_summary}
    for name, frame in files.items():
        outputs.files[name] = folder / name
        with atomic_path(outputs.files[name]) as temporary:
            frame.to_csv(temporary, index=False)
    if not table.empty:
        outputs.files["matrix.png"] = plots.matrix_heatmaps(table, labels, folder / "matrix.png")
    outputs.files["report.html"] = write_text(folder / "report.html", render_html(outputs))
    return outputs


def pivot_table(table: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Strategy × point: `mean Δ*` (Δ vs standalone, `*` where Holm-corrected p < 0.05)."""
    if table.empty:
        return pd.DataFrame(columns=["strategy"])
    columns = {}
    for _, point in table.groupby("point", sort=True):
        label = _short_label({axis: point.iloc[0][axis] for axis in axes})
        cells = {}
        for row in point.itertuples(index=False):
            text = "–" if np.isnan(row.mean) else f"{row.mean:.3f}"
            if not np.isnan(row.diff):
                text += f" {row.diff:+.3f}{'*' if row.p_holm < 0.05 else ''}"
            cells[row.strategy] = text
        columns[label] = cells
    frame = pd.DataFrame(columns)
    frame = frame.loc[list(dict.fromkeys(table["strategy"]))]
    frame.insert(0, "strategy", frame.index)
    return frame.reset_index(drop=True)


def headline(table: pd.DataFrame, axes: dict[str, list]) -> list[str]:
    """For each swept `n_train` (per combination of the other axes): the largest value at
    which each strategy beats standalone significantly (Δ > 0, Holm p < 0.05)."""
    lines = []
    if table.empty:
        return lines
    for axis in axes:
        if not axis.endswith(".n_train"):
            continue
        others = [a for a in axes if a != axis]
        groups = table.groupby(others, sort=False) if others else [((), table)]
        for key, group in groups:
            key = key if isinstance(key, tuple) else (key,)
            prefix = "" if not others else "with " + _label(dict(zip(others, key))) + ": "
            parts = []
            for strategy in dict.fromkeys(group["strategy"]):
                if strategy == stats.BASELINE:
                    continue
                rows = group[group["strategy"] == strategy]
                better = rows[(rows["diff"] > 0) & (rows["p_holm"] < 0.05)]
                parts.append(f"{strategy}: {int(better[axis].max()) if not better.empty else 'none'}")
            lines.append(f"{prefix}largest {axis} at which each strategy beats standalone significantly "
                         "(Δ > 0, Holm p < 0.05): " + ", ".join(parts))
    return lines


def _short_label(values: dict) -> str:
    """A pivot column: the value alone for one axis (the title names it), else `n_train=10, lr=0.1`."""
    if len(values) == 1:
        return str(next(iter(values.values())))
    return ", ".join(f"{path.split('.')[-1]}={value}" for path, value in values.items())


def _asymmetry_rows(outputs: SweepOutputs) -> list[dict]:
    """A matrix's Δ(i → j) against Δ(j → i), formatted for the report."""
    if not outputs.is_matrix or outputs.table.empty:
        return []
    frame = matrix_report.asymmetry(outputs.table, outputs.labels)
    return [{"strategy": r.strategy, "pair": f"{r.task_i} ↔ {r.task_j}", "forward": f"{r.delta_i_to_j:+.3f}",
             "backward": f"{r.delta_j_to_i:+.3f}", "asymmetry": f"{r.asymmetry:+.3f}"}
            for r in frame.itertuples(index=False) if not np.isnan(r.asymmetry)]


def _label(values: dict) -> str:
    return ", ".join(f"{path}={value}" for path, value in values.items())


def render_html(outputs: SweepOutputs) -> str:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("transferlab", "templates"),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]))
    figure = None
    for name in ("sweep.png", "matrix.png"):
        if name in outputs.files:
            figure = base64.b64encode(outputs.files[name].read_bytes()).decode("ascii")
    dimensions = [{"axis": axis, "image": base64.b64encode(outputs.files[f"sweep_{i + 1}.png"].read_bytes()).decode()}
                  for i, axis in enumerate(outputs.axes) if f"sweep_{i + 1}.png" in outputs.files]
    pivot = outputs.pivot if not outputs.is_matrix else pd.DataFrame(columns=["strategy"])
    grids = [{"strategy": strategy, "columns": list(grid.columns), "rows": grid.to_dict("records")}
             for strategy, grid in (outputs.grids().items() if outputs.is_matrix and not outputs.table.empty else [])]
    points = []
    for _, group in outputs.table.groupby("point", sort=True) if not outputs.table.empty else []:
        display = stats.display_table(group.drop(columns=["point", *outputs.axes, "p_matrix"], errors="ignore"))
        learning = outputs.speed.get(int(group.iloc[0]["point"]), pd.DataFrame())
        points.append({"label": _label({a: group.iloc[0][a] for a in outputs.axes}),
                       "columns": list(display.columns), "rows": display.to_dict("records"),
                       "speed_columns": list(learning.columns), "speed": learning.to_dict("records")})
    return environment.get_template("sweep.html.j2").render(
        outputs=outputs, figure=figure, pivot_columns=list(pivot.columns), pivot=pivot.to_dict("records"),
        points=points, config_toml=html.escape(as_toml(outputs.config)),
        grids=grids, asymmetry=_asymmetry_rows(outputs), dimensions=dimensions, predicted=_predicted_rows(outputs),
    )


def _predicted_rows(outputs: SweepOutputs) -> dict | None:
    """A matrix's "could it have been predicted?": per strategy and score, the mean τ_w over
    targets with its interval and the top-1 hits; and the per-target rankings."""
    if outputs.score_summary.empty:
        return None
    summary = [{"strategy": row.strategy, "score": row.score,
                "tau": predictability.with_interval(row.mean_tau_w, row.tau_low, row.tau_high),
                "hits": f"{row.hits} of {row.targets}"} for row in outputs.score_summary.itertuples(index=False)]
    per_target = [{"target": row.target, "strategy": row.strategy, "score": row.score,
                   "tau": predictability.with_interval(row.tau_w, float("nan"), float("nan")),
                   "top": "–" if pd.isna(row.top_source) else f"{row.top_source} → best {row.best_source}",
                   "hit": predictability.hit_text(row.hit), "note": row.note}
                  for row in outputs.score_ranking.itertuples(index=False)]
    return {"summary": summary, "per_target": per_target}
