"""Everything a finished (or partly finished) study shows: CSV tables, PNG figures and one
self-contained `report.html`, all rebuilt from the results database alone."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from transferlab import objectives, plots, predictability, speed, stats, verdict
from transferlab._backend import configure
from transferlab.config import as_toml
from transferlab.folder import atomic_path, check_writable, write_text
from transferlab.store import Store
from transferlab.transferability import notes_by_reason
from transferlab.words import count


@dataclass
class DirectionReport:
    """One direction's results: its title, headline metric and tables."""

    name: str
    title: str
    metric: str
    summary: pd.DataFrame
    per_source: pd.DataFrame
    recipes: list[dict]
    runs_done: int
    runs_planned: int
    sources_done: int = 0
    sources_planned: int = 0
    figures: dict[str, str] = field(default_factory=dict)
    speed: dict[str, pd.DataFrame] = field(default_factory=dict)
    threshold: float | None = None
    threshold_source: str = ""
    findings: list = field(default_factory=list)  # `verdict.Finding`s, best first
    verdict: str = ""
    warnings: list[str] = field(default_factory=list)
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)  # each source model's transferability scores
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)  # each score against the measured outcome
    outcomes: pd.DataFrame = field(default_factory=pd.DataFrame)  # each strategy's mean per source model

    @property
    def diverged(self) -> int:
        return int(self.summary["diverged"].sum()) if "diverged" in self.summary else 0

    def progress(self) -> str | None:
        """What is still to train, in words (None when the direction is finished)."""
        pending = []
        if self.sources_done < self.sources_planned:
            pending.append(f"{self.sources_done} of {count(self.sources_planned, 'source model')}")
        if self.runs_done < self.runs_planned:
            pending.append(f"{self.runs_done} of {self.runs_planned} target runs")
        return None if not pending else f"{self.name}: {' and '.join(pending)} trained so far"

    @property
    def metric_label(self) -> str:
        return plots.metric_name(self.metric)


@dataclass
class Outputs:
    """What `build_report` wrote, and the tables it printed from."""

    folder: Path
    directions: list[DirectionReport]
    files: dict[str, Path]
    study: dict
    source_models: list[dict]

    @property
    def summary(self) -> pd.DataFrame:
        return self.directions[0].summary

    @property
    def per_source(self) -> pd.DataFrame:
        return self.directions[0].per_source

    @property
    def runs_done(self) -> int:
        return sum(d.runs_done for d in self.directions)

    @property
    def runs_planned(self) -> int:
        return sum(d.runs_planned for d in self.directions)

    @property
    def pending(self) -> list[str]:
        """One line per unfinished direction (empty when the study is complete)."""
        return [line for line in (d.progress() for d in self.directions) if line]

    def side_by_side(self) -> pd.DataFrame | None:
        if len(self.directions) < 2:
            return None
        return stats.side_by_side({d.name: d.summary for d in self.directions})


