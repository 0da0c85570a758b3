"""The `transferlab` commands: run a study, run the demo, rebuild a report, list strategies.

Exit codes: 0 done, 1 internal error, 2 bad input (one line naming the file, field, row or
layer), 130 interrupted (one line; the folder stays resumable)."""

from __future__ import annotations

import math
import os
import sys
import time
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from transferlab import interrupts
from transferlab.words import count

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False,
                  rich_markup_mode=None)  # plain help: flags as users type them, no <bool> placeholders
console = Console(width=None if sys.stdout.isatty() else 118)
errors = Console(stderr=True)

def _version(value: bool) -> None:
    if value:
        from transferlab._version import __version__

        console.print(f"transferlab {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit"),
    extension: list[str] = typer.Option(
        None, "--extension", "-x", metavar="FILE.py|MODULE", envvar="TRANSFERLAB_EXTENSIONS",
        help="import your own strategies or layer types first (a .py file or a module that calls "
             "transferlab.register_strategy / register_layer); repeat for several"),
) -> None:
    """Does reusing a network trained on a related problem help? Run `transferlab init study.toml` to start."""
    if extension:
        from transferlab.registry import load_extension

        _guard(lambda: [load_extension(spec) for spec in extension])


DEMO_STUDY = "tutorial_sources.toml"
DEMO_FOLDER = "transferlab-demo"
EXIT_INTERNAL, EXIT_BAD_INPUT = 1, 2


