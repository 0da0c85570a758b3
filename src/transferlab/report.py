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

from transferlab import plots, stats
from transferlab.config import as_toml, study_from_dict
from transferlab.store import Store


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
    figures: dict[str, str] = field(default_factory=dict)

    @property
    def metric_label(self) -> str:
        return {"test_accuracy": "test accuracy", "test_r2": "test R²"}.get(self.metric, self.metric)


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

    def side_by_side(self) -> pd.DataFrame | None:
        if len(self.directions) < 2:
            return None
        return stats.side_by_side({d.name: d.summary for d in self.directions})


def build_report(folder: str | Path) -> Outputs:
    folder = Path(folder)
    with Store.in_folder(folder) as store:
        study = store.study()
        runs = store.runs_frame(study["id"])
        curves = store.curves_frame(study["id"])
        source_models = store.source_models(study["id"])
        layer_records = store.layer_records(study["id"])
    config = study_from_dict(study["config"], source=str(folder / "results.sqlite"), check_model_file=False)
    target_task = config.target.make("target")
    source_task = config.source.make("source") if config.source.seed is not None else None
    names = {"forward": (config.source, config.target, target_task)}
    if config.reverse:
        names["reverse"] = (config.target, config.source, source_task)
    mean_curves = stats.mean_curves(curves)

    files: dict[str, Path] = {}
    directions, summaries, per_sources = [], [], []
    for name, (from_config, to_config, to_task) in names.items():
        chosen = runs[runs["direction"] == name]
        targets = chosen[chosen["role"] == "target"]
        suffix = "" if name == "forward" else f"_{name}"
        report = DirectionReport(
            name=name,
            title=f"{_task_name(from_config)} → {to_config.describe()}",
            metric=to_task.score,
            summary=stats.summary_table(chosen, to_task.score),
            per_source=stats.per_source_table(chosen, to_task.score),
            recipes=_recipes(layer_records[layer_records["direction"] == name]),
            runs_done=int((targets["status"] == "done").sum()),
            runs_planned=len(targets),
        )
        direction_curves = mean_curves[mean_curves["direction"] == name]
        if not direction_curves.empty:
            score = "accuracy" if to_task.kind == "classification" else "r2"
            files[f"learning_curves{suffix}.png"] = plots.learning_curves(
                direction_curves, folder / f"learning_curves{suffix}.png", score
            )
            files[f"boxplot{suffix}.png"] = plots.accuracy_boxplot(chosen, folder / f"boxplot{suffix}.png", to_task.score)
            report.figures = {"curves": f"learning_curves{suffix}.png", "boxplot": f"boxplot{suffix}.png"}
        directions.append(report)
        summaries.append(report.summary.assign(direction=name, metric=to_task.score))
        per_sources.append(report.per_source.assign(direction=name))

    tables = {
        "summary.csv": pd.concat(summaries, ignore_index=True),
        "per_source.csv": pd.concat(per_sources, ignore_index=True),
        "runs.csv": runs,
        "curves_mean.csv": mean_curves,
    }
    for file_name, table in tables.items():
        files[file_name] = folder / file_name
        table.to_csv(files[file_name], index=False)

    tasks = {}
    if source_task is not None:
        tasks[f"source: {config.source.describe()}"] = source_task
    tasks[f"target: {config.target.describe()}"] = target_task
    files["tasks.png"] = plots.tasks_scatter(tasks, folder / "tasks.png")

    outputs = Outputs(folder=folder, directions=directions, files=files, study=study, source_models=source_models)
    files["report.html"] = folder / "report.html"
    files["report.html"].write_text(render_html(outputs, config), encoding="utf-8")
    return outputs


def _task_name(task_config) -> str:
    if getattr(task_config, "model_file", None):
        return Path(task_config.model_file).name
    return task_config.describe()


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


def render_html(outputs: Outputs, config) -> str:
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
        table = stats.display_table(direction.summary)
        sections.append(
            {
                "direction": direction,
                "table": table.to_dict("records"),
                "columns": list(table.columns),
                "per_source": per_source.to_dict("records"),
            }
        )
    both = outputs.side_by_side()
    sources = [
        {
            "direction": s["direction"],
            "index": s["source_index"],
            "file": Path(s["file"]).name,
            "sha": s["file_sha256"][:16],
            "train": _fmt(s["train_accuracy"] if s["train_accuracy"] is not None else s["train_r2"]),
            "test": _fmt(s["test_accuracy"] if s["test_accuracy"] is not None else s["test_r2"]),
        }
        for s in outputs.source_models
    ]
    return template.render(
        study=outputs.study,
        config=config,
        sections=sections,
        both=None if both is None else both.to_dict("records"),
        both_columns=[] if both is None else list(both.columns),
        sources=sources,
        figures=figures,
        runs_done=outputs.runs_done,
        runs_planned=outputs.runs_planned,
        source_repeats=config.source_repeats,
        config_toml=html.escape(as_toml(outputs.study["config"])),
    )


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