def build_report(folder: str | Path, threshold: float | None = None) -> Outputs:
    """Rebuild every table, figure and `report.html` of `folder` from its database: one
    consistent snapshot (a run may be committing meanwhile), read through the stored plan.
    Each file is written to a temporary name and renamed, so none is ever seen half-written.
    `threshold` is the time-to-threshold level (default: the study's `[report] threshold`,
    else 95% of standalone's final mean)."""
    configure()  # the first study, report or read of a process sets the backend up (a no-op after)
    folder = Path(folder)
    if (folder / "results.sqlite").is_file():  # (a missing database gets its own message)
        check_writable(folder, "make it writable, or copy the folder and report the copy")
    with Store.in_folder(folder, readonly=True) as store:
        holds_sweep = store.sweep() is not None
    if holds_sweep:
        from transferlab.sweep_report import build_sweep_report

        return build_sweep_report(folder)
    with Store.in_folder(folder, readonly=True) as store, store.snapshot():
        read = _read_study(store, threshold)
    files: dict[str, Path] = {}
    directions = [_direction_report(read, direction, folder, files) for direction in read.plan.directions]
    speeds = [speed.long_table(d.speed, d.name, d.threshold) for d in directions if d.runs_done]
    tables = {
        "summary.csv": pd.concat([d.summary.assign(direction=d.name, metric=d.metric) for d in directions],
                                 ignore_index=True),
        "per_source.csv": pd.concat([d.per_source.assign(direction=d.name) for d in directions], ignore_index=True),
        "scores.csv": pd.concat([d.scores for d in directions], ignore_index=True),
        "score_agreement.csv": pd.concat([d.agreement.assign(direction=d.name) for d in directions],
                                         ignore_index=True),
        "learning_speed.csv": pd.concat(speeds, ignore_index=True) if speeds else pd.DataFrame(columns=["measure"]),
        "runs.csv": read.runs,
        "curves_mean.csv": read.mean_curves,
    }
    for file_name, table in tables.items():
        files[file_name] = folder / file_name
        with atomic_path(files[file_name]) as temporary:
            table.to_csv(temporary, index=False)
    files["tasks.png"] = _tasks_figure(read.plan, folder / "tasks.png")
    outputs = Outputs(folder=folder, directions=directions, files=files, study=read.study,
                      source_models=read.source_models)
    files["report.html"] = write_text(folder / "report.html", render_html(outputs, read.plan))
    return outputs


@dataclass
class _StudyRead:
    """What a study's report reads from its database, in one snapshot."""

    study: dict
    plan: object
    runs: pd.DataFrame
    mean_curves: pd.DataFrame
    source_models: list[dict]
    layer_records: pd.DataFrame
    summaries: dict[str, pd.DataFrame]
    thresholds: dict[str, tuple]
    measures: dict[str, pd.DataFrame]
    scores: pd.DataFrame


def _read_study(store: Store, threshold: float | None) -> _StudyRead:
    study = store.study()
    study_id, plan = store.stored_plan()
    store.check_source_files(study_id, plan)
    runs = store.runs_frame(study_id)
    summaries, thresholds, measures = {}, {}, {}
    for direction in plan.directions:
        chosen = runs[runs["direction"] == direction.name]
        summaries[direction.name] = stats.summary_table(chosen, direction.score)
        thresholds[direction.name] = speed.threshold_for(threshold, study["config"], summaries[direction.name])
        measures[direction.name] = store.learning_measures(
            study_id, direction.name, speed.curve_metric(direction.score), thresholds[direction.name][0])
    return _StudyRead(study, plan, runs, store.mean_curves(study_id), store.source_models(study_id),
                      store.layer_records(study_id), summaries, thresholds, measures, store.scores_frame(study_id))


def _direction_report(read: _StudyRead, direction, folder: Path, files: dict[str, Path]) -> DirectionReport:
    """One direction's tables, verdict, warnings, learning speed and figures (written to `files`)."""
    name = direction.name
    chosen = read.runs[read.runs["direction"] == name]
    targets, sources = chosen[chosen["role"] == "target"], chosen[chosen["role"] == "source"]
    report = DirectionReport(
        name=name,
        title=direction.title,
        metric=direction.score,
        summary=read.summaries[name],
        per_source=stats.per_source_table(chosen, direction.score),
        recipes=_recipes(read.layer_records[read.layer_records["direction"] == name]),
        runs_done=int(targets["status"].isin(stats.FINISHED).sum()),
        runs_planned=len(targets),
        sources_done=int(sources["status"].isin(stats.FINISHED).sum()),
        sources_planned=len(sources),
    )
    report.findings = verdict.findings(report.summary, direction.objective.higher_is_better)
    report.verdict = verdict.sentence(report.findings, report.summary, report.metric_label)
    report.warnings = verdict.warnings_for(report.summary, _source_scores(sources, direction),
                                           stats.metric_bounds(direction.score))
    report.threshold, report.threshold_source = read.thresholds[name]
    report.scores = read.scores[read.scores["direction"] == name].reset_index(drop=True)
    if not report.scores.empty:
        report.outcomes = predictability.source_outcomes(chosen, direction.score)
        report.agreement = predictability.agreement_table(report.scores, report.outcomes,
                                                          direction.objective.higher_is_better)
    if report.runs_done:
        report.speed = speed.tables_for(chosen, read.measures[name], read.plan.training.epochs, direction.score,
                                        report.threshold)
    _direction_figures(report, direction, chosen, read.mean_curves[read.mean_curves["direction"] == name], folder,
                       files)
    return report