@app.command()
def run(
    study_file: Path = typer.Argument(..., help="the study file (TOML)"),
    out: Path = typer.Option(None, "--out", "-o", help="output folder (default: ./NAME from the study)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the verdict and where the outputs are"),
    force: bool = typer.Option(False, "--force", help="start even if the memory estimate exceeds what is available"),
    ray: str = typer.Option(None, "--ray", metavar="auto|ADDRESS",
                            help="train the shards on a Ray cluster (auto: the one this machine belongs to)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="start a study estimated over an hour without asking"),
) -> None:
    """Run STUDY_FILE into an output folder (rerun to resume), then write the table, plots and report."""
    config = _load(study_file)
    from transferlab.sweep import Sweep

    if ray is not None:
        _require_ray()
    if isinstance(config, Sweep):
        _run_sweep_and_report(config, out or Path(config.name), quiet, force, ray, yes)
    else:
        _run_and_report(config, out or Path(config.name), quiet, force, ray, yes)


@app.command()
def demo(
    out: Path = typer.Option(Path(DEMO_FOLDER), "--out", "-o", help="output folder"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the verdict and where the outputs are"),
    force: bool = typer.Option(False, "--force", help="start even if the memory estimate exceeds what is available"),
    ray: str = typer.Option(None, "--ray", metavar="auto|ADDRESS", help="train the shards on a Ray cluster"),
) -> None:
    """The tutorial's study with 10 source models, into ./transferlab-demo/."""
    if ray is not None:
        _require_ray()
    study_file = resources.files("transferlab") / "examples" / DEMO_STUDY
    with resources.as_file(study_file) as path:
        config = _load(path)
    _run_and_report(config, out, quiet, force, ray)


@app.command()
def report(
    folder: Path = typer.Argument(..., help="an output folder of `transferlab run`"),
    threshold: float = typer.Option(None, "--threshold", help="the time-to-threshold score "
                                    "(default: the study's [report] threshold, else 95% of standalone's final mean)"),
) -> None:
    """Rebuild the table, CSVs, plots and report.html of FOLDER from its database."""
    if threshold is not None and not math.isfinite(threshold):
        _fail(f"--threshold {threshold}: give a finite score (e.g. 0.8), as the study file's [report] threshold")
    outputs = _write_report(folder, threshold)
    _print_outputs(outputs)


@app.command()
def compare(
    folder_a: Path = typer.Argument(..., help="an output folder of `transferlab run` (A)"),
    folder_b: Path = typer.Argument(..., help="another one (B)"),
    out: Path = typer.Option(Path("compare.csv"), "--out", "-o", help="the CSV to write"),
) -> None:
    """Compare two studies: the strategies they share, side by side, and B − A with its interval."""

    def build():
        from transferlab.compare import compare_studies
        from transferlab.folder import prepare_output_path

        prepare_output_path(out, folder=False)  # before the work: an unwritable --out is one line
        return compare_studies(folder_a, folder_b)

    comparison = _guard(build)
    from transferlab.compare import display
    from transferlab.folder import atomic_path
    from transferlab.plots import metric_name

    _print_frame(display(comparison), f"A = {folder_a} ({comparison.names[0]}), B = {folder_b} "
                                      f"({comparison.names[1]}): {metric_name(comparison.metric)}; units as in each "
                                      "study, Welch, Holm")
    console.print(escape(f"configurations differ in: {comparison.differences}" if comparison.differences
                         else "the configurations are the same"), highlight=False)
    for warning in comparison.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    with atomic_path(out) as temporary:
        comparison.table.to_csv(temporary, index=False)
    console.print(f"wrote {escape(str(out))}", highlight=False)


@app.command()
def export(
    folder: Path = typer.Argument(..., help="an output folder of `transferlab run`"),
    format: str = typer.Option("parquet", "--format", help="parquet or csv"),
    out: Path = typer.Option(None, "--out", "-o", help="where to write (default: FOLDER/export/)"),
) -> None:
    """Write FOLDER's tables (runs, curves, summary, learning_speed, points) as Parquet or CSV files."""
    if format not in ("parquet", "csv"):
        _fail(f"--format {format!r}: use parquet or csv")

    def write():
        from transferlab.frames import export as write_tables

        return write_tables(folder, format, out)

    paths = _guard(write)
    console.print(f"wrote {escape(str(paths[0].parent))}/: {escape(', '.join(p.name for p in paths))}", highlight=False)


@app.command()
def score(
    files: list[Path] = typer.Argument(..., help="a study file and/or .keras model files (with --target: model files)"),
    target: str = typer.Option(None, "--target", "-t", metavar="TARGET_SPEC",
                               help='the target as a [target] table in TOML, e.g. \'kind = "blobs", seed = 2\''),
    layer: int = typer.Option(None, "--layer", help="the hidden layer the feature scores read (default: the last)"),
    folder: Path = typer.Option(None, "--folder", help="where the study's trained source models are "
                                "(default: ./NAME from the study)"),
    out: Path = typer.Option(Path("scores.csv"), "--out", "-o", help="the CSV to write"),
) -> None:
    """Rank source models for a target without training: every transferability score of each model."""
    started = time.perf_counter()

    def compute():
        from transferlab.folder import prepare_output_path
        from transferlab.transferability import score_model_files

        prepare_output_path(out, folder=False)  # before the work: an unwritable --out is one line
        task, study_layer, paths = _scoring_inputs(files, target, folder)
        return task, score_model_files(task, paths, layer if layer is not None else study_layer)

    task, long = _guard(compute)
    from transferlab.folder import atomic_path
    from transferlab.transferability import notes_by_reason, wide_scores

    wide = wide_scores(long)
    for note in task.notes:
        console.print(f"note: target: {escape(note)}", highlight=False)
    shown = wide.drop(columns=["notes"]).assign(file=[Path(name).name for name in wide["file"]])
    shown = shown.assign(**{name: [f"{value:.3f}" if value == value else "–" for value in shown[name]]
                            for name in shown.columns[2:]})
    _print_frame(shown, f"transferability scores on the target's {len(task.x_train):,} training rows "
                        "(higher: expected to transfer better)")
    for line in notes_by_reason(long):
        console.print(f"[yellow]note:[/] {escape(line)}", highlight=False)
    seconds = time.perf_counter() - started
    console.print(escape(f"{count(len(wide), 'model')} scored in {seconds:.2f} s ({long['seconds'].sum():.2f} s "
                         "the forward passes and scores, the rest reading the files and the target)"), highlight=False)
    with atomic_path(out) as temporary:
        wide.to_csv(temporary, index=False)
    console.print(f"wrote {escape(str(out))}", highlight=False)


def _scoring_inputs(files: list[Path], target: str | None, folder: Path | None):
    """The target task, the layer the study names (`[scores] layer`, None without a study)
    and the model files `transferlab score` reads: with `--target`, the files are models;
    else the first file is a study, whose target is scored against its model file, its
    trained source models (in `folder`) and any further files."""
    from transferlab.api import scoring_target
    from transferlab.errors import ModelFileError, StudyFileError

    if target is not None:
        return (*scoring_target(_target_table(target), Path.cwd()), files)
    study, models = files[0], files[1:]
    if study.suffix.lower() != ".toml":
        raise StudyFileError(f"{study}: give a study file (.toml) first, or the target with --target TARGET_SPEC")
    config = _load(study)
    task, study_layer = scoring_target(config)
    given = [Path(config.source.model_file)] if config.source.model_file else []
    trained = _trained_sources(folder or Path(config.name), config)
    if not (given or trained or models):
        raise ModelFileError(f"{study}: no source model to score: the study trains its source models; run it first "
                             "(transferlab run), give --folder, or list .keras files after the study file")
    return task, study_layer, given + trained + list(models)


def _trained_sources(folder: Path, config) -> list[Path]:
    """The forward source model files the study's output folder holds (none when it has
    none); a folder holding another study is refused, never read as this one's."""
    from transferlab.errors import StoreError
    from transferlab.plan import plan_of
    from transferlab.store import DATABASE_NAME, Store

    if not (folder / DATABASE_NAME).is_file():
        return []
    with Store.in_folder(folder, readonly=True) as store:
        if not store.has_study():
            return []
        held = store.study()
        if store.sweep() is not None or held["plan_sha256"] != plan_of(config).sha256():
            raise StoreError(f"{folder}: holds another study than {config.name!r} (its settings or data differ); "
                             "give --folder with this study's output folder, or list the model files to score")
        return [Path(record["file"]) for record in store.source_models(held["id"], "forward") if record["trained_here"]]


def _target_table(spec: str) -> dict:
    """`--target`'s TOML: a table's fields (`kind = "blobs", seed = 2`), braces optional."""
    import tomllib

    from transferlab.errors import StudyFileError

    text = spec.strip()
    text = text if text.startswith("{") else "{ " + text + " }"
    try:
        return tomllib.loads(f"target = {text}")["target"]
    except tomllib.TOMLDecodeError as error:
        raise StudyFileError(f"--target {spec!r}: not a TOML table ({error}); write it as in a study file's "
                             "[target], e.g. 'kind = \"blobs\", seed = 2'") from None


@app.command()
def migrate(folder: Path = typer.Argument(..., help="an output folder written by an earlier transferlab")) -> None:
    """Convert FOLDER's results database to this version's schema, in place and atomically (its numbers checked)."""

    def convert():
        from transferlab.migrate import migrate_folder

        return migrate_folder(folder)

    console.print(escape(_guard(convert).describe()), highlight=False)


@app.command()
def strategies() -> None:
    """List every strategy with its parameters (and defaults), what it does and its source."""
    from transferlab.config import toml_value
    from transferlab.strategies import REGISTRY, strategy_parameters

    table = Table(title=escape("strategies (write one [[strategies]] table per strategy in a study file)"),
                  title_justify="left", show_lines=True)
    for column in ("name", "parameters", "what it does", "reference"):
        table.add_column(column)
    for name, cls in REGISTRY.items():
        params = ", ".join(f"{k} = {'(required)' if v is ... else toml_value(v)}"
                           for k, v in strategy_parameters(cls).items())
        table.add_row(name, params or "—", cls.summary, cls.reference)
    console.print(table)


@app.command()
def init(
    study_file: Path = typer.Argument(None, help="the study file to write (TOML)"),
    example: str = typer.Option("tutorial", "--example", "-e", help="the shipped example to start from"),
    list_: bool = typer.Option(False, "--list", help="list the shipped examples"),
) -> None:
    """Write a commented study file to start from (one of the shipped examples)."""
    shipped = _examples()
    if list_:
        for name, text in shipped.items():
            console.print(f"{escape(name):<20} {escape(_first_sentence(text))}", highlight=False)
        return
    if study_file is None:
        _fail("give the study file to write, e.g. transferlab init study.toml (--list shows the examples)")
    if example not in shipped:
        _fail(f"--example {example!r}: not a shipped example; use one of {', '.join(shipped)}")
    if study_file.exists():
        _fail(f"{study_file}: exists already; give another name (nothing was written)")
    from transferlab.folder import write_text

    header = (f"# A transferlab study, from the example {example!r}. Run it with: transferlab run {study_file}\n"
              "# Fields: see the README's study-file format; `transferlab strategies` lists the strategies.\n")
    write_text(study_file, header + shipped[example])
    console.print(f"wrote {escape(str(study_file))}; run it with: transferlab run {escape(str(study_file))}",
                  highlight=False)


def _examples() -> dict[str, str]:
    folder = resources.files("transferlab") / "examples"
    return {entry.name.removesuffix(".toml"): entry.read_text(encoding="utf-8")
            for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".toml")}


def _first_sentence(text: str) -> str:
    comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))
    return comment.split(". ")[0].rstrip(".") + "." if comment else ""


