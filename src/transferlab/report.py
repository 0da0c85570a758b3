"""Everything a finished (or partly finished) study shows: CSV tables, PNG figures and one
self-contained `report.html`, all rebuilt from the results database alone."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from transferlab import plots, stats
from transferlab.config import study_from_dict
from transferlab.store import Store


@dataclass
class Outputs:
    """What `build_report` wrote, and the summary it printed from."""

    folder: Path
    summary: pd.DataFrame
    per_source: pd.DataFrame
    files: dict[str, Path]
    study: dict
    source_models: list[dict]
    runs_done: int
    runs_planned: int


def build_report(folder: str | Path) -> Outputs:
    folder = Path(folder)
    with Store.in_folder(folder) as store:
        study = store.study()
        runs = store.runs_frame(study["id"])
        curves = store.curves_frame(study["id"])
        source_models = store.source_models(study["id"])
    config = study_from_dict(study["config"], source=str(folder / "results.sqlite"))
    summary = stats.summary_table(runs)
    per_source = stats.per_source_table(runs)
    mean_curves = stats.mean_curves(curves)

    files = {
        "summary.csv": folder / "summary.csv",
        "per_source.csv": folder / "per_source.csv",
        "runs.csv": folder / "runs.csv",
        "curves_mean.csv": folder / "curves_mean.csv",
    }
    summary.to_csv(files["summary.csv"], index=False)
    per_source.to_csv(files["per_source.csv"], index=False)
    runs.to_csv(files["runs.csv"], index=False)
    mean_curves.to_csv(files["curves_mean.csv"], index=False)

    tasks = {}
    if config.source.seed is not None:
        tasks[f"source: blobs(seed={config.source.seed})"] = config.source.make("source")
    tasks[f"target: blobs(seed={config.target.seed})"] = config.target.make("target")
    files["tasks.png"] = plots.tasks_scatter(tasks, folder / "tasks.png")
    if not mean_curves.empty:
        files["learning_curves.png"] = plots.learning_curves(mean_curves, folder / "learning_curves.png")
        files["boxplot.png"] = plots.accuracy_boxplot(runs, folder / "boxplot.png")

    targets = runs[runs["role"] == "target"]
    outputs = Outputs(
        folder=folder,
        summary=summary,
        per_source=per_source,
        files=files,
        study=study,
        source_models=source_models,
        runs_done=int((targets["status"] == "done").sum()),
        runs_planned=len(targets),
    )
    files["report.html"] = folder / "report.html"
    files["report.html"].write_text(render_html(outputs, config), encoding="utf-8")
    return outputs


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
    per_source = outputs.per_source.copy()
    if not per_source.empty:
        per_source["mean (std)"] = [
            stats.format_mean_std(m, s) for m, s in zip(per_source["mean"], per_source["std"])
        ]
    sources = [
        {
            "index": s["source_index"],
            "file": Path(s["file"]).name,
            "sha": s["file_sha256"][:16],
            "train": _fmt(s["train_accuracy"]),
            "test": _fmt(s["test_accuracy"]),
        }
        for s in outputs.source_models
    ]
    table = stats.display_table(outputs.summary)
    return template.render(
        study=outputs.study,
        config=config,
        table=table.to_dict("records"),
        summary_columns=list(table.columns),
        per_source=per_source.to_dict("records"),
        sources=sources,
        figures=figures,
        runs_done=outputs.runs_done,
        runs_planned=outputs.runs_planned,
        source_repeats=config.source_repeats,
        config_toml=html.escape(_as_toml(outputs.study["config"])),
    )


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def _as_toml(config: dict) -> str:
    """The stored configuration, shown back in study-file form."""
    lines = []
    tables = {k: v for k, v in config.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in config.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    for key, value in config.items():
        if key not in tables and key not in arrays:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    for name, entries in arrays.items():
        for entry in entries:
            lines.append(f"\n[[{name}]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