def _direction_figures(report: DirectionReport, direction, chosen: pd.DataFrame, curves: pd.DataFrame, folder: Path,
                       files: dict[str, Path]) -> None:
    """Learning curves, all strategies compared, per source model and the box plot."""
    suffix = "" if direction.name == "forward" else f"_{direction.name}"
    figures = {}
    if not curves.empty:
        score = direction.objective.headline
        figures["curves"] = ("learning_curves", lambda path: plots.learning_curves(curves, path, score))
        figures["compared"] = ("curves_compared", lambda path: plots.comparison_curves(curves, path, score))
    if not report.per_source.empty and report.per_source["source_index"].nunique() > 1:
        figures["per_source"] = ("per_source",
                                 lambda path: plots.per_source_heatmap(report.per_source, path, direction.score))
    if not report.agreement.empty and report.agreement["tau_w"].notna().any():
        wide = predictability.score_columns(report.scores)
        figures["scores"] = ("scores", lambda path: plots.score_scatter(wide, report.outcomes, path, direction.score))
    if report.runs_done:  # finished runs, diverged ones included: the plot counts those
        figures["boxplot"] = ("boxplot", lambda path: plots.score_boxplot(chosen, path, direction.score))
    for key, (stem, draw) in figures.items():
        file_name = f"{stem}{suffix}.png"
        files[file_name] = draw(folder / file_name)
        report.figures[key] = file_name


def _tasks_figure(plan, path: Path) -> Path:
    """The forward direction's tasks drawn side by side (`tasks.png`)."""
    forward = plan.directions[0]
    tasks = {}
    if forward.source_spec is not None:
        tasks[f"source: {forward.source_spec.description}"] = forward.source_task
    tasks[f"target: {forward.target_spec.description}"] = forward.target_task
    return plots.tasks_scatter(tasks, path)


def _verdict_row(found) -> dict:
    return {
        "strategy": found.strategy, "outcome": found.outcome,
        "css": {verdict.BETTER: "better", verdict.WORSE: "worse"}.get(found.outcome, ""),
        "diff": found.difference_text,
        "p": stats.format_p(found.p_holm),
        "detectable": found.detectable_text,
        "needed": found.needed_texts("more than 100,000"),
    }


def _source_scores(sources: pd.DataFrame, direction) -> list[tuple[int, float]]:
    """Each trained source model's score on its own task's test split."""
    done = sources[sources["status"] == "done"]
    if done.empty or direction.source_spec is None:
        return []
    metric = objectives.for_kind(direction.source_spec.kind).score_column
    return [(int(i), float(v)) for i, v in zip(done["source_index"], done[metric])]


def _source_score(plan, source: dict, split: str) -> str:
    """A source model's headline score on its own task's `split` (blank for a model file
    whose task is not described)."""
    spec = getattr(plan.direction(source["direction"]), "source_spec", None)
    if spec is None:
        return ""
    return _fmt(source.get(objectives.column(split, objectives.for_kind(spec.kind).headline)))