def _load(path: Path):
    def load():  # imported inside the guard: importing sets up Keras, which may refuse
        from transferlab.api import load_study

        return load_study(path)

    return _guard(load)


def _write_report(folder: Path, threshold: float | None = None):
    interrupts.set_message(
        f"the report in {folder}/ was not finished (the results are safe); run `transferlab report {folder}` to write it"
    )

    def write():
        from transferlab.reports import build_report

        return build_report(folder, threshold)

    return _guard(write)


def _require_ray() -> None:
    from transferlab.executors import RAY_MISSING

    try:
        import ray  # noqa: F401
    except ImportError:
        _fail(f"--ray: {RAY_MISSING}")


def _run_and_report(config, out: Path, quiet: bool, force: bool, ray: str | None = None, yes: bool = False) -> None:
    from transferlab.estimate import available_memory, estimate, shard_size_for
    from transferlab.executors import executor_for
    from transferlab.study import plan_study, run_study

    started = time.perf_counter()
    plan = _guard(lambda: plan_study(config))
    shard_size = shard_size_for(plan, config.execution)
    work = estimate(plan, shard_size)
    available = available_memory()
    timing = _Timing([plan], out, ray or config.execution.executor)
    if not quiet:
        console.print(f"[bold]{escape(config.name)}[/]: {escape(_describe(config))} → {escape(str(out))}/",
                      highlight=False)
        console.print(f"plan: {count(work.runs, 'run')}, {count(work.model_epochs, 'model-epoch')}, shards of "
                      f"{shard_size:,} runs; {work.memory(available)}; {timing.duration.describe()}", highlight=False)
        timing.explain(lambda line: console.print(f"[cyan]note:[/] {escape(line)}", highlight=False))
    if available and work.peak_bytes > available and not force:
        _fail(
            f"{config.name}: the estimated peak memory ({work.describe(available)}) exceeds what this machine has "
            "available; lower repeats, epochs, layer widths or [execution] shard_size, or pass --force to start anyway"
        )
    timing.confirm(config.name, yes)
    executor = executor_for(config.execution, ray)
    _train_and_report(out, quiet, started, timing.timed(lambda progress, notify: run_study(
        plan, out, executor=executor, progress=progress, notify=notify, shard_size=shard_size)))


