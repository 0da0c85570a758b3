"""The `transferlab` command: run a study, run the demo, rebuild a report."""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=None if sys.stdout.isatty() else 118)
errors = Console(stderr=True)

DEMO_STUDY = "tutorial_sources.toml"
DEMO_FOLDER = "transferlab-demo"


def main() -> None:
    app()


@app.command()
def run(
    study_file: Path = typer.Argument(..., help="the study file (TOML)"),
    out: Path = typer.Option(None, "--out", "-o", help="output folder (default: ./NAME from the study)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Run STUDY_FILE into an output folder (rerun to resume), then write the table, plots and report."""
    config = _load(study_file)
    _run_and_report(config, out or Path(config.name), quiet)


@app.command()
def demo(
    out: Path = typer.Option(Path(DEMO_FOLDER), "--out", "-o", help="output folder"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """The tutorial's study with 10 source models, into ./transferlab-demo/."""
    study_file = resources.files("transferlab") / "examples" / DEMO_STUDY
    with resources.as_file(study_file) as path:
        config = _load(path)
    _run_and_report(config, out, quiet)


@app.command()
def report(folder: Path = typer.Argument(..., help="an output folder of `transferlab run`")) -> None:
    """Rebuild the table, CSVs, plots and report.html of FOLDER from its database."""
    from transferlab.report import build_report

    if not (folder / "results.sqlite").is_file():
        _fail(f"{folder}: no results.sqlite here; run a study into this folder first")
    outputs = _guard(lambda: build_report(folder))
    _print_outputs(outputs)


@app.command()
def strategies() -> None:
    """List every strategy with its parameters (and defaults), what it does and its source."""
    from transferlab.config import toml_value
    from transferlab.strategies import STRATEGIES, strategy_parameters

    table = Table(title=escape("strategies (write one [[strategies]] table per strategy in a study file)"),
                  title_justify="left", show_lines=True)
    for column in ("name", "parameters", "what it does", "reference"):
        table.add_column(column)
    for name, cls in STRATEGIES.items():
        params = ", ".join(f"{k} = {toml_value(v)}" for k, v in strategy_parameters(cls).items())
        table.add_row(name, params or "—", cls.summary, cls.reference)
    console.print(table)


def _load(path: Path):
    from transferlab.config import load_study

    return _guard(lambda: load_study(path))


def _run_and_report(config, out: Path, quiet: bool) -> None:
    from transferlab.report import build_report
    from transferlab.study import run_study

    started = time.perf_counter()
    console.print(f"[bold]{config.name}[/]: {_describe(config)} → {out}/")
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        def notify(message: str) -> None:
            bar.console.print(f"[cyan]note:[/] {message}", highlight=False)

        try:
            outcome = _guard(lambda: run_study(config, out, progress=progress, notify=notify))
        except KeyboardInterrupt:
            bar.stop()
            _fail(f"interrupted: finished shards are saved in {out}/results.sqlite; rerun the same command to resume")
    if outcome.skipped_runs:
        console.print(f"resumed: {outcome.skipped_runs} runs were already done, trained {outcome.trained_runs}")
    from transferlab.engine import release_programs

    release_programs()
    outputs = _guard(lambda: build_report(out))
    _print_outputs(outputs)
    console.print(f"wall time {time.perf_counter() - started:.1f} s")


def _describe(config) -> str:
    n_strategies = len(config.strategies)
    return (
        f"{n_strategies} strategies × {config.repeats} repeats, {config.source_repeats} source "
        f"model{'s' if config.source_repeats > 1 else ''}, {config.training.epochs} epochs"
        + (", both directions" if config.reverse else "")
    )


def _print_outputs(outputs) -> None:
    from transferlab import stats

    for direction in outputs.directions:
        prefix = f"{outputs.study['name']}" + (f" ({direction.name})" if len(outputs.directions) > 1 else "")
        _print_frame(stats.display_table(direction.summary), f"{prefix}: {direction.metric_label} on {direction.title}")
        per_source = direction.per_source
        if not per_source.empty and per_source["source_index"].nunique() > 1 and per_source["strategy"].nunique() <= 6:
            wide = per_source.pivot(index="source_index", columns="strategy", values="mean")
            wide = wide[list(dict.fromkeys(per_source["strategy"]))]
            wide.insert(0, "source", wide.index.astype(str))
            for column in wide.columns[1:]:
                wide[column] = [f"{v:.3f}" for v in wide[column]]
            _print_frame(wide, f"mean {direction.metric_label} per source model")
    both = outputs.side_by_side()
    if both is not None:
        _print_frame(both, "both directions (* = Holm-corrected p < 0.05 against standalone)")
    if outputs.runs_done < outputs.runs_planned:
        console.print(f"[yellow]{outputs.runs_planned - outputs.runs_done} runs still to train[/]")
    names = ", ".join(sorted(path.name for path in outputs.files.values()))
    console.print(f"wrote {outputs.folder}/: {names}")


def _print_frame(frame, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(frame.columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*[str(value) for value in row])
    console.print(table)


def _guard(action):
    """Run `action`, turning transferlab's own input errors into one line and exit code 2."""
    from transferlab.config import StudyFileError
    from transferlab.models import ModelFileError
    from transferlab.store import StoreError
    from transferlab.tasks import TaskError

    try:
        return action()
    except (StudyFileError, ModelFileError, StoreError, TaskError) as error:
        _fail(str(error))


def _fail(message: str) -> None:
    errors.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


if __name__ == "__main__":
    sys.exit(main())