def _speed_part(measure: str, summary: pd.DataFrame) -> dict:
    """One learning-speed measure as the report shows it (times with one decimal)."""
    table = stats.display_table(summary, digits=1 if measure == "time_to_threshold" else 3)
    if "censored" in summary:
        table["never reached"] = [f"{c} of {n}" if c else "" for c, n in zip(summary["censored"], summary["n"])]
    return {"label": speed.MEASURES[measure], "columns": list(table.columns), "rows": table.to_dict("records")}


def _recipes(records: pd.DataFrame) -> list[dict]:
    """Per strategy: the target architecture and each layer's origin and learning-rate schedule."""
    from transferlab.models import Architecture

    recipes = []
    for row in records.itertuples(index=False):
        recipes.append(
            {
                "strategy": row.strategy,
                "architecture": Architecture.from_dict(json.loads(row.architecture_json)).describe(),
                "layers": json.loads(row.layers_json),
            }
        )
    return recipes


def render_html(outputs: Outputs, plan) -> str:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("transferlab", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    template = environment.get_template("report.html.j2")
    figures = {
        name: base64.b64encode(path.read_bytes()).decode("ascii")
        for name, path in outputs.files.items()
        if name.endswith(".png")
    }
    sections = []
    for direction in outputs.directions:
        per_source = direction.per_source.copy()
        if not per_source.empty:
            per_source["mean (std)"] = [
                stats.format_mean_std(m, s) for m, s in zip(per_source["mean"], per_source["std"])
            ]
        table = stats.display_table(direction.summary, bounds=stats.metric_bounds(direction.metric))
        sections.append(
            {
                "verdict": [_verdict_row(found) for found in direction.findings],
                "direction": direction,
                "table": table.to_dict("records"),
                "columns": list(table.columns),
                "per_source": per_source.to_dict("records"),
                "predicted": _predicted_part(direction),
                "speed": [_speed_part(measure, summary) for measure, summary in direction.speed.items()],
                "notice": getattr(plan.direction(direction.name), "notice", None),
            }
        )
    both = outputs.side_by_side()
    sources = [
        {
            "direction": s["direction"],
            "index": s["source_index"],
            "file": Path(s["file"]).name,
            "sha": s["file_sha256"][:16],
            "train": _source_score(plan, s, "train"),
            "test": _source_score(plan, s, "test"),
        }
        for s in outputs.source_models
    ]
    return template.render(
        data=data_provenance(plan),
        study=outputs.study,
        plan=plan,
        pending=outputs.pending,
        diverged_note=stats.DIVERGED_NOTE if any(d.diverged for d in outputs.directions) else "",
        sections=sections,
        both=None if both is None else both.to_dict("records"),
        both_columns=[] if both is None else list(both.columns),
        sources=sources,
        figures=figures,
        small=[f"{d:g}" for d in verdict.SMALL_DIFFERENCES],
        runs_done=outputs.runs_done,
        runs_planned=outputs.runs_planned,
        source_repeats=plan.source_repeats,
        config_toml=html.escape(as_toml(outputs.study["config"])),
    )


def _predicted_part(direction: DirectionReport) -> dict | None:
    """The "could it have been predicted?" section: each score against the measured outcome
    per strategy, the scores per source model, and why a score has no value."""
    if direction.scores.empty:
        return {"missing": True} if direction.sources_done and direction.sources_done == direction.sources_planned \
            else None
    wide = predictability.score_columns(direction.scores)
    values = [{"source": int(index), **{name: _fmt(value) for name, value in row.items()}}
              for index, row in wide.iterrows()]
    rows = [{"strategy": row.strategy, "score": row.score,
             "tau": predictability.with_interval(row.tau_w, row.tau_low, row.tau_high),
             "r": predictability.with_interval(row.r, row.r_low, row.r_high),
             "top": "–" if pd.isna(row.top_source) else f"{int(row.top_source)} → best {int(row.best_source)}",
             "hit": predictability.hit_text(row.hit),
             "note": row.note} for row in direction.agreement.itertuples(index=False)]
    notes = notes_by_reason(direction.scores)
    return {"rows": rows, "values": values, "names": list(wide.columns), "notes": notes,
            "layer": int(direction.scores["layer"].iloc[0]), "sources": len(wide)}


def data_provenance(plan) -> dict:
    """Per task (columns) what the report says about its data (rows): origin, file hash,
    fingerprint, rows, columns, classes, selection, split, preprocessing."""
    specs = plan.task_specs()
    rows = [(label, [_provenance_value(key, spec) for spec in specs.values()]) for key, label in _PROVENANCE_ROWS]
    return {"roles": [f"{role}: {spec.description}" for role, spec in specs.items()],
            "rows": [{"label": label, "cells": values} for label, values in rows if any(values)]}


_PROVENANCE_ROWS = (
    ("origin", "from"), ("file_sha256", "file SHA-256"), ("fingerprint", "data fingerprint (SHA-256)"),
    ("rows", "rows"), ("features", "feature columns"), ("target", "target"), ("classes", "classes"),
    ("selection", "selection"), ("split", "split"), ("encoding", "categorical columns"),
    ("standardize", "standardisation"), ("notes", "notes"),
)


def _provenance_value(key: str, spec) -> str:
    from transferlab.data.labels import describe_counts
    from transferlab.data.select import listing

    data = spec.provenance
    origin = data.get("origin", {})
    if key == "origin":
        if "generator" in origin:
            params = ", ".join(f"{k}={v}" for k, v in origin.get("params", {}).items() if k != "n_train")
            return f"{origin['generator']}({params})"
        if "dataset" in origin:
            return f"{origin['loader']}() (bundled with scikit-learn)"
        if "train" in origin:
            return f"{origin['train']['path']} (train) and {origin['test']['path']} (test)"
        return origin.get("path", "a DataFrame or arrays given in Python")
    if key == "file_sha256":
        if "train" in origin:
            return f"{origin['train']['sha256'][:16]}… / {origin['test']['sha256'][:16]}…"
        return f"{origin['sha256'][:16]}…" if origin.get("sha256") else ""
    if key == "fingerprint":
        return f"{spec.fingerprint[:16]}…"
    if key == "rows":
        if "rows" not in data:
            return ""
        read = f"{data['rows_read']:,} read, " if data.get("rows_read") != data["rows"] else ""
        return f"{read}{data['rows']:,} used: {data['train_rows']:,} train, {data['test_rows']:,} test"
    if key == "features":
        return f"{len(spec.feature_names)}: {listing(spec.feature_names, 12)}"
    if key == "target":
        return f"{', '.join(data.get('target', []))} ({spec.kind})" if data.get("target") else spec.kind
    if key == "classes":
        if data.get("class_counts"):
            return describe_counts(spec.class_names, data["class_counts"])
        return listing(spec.class_names, 20) if spec.class_names else ""
    if key == "notes":
        return "; ".join(data.get("notes") or ())
    if key == "encoding":
        encoding = data.get("categorical")
        if not encoding:
            return ""
        columns = "; ".join(f"{c}: {', '.join(v)}" for c, v in encoding["categories"].items())
        return f"one-hot ({encoding['encoder']}), categories from the training rows: {columns}"
    if key == "selection":
        parts = [f"query {data['query']}" if data.get("query") else "",
                 f"classes {', '.join(data['classes_selected'])}" if data.get("classes_selected") else "",
                 f"{count(data['n_rows'], 'row')} drawn at random" if data.get("n_rows") else "",
                 f"{count(data['rows_dropped_missing'], 'row')} with missing values dropped" if data.get("rows_dropped_missing") else ""]
        return "; ".join(p for p in parts if p) or ("all rows" if data else "")
    if key == "split":
        return data.get("split", "")
    if key == "standardize":
        text = data.get("standardize", "")
        if data.get("target_standardization"):
            text += "; targets by the training rows' mean and std"
        return text
    return ""


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