def _run_sweep_and_report(sweep, out: Path, quiet: bool, force: bool, ray: str | None = None,
                          yes: bool = False) -> None:
    from transferlab.estimate import available_memory, estimate, shard_size_for
    from transferlab.executors import executor_for
    from transferlab.study import plan_sweep, run_sweep

    started = time.perf_counter()
    plans = _guard(lambda: plan_sweep(sweep))
    works = [estimate(plan, shard_size_for(plan, point.config.execution)) for point, plan in plans]
    available = available_memory()
    axes = " × ".join(f"{path} ({len(values)})" for path, values in sweep.axes.items())
    shape = (f"a transfer matrix of {len(sweep.axes['matrix.tasks'])} tasks ({len(plans)} ordered pairs)"
             if sweep.mode == "matrix" else f"a {sweep.mode} sweep of {len(plans)} points over {axes}")
    runs = sum(w.runs for w in works)
    peak = max(w.peak_bytes for w in works)
    execution = sweep.points[0].config.execution
    timing = _Timing([plan for _, plan in plans], out, ray or execution.executor)
    if not quiet:
        console.print(f"[bold]{escape(sweep.name)}[/]: {escape(shape)}; each "
                      f"{escape(_describe(sweep.points[0].config))} → {escape(str(out))}/", highlight=False)
        console.print(f"plan: {runs:,} runs, {sum(w.model_epochs for w in works):,} model-epochs; peak memory "
                      f"{peak / 2**30:.1f} GiB (the largest point); {timing.duration.describe()}", highlight=False)
        timing.explain(lambda line: console.print(f"[cyan]note:[/] {escape(line)}", highlight=False))
    if available and peak > available and not force:
        _fail(f"{sweep.name}: the estimated peak memory of a point exceeds what this machine has available; "
              "lower repeats, epochs or layer widths, or pass --force to start anyway")
    timing.confirm(sweep.name, yes)
    executor = executor_for(execution, ray)
    _train_and_report(out, quiet, started, timing.timed(lambda progress, notify: run_sweep(
        sweep, out, executor=executor, progress=progress, notify=notify, plans=plans)))


class _Timing:
    """The run time a study (or sweep) is expected to take here, from the speed earlier
    studies measured with the same executor; this one's speed is recorded when it finishes."""

    def __init__(self, plans: list, out: Path, executor: str):
        from transferlab.throughput import estimate_duration

        self.plans, self.key = plans, "local" if executor == "local" else "ray"
        self.total = sum(sum(plan.count_runs().values()) for plan in plans)
        self.duration = estimate_duration(plans, self.key, _still_to_train(out, self.total))

    def explain(self, say) -> None:
        """Say what a first guess is, the one time it is shown."""
        if not self.duration.measured:
            where = "on this machine" if self.key == "local" else "on a Ray cluster from this machine"
            say(f"the run time is a first guess until a study has been timed {where}")

    def confirm(self, name: str, yes: bool) -> None:
        """Ask before a study estimated over an hour starts, at a terminal only (never in a script)."""
        from transferlab.throughput import LONG_STUDY_SECONDS

        if yes or self.duration.seconds <= LONG_STUDY_SECONDS or not (sys.stdin.isatty() and sys.stdout.isatty()):
            return
        if not typer.confirm(f"{name} is estimated to take {self.duration.describe()}; start it?", default=False):
            _fail(f"{name}: not started; pass --yes to start it without this question")

    def timed(self, train):
        def run(progress, notify):
            from transferlab.throughput import record_rate

            began = time.perf_counter()
            outcome = train(progress, notify)
            record_rate(self.key, self.plans, outcome.trained_runs / max(self.total, 1), time.perf_counter() - began)
            return outcome
        return run


def _still_to_train(out: Path, total: int) -> float:
    """The share of the planned runs a rerun into `out` still has to train (1 for a new folder)."""
    from transferlab.store import finished_runs

    return max(0.0, 1.0 - finished_runs(out) / total) if total else 1.0


def _train_and_report(out: Path, quiet: bool, started: float, train) -> None:
    """Run `train(progress, notify)` (a study or a sweep) under a progress bar, say what the
    outcome holds besides trained runs, then write and print the report."""
    interrupts.set_message(f"finished shards are saved in {out}/results.sqlite; rerun the same command to resume")
    _import_in_background("transferlab.reports")  # the report's stack loads while the engine trains
    with Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if total == 0:  # an empty phase (e.g. a sweep point's adopted source models): no bar
                return
            if stage not in tasks:
                tasks[stage] = bar.add_task(escape(stage), total=total)
            bar.update(tasks[stage], completed=done)

        def notify(message: str) -> None:
            if not quiet:
                bar.console.print(f"[cyan]note:[/] {escape(message)}", highlight=False)

        outcome = _guard(lambda: train(progress, notify))
    if not quiet:
        _print_outcome(outcome)
    from transferlab.engine import release_programs

    release_programs()
    outputs = _write_report(out)
    if quiet:
        _print_quietly(outputs)
        return
    _print_outputs(outputs)
    console.print(f"wall time {time.perf_counter() - started:.1f} s")


def _import_in_background(module: str) -> None:
    """Import `module` on a thread of its own: its Python runs while the engine's compiled
    code (which releases the interpreter) trains, instead of after it."""
    import importlib
    import threading

    threading.Thread(target=importlib.import_module, args=(module,), name=f"import {module}", daemon=True).start()


def _print_outcome(outcome) -> None:
    """What the outcome holds besides trained runs: resumed, reused and diverged runs."""
    if outcome.skipped_runs:
        was = "was" if outcome.skipped_runs == 1 else "were"
        console.print(f"resumed: {count(outcome.skipped_runs, 'run')} {was} already done, trained "
                      f"{outcome.trained_runs}")
    if outcome.reused_runs:
        console.print(f"reused {count(outcome.reused_runs, 'run')} of other points (same data, recipe, training and "
                      "seed: bit-identical) instead of training them again", highlight=False)
    if outcome.diverged_runs:
        console.print(f"[yellow]{count(outcome.diverged_runs, 'run')} diverged[/] (loss NaN or infinite); stored "
                      "as diverged and counted in the tables")


def _print_quietly(outputs) -> None:
    """`--quiet`: the finding in a sentence and where the outputs are, nothing else."""
    from transferlab.sweep_report import SweepOutputs

    lines = outputs.headline if isinstance(outputs, SweepOutputs) else [d.verdict for d in outputs.directions]
    for line in lines:
        console.print(escape(line), highlight=False)
    console.print(f"wrote {escape(str(outputs.folder))}/", highlight=False)


def _print_matrix(outputs) -> None:
    from transferlab.predictability import ranking_grid

    for strategy, grid in outputs.grids().items():
        _print_frame(grid, f"{strategy}: Δ vs standalone (* Holm p < 0.05, whole matrix)")
    for line in outputs.headline:
        console.print(escape(line), highlight=False)
    if not outputs.score_summary.empty and outputs.score_summary["mean_tau_w"].notna().any():
        _print_frame(ranking_grid(outputs.score_summary), "could it have been predicted? each score's ranking of "
                     "the sources against the measured one: mean weighted τ over targets [95% CI], top-1 hits")


def _print_sweep(outputs) -> None:
    if outputs.is_matrix:
        _print_matrix(outputs)
        for line in outputs.pending:
            console.print(f"[yellow]not finished:[/] {escape(line)}; rerun the matrix to resume", highlight=False)
        names = ", ".join(sorted(path.name for path in outputs.files.values()))
        console.print(f"wrote {escape(str(outputs.folder))}/: {escape(names)}", highlight=False)
        return
    per = next(iter(outputs.axes)) if len(outputs.axes) == 1 else "point"
    _print_frame(outputs.pivot, f"mean {outputs.metric_label} and Δ vs standalone by {per} (* Holm p < 0.05)")
    for line in outputs.headline:
        console.print(escape(line), highlight=False)
    for line in outputs.pending:
        console.print(f"[yellow]not finished:[/] {escape(line)}; rerun the sweep to resume", highlight=False)
    names = ", ".join(sorted(path.name for path in outputs.files.values()))
    console.print(f"wrote {escape(str(outputs.folder))}/: {escape(names)}", highlight=False)


def _describe(config) -> str:
    return (
        f"{count(len(config.strategies), 'strategy', 'strategies')} × {count(config.repeats, 'repeat')}, "
        f"{count(config.source_repeats, 'source model')}, {count(config.training.epochs, 'epoch')}"
        + (", both directions" if config.reverse else "")
    )


def _speed_note(direction) -> str:
    if direction.threshold is None:
        return f"no time to threshold: {direction.threshold_source}"
    return (f"epochs to threshold {direction.threshold:.3f} ({direction.threshold_source}); never: runs that did "
            "not reach it, counted as epochs + 1")


def _print_outputs(outputs) -> None:
    from transferlab import speed, stats
    from transferlab.sweep_report import SweepOutputs

    if isinstance(outputs, SweepOutputs):
        _print_sweep(outputs)
        return

    for direction in outputs.directions:
        prefix = f"{outputs.study['name']}" + (f" ({direction.name})" if len(outputs.directions) > 1 else "")
        table = stats.display_table(direction.summary, bounds=stats.metric_bounds(direction.metric))
        _print_frame(table, f"{prefix}: {direction.metric_label} on {direction.title}")
        _print_verdict(direction)
        per_source = direction.per_source
        if not per_source.empty and per_source["source_index"].nunique() > 1 and per_source["strategy"].nunique() <= 6:
            wide = per_source.pivot(index="source_index", columns="strategy", values="mean")
            wide = wide[list(dict.fromkeys(per_source["strategy"]))]
            wide.insert(0, "source", wide.index.astype(str))
            for column in wide.columns[1:]:
                wide[column] = [f"{v:.3f}" for v in wide[column]]
            _print_frame(wide, f"mean {direction.metric_label} per source model")
        if not direction.agreement.empty and direction.agreement["tau_w"].notna().any():
            from transferlab.predictability import GRID_STRATEGIES, agreement_grid

            many = direction.agreement["strategy"].nunique() > GRID_STRATEGIES
            _print_frame(agreement_grid(direction.agreement), "could it have been predicted? each score against the "
                         "measured mean per source model: weighted τ" + (", top-1 (intervals: report.html)" if many
                                                                         else " [95% CI], top-1"))
        if direction.speed:
            title = f"learning speed, {direction.metric_label}: mean (Δ vs standalone, * Holm p < 0.05)"
            _print_frame(speed.compact_table(direction.speed), title)
            console.print(escape(_speed_note(direction)), highlight=False)
        if direction.diverged:
            console.print(f"note: {stats.DIVERGED_NOTE}", highlight=False)
    both = outputs.side_by_side()
    if both is not None:
        _print_frame(both, "both directions (* = Holm-corrected p < 0.05 against standalone)")
    for line in outputs.pending:
        console.print(f"[yellow]not finished:[/] {escape(line)}; rerun the study to resume", highlight=False)
    names = ", ".join(sorted(path.name for path in outputs.files.values()))
    console.print(f"wrote {escape(str(outputs.folder))}/: {escape(names)}", highlight=False)


def _print_verdict(direction) -> None:
    """The strategies ranked against standalone, the study's finding in a sentence, and
    what to know before trusting it."""
    import pandas as pd

    from transferlab import verdict

    if direction.findings:
        rows = []
        for found in direction.findings:
            could = found.detectable_text and f"{found.detectable_text}; {' / '.join(found.needed_texts('—'))}"
            rows.append({"strategy": found.strategy, "verdict": found.outcome, "Δ [95% CI]": found.difference_text,
                         "could detect; source models for " + " / ".join(f"{d:g}" for d in verdict.SMALL_DIFFERENCES): could})
        _print_frame(pd.DataFrame(rows), "verdict against standalone (Holm, 95%; detectable at 80% power)")
    console.print(escape(direction.verdict), highlight=False)
    for warning in direction.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def _print_frame(frame, title: str) -> None:
    table = Table(title=escape(title), title_justify="left")
    for index, column in enumerate(frame.columns):
        table.add_column(escape(str(column)), justify="left" if index == 0 else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*[escape(str(value)) for value in row])
    console.print(table)


def _guard(action):
    """Run `action`: a refusal (any `TransferlabError`) becomes one line and exit code 2;
    anything else is an internal error, one line and exit code 1 (TRANSFERLAB_TRACEBACK=1
    shows it)."""
    from transferlab._backend import configure
    from transferlab.errors import TransferlabError

    try:
        configure()  # before anything initialises JAX: a forced backend fails here
        return action()
    except TransferlabError as error:
        _fail(str(error))
    except (typer.Exit, KeyboardInterrupt):
        raise
    except MemoryError:
        _fail("out of memory; lower repeats, epochs, layer widths or [execution] shard_size", EXIT_INTERNAL)
    except Exception as error:
        if os.environ.get("TRANSFERLAB_TRACEBACK"):
            raise
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        _fail(
            f"internal error: {type(error).__name__}{': ' + text if text else ''} — please report it "
            "(set TRANSFERLAB_TRACEBACK=1 to see where)",
            EXIT_INTERNAL,
        )


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """One line on stderr, escaped (brackets in paths and fields survive), then exit."""
    message = " ".join(message.split())
    errors.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
