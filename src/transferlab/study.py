"""Run a study: a plan's runs → cohorts → shards → store, resumable and safe to interrupt.

Source models are trained first (on the source task) and saved as `.keras` files, as the
tutorial does; the target runs start from the trained arrays themselves (bit for bit what
the files hold) while the files are written, and a resumed study reads them back from the
files. Each strategy's recipe fixes its target architecture; target runs of one
architecture form a cohort, trained in shards by an executor; a `ShardWriter` commits each
finished shard whole while the next trains. A `reverse` study does the same the
other way round. Rerunning into the same folder resumes; one process writes a folder
at a time (`FolderLock`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab import models, objectives, transferability
from transferlab._backend import configure
from transferlab.config import ExecutionConfig, StudyConfig
from transferlab.errors import ModelFileError, StoreError, StudyFileError
from transferlab.executors import LocalExecutor
from transferlab.folder import (
    FolderLock,
    atomic_path,
    prepare_output_folder,
    remove_stale_temporaries,
)
from transferlab.plan import (
    Direction,
    Plan,
    RunSpec,
    changed_fields,
    configuration,
    plan_of,
    share_programs,
    strategy_identity,
)
from transferlab.shards import ShardJob
from transferlab.store import DATABASE_NAME, Store
from transferlab.strategies import Recipe
from transferlab.writer import ShardWriter

SOURCE_DIR = "sources"


def plan_study(config: StudyConfig) -> Plan:
    """The study's plan, built when it was loaded (`plan.plan_of`)."""
    return plan_of(config)


def study_directions(config: StudyConfig, given_model=None) -> list[Direction]:
    """The study's directions with their architectures and recipes, checked to fit."""
    return plan_of(config, given_model).directions


def plan_runs(config: StudyConfig | Plan, direction: Direction) -> list[RunSpec]:
    """Source runs (one per source model) then target runs, in a fixed order."""
    plan = config if isinstance(config, Plan) else Plan(
        config.name, config.seed, config.repeats, config.source_repeats, config.training.settings(),
        config.bn_frozen, [direction])
    return plan.runs(direction)


def cohorts(runs: list[RunSpec], recipes: dict[str, Recipe]) -> dict[models.Architecture, list[RunSpec]]:
    """Target runs grouped by the architecture their strategy trains, in first-seen order."""
    grouped: dict[models.Architecture, list[RunSpec]] = {}
    for run in runs:
        grouped.setdefault(recipes[run.strategy.label].arch, []).append(run)
    return grouped


def shard_runs(runs: list[RunSpec], shard_size: int) -> list[list[RunSpec]]:
    """Split runs into shards of at most `shard_size` (each shard is stored in one transaction;
    the engine trains it in fixed blocks, so the split never changes a number)."""
    return [runs[i : i + shard_size] for i in range(0, len(runs), shard_size)]


# --- running a study ---------------------------------------------------------------------


@dataclass
class StudyOutcome:
    study_id: int
    folder: Path
    trained_runs: int
    skipped_runs: int
    notices: list[str] = field(default_factory=list)
    diverged_runs: int = 0
    reused_runs: int = 0


Progress = Callable[[str, int, int], None]


def versions() -> dict:
    """The versions a study ran with; Keras' from its package metadata (importing Keras is
    the writer's business, when it saves a source model)."""
    from importlib.metadata import version

    import jax

    from transferlab._version import __version__

    return {
        "transferlab": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "jax": jax.__version__,
        "keras": version("keras"),
    }


def run_study(
    study: StudyConfig | Plan,
    folder: str | Path,
    executor=None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
    shard_size: int | None = None,
) -> StudyOutcome:
    """Train every run of the study that is not yet in `folder`'s database.

    `study` is a validated `StudyConfig` (planned here) or a `Plan`. The folder is locked
    for the whole run: a second writer is refused at once."""
    configure()  # the first study, report or read of a process sets the backend up (a no-op after)
    plan = plan_study(study) if isinstance(study, StudyConfig) else study
    if shard_size is None:
        from transferlab.estimate import shard_size_for

        execution = study.execution if isinstance(study, StudyConfig) else ExecutionConfig()
        shard_size = shard_size_for(plan, execution)
    folder = prepare_output_folder(folder)
    executor = executor or LocalExecutor()
    progress = progress or (lambda stage, done, total: None)
    notify = notify or (lambda message: None)
    _check_existing_study(folder, plan)  # before the lock file is made: a refusal changes nothing
    for line in plan.notes():
        notify(line)
    with FolderLock(folder), Store.in_folder(folder) as store:
        remove_stale_temporaries(folder)
        return _train_plan(store, folder, plan, executor, progress, shard_size)


def _train_plan(store: Store, folder: Path, plan: Plan, executor, progress: Progress, shard_size: int,
                point=None) -> StudyOutcome:
    """Train what is still planned of `plan` (a sweep's `point`, or the folder's study) while
    the caller holds the folder's lock; finished shards are committed by a `ShardWriter`
    while the next ones train."""
    trained = skipped = 0
    label = "" if point is None else f"{point.label}: "
    study_id = store.open_study(plan, versions(), point)
    store.check_source_files(study_id, plan)
    planned = {direction.name: plan.runs(direction) for direction in plan.directions}
    store.plan_runs(study_id, _planned_rows(plan, planned))
    stored = {(r.direction, r.role, r.strategy_json, r.source_index, r.repeat): r for r in store.runs(study_id)}
    planned_ids = [r.id for r in stored.values() if r.status == "planned"]
    adopted = store.adopt_runs(study_id, planned_ids) if point is not None else set()
    trained_by_direction: dict[str, dict[int, models.Weights]] = {}
    warming = _warm_up_scoring(store, study_id, plan)
    with ShardWriter(store.path) as writer:
        for direction in plan.directions:
            runs = planned[direction.name]
            pending = [run for run in runs
                       if stored[run.key].status == "planned" and stored[run.key].id not in adopted]
            reused = sum(1 for run in runs if stored[run.key].id in adopted)
            trained += len(pending)
            skipped += len(runs) - len(pending) - reused
            stage = label + ("" if direction.name == "forward" else "reverse: ")
            targets = [run for run in pending if run.role == "target"]
            jobs = _target_jobs(plan, direction, targets, shard_size)
            trained_sources = {}
            if direction.trains_sources:
                sources = [run for run in pending if run.role == "source"]
                if sources and jobs and hasattr(executor, "prepare"):  # compile the targets' programs meanwhile
                    executor.prepare(list({job.arch: job for job in reversed(jobs)}.values()))
                trained_sources = _train_sources(writer, study_id, folder, plan, direction, sources, shard_size,
                                                 stored, executor, progress, stage, point)
            elif not store.source_models(study_id):
                writer.flush()  # one writer at a time: the driver's own connection writes this record
                store.record_source_model(_given_source_record(plan, study_id, direction))
            trained_by_direction[direction.name] = trained_sources
            if jobs:
                _attach_source_weights(jobs, store, writer, study_id, direction, trained_sources)
                _train_targets(writer, jobs, stored, executor, progress, stage + "target runs", len(targets))
        diverged = writer.flush()
    for thread in warming:
        thread.join()
    score_sources(store, study_id, plan, trained_by_direction)
    return StudyOutcome(study_id, folder, trained, skipped, [d.notice for d in plan.directions if d.notice], diverged,
                        len(adopted))


def _warm_up_scoring(store: Store, study_id: int, plan: Plan) -> list:
    """Threads compiling the scoring's forward pass for each direction still to be scored."""
    layer = _scores_layer(plan)
    stored = store.scores_frame(study_id)
    threads = []
    for direction in plan.directions:
        task, arch = direction.target_task, direction.source_arch
        if task is None or arch.input_shape != task.input_shape or _scored(stored, direction, layer):
            continue
        n_models = plan.source_repeats if direction.trains_sources else 1
        threads.append(transferability.warm_up(arch, n_models, task.x_train, layer))
    return threads


def score_sources(store: Store, study_id: int, plan: Plan,
                  trained: dict[str, dict[int, models.Weights]] | None = None) -> None:
    """Each direction's transferability scores (`transferlab.transferability`), once its
    source models are all recorded: computed when missing or when `[scores] layer` changed,
    from the arrays trained in this process or else the source model files."""
    layer = _scores_layer(plan)
    stored = store.scores_frame(study_id)
    for direction in plan.directions:
        records = store.source_models(study_id, direction.name)
        indices = {record["source_index"] for record in records}
        if direction.target_task is None or not records or _scored(stored, direction, layer, indices):
            continue
        weights = {index: arrays for index, arrays in (trained or {}).get(direction.name, {}).items()
                   if index in indices}
        if indices - set(weights):
            weights.update(load_source_weights(store, study_id, direction, indices - set(weights)))
        store.record_scores(study_id, direction.name, transferability.score_on_task(
            direction.source_arch, weights, direction.target_task, layer))


def _scores_layer(plan: Plan) -> int | None:
    """The study's `[scores] layer` (None: the default, the last hidden layer)."""
    return (plan.study.get("scores") or {}).get("layer")


def _scored(stored, direction: Direction, layer: int | None, indices: set | None = None) -> bool:
    """Does the store hold this direction's scores at this layer (for these source models)?"""
    have = stored[stored["direction"] == direction.name]
    if have.empty or (indices is not None and set(have["source_index"]) != indices):
        return False
    return bool((have["layer"] == models.feature_layer(direction.source_arch, layer)).all())


def _target_jobs(plan: Plan, direction: Direction, targets: list[RunSpec], shard_size: int) -> list[ShardJob]:
    """The direction's target runs as shards, cohort by cohort (one architecture each)."""
    jobs = []
    for arch, cohort in cohorts(targets, direction.recipes).items():
        penalised = cohort_is_penalised(direction, arch)
        jobs += [
            ShardJob(arch, direction.target_task, plan.training, shard, direction.recipes,
                     bn_frozen=plan.bn_frozen, penalised=penalised, padding=plan.padding_for(direction.target_spec))
            for shard in shard_runs(cohort, shard_size)
        ]
    return jobs


def _train_targets(writer: ShardWriter, jobs: list[ShardJob], stored: dict, executor, progress: Progress,
                   stage: str, total: int) -> None:
    done = 0
    progress(stage, done, total)
    for job, result in executor.map(jobs):
        writer.submit([stored[r.key].id for r in job.runs], result)
        done += len(job.runs)
        progress(stage, done, total)


# --- running a sweep ---------------------------------------------------------------------


@dataclass
class SweepOutcome:
    folder: Path
    points: list[StudyOutcome]

    @property
    def trained_runs(self) -> int:
        return sum(o.trained_runs for o in self.points)

    @property
    def skipped_runs(self) -> int:
        return sum(o.skipped_runs for o in self.points)

    @property
    def diverged_runs(self) -> int:
        return sum(o.diverged_runs for o in self.points)

    @property
    def reused_runs(self) -> int:
        return sum(o.reused_runs for o in self.points)


def plan_sweep(sweep) -> list[tuple]:
    """`(point, plan)` for every point of a validated sweep; points whose tasks differ only
    in row counts share compiled programs (`share_programs`)."""
    plans = []
    for point in sweep.points:
        try:
            plans.append((point, plan_study(point.config)))
        except StudyFileError as error:
            raise StudyFileError(f"sweep point {point.label}: {error}") from None
    shared = share_programs([plan for _, plan in plans])
    return [(point, plan) for (point, _), plan in zip(plans, shared)]


def run_sweep(
    sweep,
    folder: str | Path,
    executor=None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
    shard_size: int | None = None,
    plans: list[tuple] | None = None,
) -> SweepOutcome:
    """Train every point of `sweep` (a `transferlab.sweep.Sweep`) into `folder`'s one
    database, point by point, each exactly as `run_study` would; rerun to resume."""
    configure()  # the first study, report or read of a process sets the backend up (a no-op after)
    from transferlab.estimate import shard_size_for
    from transferlab.sweep import Sweep

    plans = plans or plan_sweep(sweep)
    spec = sweep.spec([plan.sha256() for _, plan in plans])
    sha = Sweep.sha256(spec)
    folder = prepare_output_folder(folder)
    executor = executor or LocalExecutor()
    progress = progress or (lambda stage, done, total: None)
    notify = notify or (lambda message: None)
    _check_existing_sweep(folder, sweep.name, plans, sha, spec["axes"])
    seen = set()
    for point, plan in plans:  # each task's notes once (a task recurs across points), each notice once
        for role, task, note in plan.task_notes():
            if (task.fingerprint, note) not in seen:
                seen.add((task.fingerprint, note))
                notify(f"{point.label}: {role} ({task.description}): {note}")
        for notice in (d.notice for d in plan.directions if d.notice):
            if notice not in seen:
                seen.add(notice)
                notify(f"{point.label}: {notice}")
    with FolderLock(folder), Store.in_folder(folder) as store:
        remove_stale_temporaries(folder)
        store.open_sweep(sweep.name, spec, sha)
        outcomes = [
            _train_plan(store, folder, plan, executor, progress,
                        shard_size or shard_size_for(plan, point.config.execution), point)
            for point, plan in plans
        ]
    return SweepOutcome(folder, outcomes)


def _check_existing_sweep(folder: Path, name: str, plans: list[tuple], sha: str, sweep_axes: dict | None = None) -> None:
    """The folder must be empty or hold this sweep, on the same data (a point whose task's
    data changed is named)."""
    if not (folder / DATABASE_NAME).exists():
        return
    with Store.in_folder(folder, readonly=True) as store:
        held = store.sweep()
        if held is not None and held["sha256"] != sha:
            stored = {p["index"]: p["study_id"] for p in store.points()}
            for point, plan in plans:
                if point.index in stored:
                    _refuse_changed_data(store, store.study(stored[point.index])["plan"], plan,
                                         f" at sweep point {point.label}", "sweep")
        differences = ""
        if held is not None and held["sha256"] != sha:
            if held["spec"].get("axes") != sweep_axes:
                differences = changed_fields(held["spec"].get("axes"), sweep_axes, "sweep")
            elif plans and (first := store.points()):  # the same axes: compare the first point's settings
                differences = changed_fields(configuration(store.study(first[0]["study_id"])["plan"]),
                                             configuration(plans[0][1].to_dict()))
        store.check_holds_sweep(name, sha, differences)


def _check_existing_study(folder: Path, plan: Plan) -> None:
    """A database already in the folder must be readable and hold this same study, on the
    same data: a task whose data changed is named."""
    if not (folder / DATABASE_NAME).exists():
        return
    with Store.in_folder(folder, readonly=True) as store:
        if not store.has_study():
            return
        if store.sweep() is not None:
            store.study_holding(plan.sha256())  # refuses: the folder holds a sweep
        stored_plan = store.study()["plan"]
        _refuse_changed_data(store, stored_plan, plan, "", "study")
        store.study_holding(plan.sha256(), changed_fields(configuration(stored_plan), configuration(plan.to_dict())))


def _refuse_changed_data(store: Store, stored_plan: dict, plan: Plan, where: str, ran: str) -> None:
    """With the same settings as the stored plan, a task whose fingerprint differs means its
    data changed since the folder's study (or sweep point) ran: refused, naming the task."""
    if not _same_settings(stored_plan, plan):
        return
    before = _stored_fingerprints(stored_plan)
    for role, spec in plan.task_specs().items():
        if before.get(role) not in (None, spec.fingerprint):
            raise StoreError(
                f"{store.path}: the data of the {role} task ({spec.description}){where} changed since this folder's "
                f"{ran} ran (fingerprint {before[role][:12]} → {spec.fingerprint[:12]}); restore the data, or choose "
                "another --out folder (nothing here was changed)")


def _same_settings(stored_plan: dict, plan: Plan) -> bool:
    """Do the stored study and this one have the same study file (a Python `Task`'s summary
    aside)? Then differing fingerprints mean the data changed, not the configuration."""
    from transferlab.canonical import canonical_json
    from transferlab.plan import _without

    def settings(study: dict) -> str:
        return canonical_json(_without(study, frozenset({"task", "scores"})))

    return settings(stored_plan.get("study", {})) == settings(plan.to_dict()["study"])


def _stored_fingerprints(stored_plan: dict) -> dict[str, str]:
    """The forward direction's task fingerprints by role, as the folder's plan holds them."""
    try:
        forward = stored_plan["directions"][0]
        return {role: forward[f"{role}_task"]["fingerprint"] for role in ("source", "target")
                if forward.get(f"{role}_task")}
    except (KeyError, IndexError, TypeError):
        return {}


def cohort_is_penalised(direction: Direction, arch: models.Architecture) -> bool:
    """A cohort with an L2-SP strategy trains every shard with the (zero for the others) L2
    term, so it compiles once; decided from the plan, never from which runs are pending."""
    return any(r.penalties is not None for r in direction.recipes.values() if r.arch == arch)


def _train_sources(writer, study_id, folder, plan, direction, sources, shard_size, stored, executor, progress, stage,
                   point=None) -> dict[int, models.Weights]:
    """Train the direction's source models; each shard's models are saved as `.keras` files and
    recorded by the writer, off the driver's path. Returns the trained weights by source index
    (the exact float32 arrays the files hold, so the targets need not wait for the files)."""
    recipes = {"standalone": direction.source_recipe}
    jobs = [
        ShardJob(direction.source_arch, direction.source_task, plan.training, shard, recipes, bn_frozen=plan.bn_frozen,
                 padding=plan.padding_for(direction.source_spec))
        for shard in shard_runs(sources, shard_size)
    ]
    done, total, trained = 0, len(sources), {}
    progress(stage + "source models", done, total)
    for job, result in executor.map(jobs):
        weights = [_model_weights(result, index) for index in range(len(job.runs))]
        trained.update((run.source_index, arrays) for run, arrays in zip(job.runs, weights))
        save = functools.partial(_save_source_models, folder, study_id, job.runs, weights, result, direction, point)
        writer.submit([stored[r.key].id for r in job.runs], result, save)
        done += len(job.runs)
        progress(stage + "source models", done, total)
    return trained


def reuse_key(plan: Plan, direction: Direction, run: RunSpec) -> str | None:
    """What decides a run's numbers when it reuses no source model: its task's data, its
    recipe, the training settings, the frozen-BN policy, whether its cohort trains with the
    L2 term, and its seed. Equal keys give bit-identical runs (a model's numbers do not
    depend on its shard), so another study's finished run is adopted instead of retrained."""
    from transferlab.canonical import canonical_json
    from transferlab.plan import recipe_to_dict

    if run.role == "target" and run.strategy.uses_source:
        return None
    source = run.role == "source"
    task = direction.source_spec if source else direction.target_spec
    recipe = direction.source_recipe if source else direction.recipes[run.strategy.label]
    content = {
        "task": task.fingerprint, "recipe": recipe_to_dict(recipe), "training": dataclasses.asdict(plan.training),
        "bn_frozen": plan.bn_frozen, "seed": run.seed, "role": run.role,
        "penalised": False if source else cohort_is_penalised(direction, recipe.arch),
    }
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def _planned_rows(plan: Plan, planned: dict[str, list[RunSpec]]):
    for direction in plan.directions:
        for run in planned[direction.name]:
            recipe = direction.source_recipe if run.role == "source" else direction.recipes[run.strategy.label]
            yield {
                "reuse_key": reuse_key(plan, direction, run) if direction.trains_sources or run.role == "target" else None,
                "direction": run.direction,
                "role": run.role,
                "strategy": run.strategy.label,
                "strategy_json": strategy_identity(run.strategy),
                "source_index": run.source_index,
                "repeat": run.repeat,
                "seed": run.seed,
                "architecture": recipe.arch.to_dict(),
                "layers": recipe.record(),
            }


def _attach_source_weights(jobs: list[ShardJob], store: Store, writer: ShardWriter, study_id: int,
                           direction: Direction, trained: dict[int, models.Weights]) -> None:
    """Give each target shard the source models its runs reuse: those trained in this process
    from memory, the others (a resumed study's) read back from their files."""
    needed = {run.source_index for job in jobs for run in job.runs if run.strategy.uses_source}
    weights = {index: trained[index] for index in needed if index in trained}
    if needed - set(weights):
        writer.flush()  # the records of sources trained earlier in this process are committed
        weights.update(load_source_weights(store, study_id, direction, needed - set(weights)))
    for job in jobs:
        job.source_weights = _weights_for(job.runs, weights)


def load_source_weights(store: Store, study_id: int, direction: Direction,
                        indices: set[int] | None = None) -> dict[int, models.Weights]:
    """Read source models back from their files (safe_mode, hash checked), as the tutorial
    does; all of the direction's, or those in `indices`."""
    weights = {}
    for record in store.source_models(study_id, direction.name):
        if indices is not None and record["source_index"] not in indices:
            continue
        model = models.load_model_file(record["file"], expected_sha256=record["file_sha256"])
        loaded_arch = models.architecture_of(model, source=record["file"])
        if loaded_arch.shapes != direction.source_arch.shapes:
            raise ModelFileError(
                f"{record['file']}: layer shapes {loaded_arch.shapes} differ from the study's "
                f"{direction.source_arch.shapes}; restore the file or start a new output folder"
            )
        weights[record["source_index"]] = models.keras_weights(model)
    return weights


def _weights_for(shard: list[RunSpec], source_weights: dict) -> dict:
    needed = {run.source_index for run in shard if run.strategy.uses_source}
    return {index: source_weights[index] for index in needed}


def _model_weights(result, index: int) -> models.Weights:
    """Model `index` of a shard's result: each layer's float32 arrays."""
    return [tuple(np.asarray(array[index], dtype=np.float32) for array in arrays) for arrays in result.weights]


def _save_source_models(folder: Path, study_id: int, runs: list[RunSpec], weights: list[models.Weights], result,
                        direction: Direction, point=None) -> list[dict]:
    """On the writer's thread: each source model of a shard (`weights[i]` of `runs[i]`) as a
    `.keras` file, and its record (one Keras model is built per shard, and given each
    model's weights in turn)."""
    keras_model = models.build_keras_model(direction.source_arch)
    return [_save_source_model(folder, study_id, run, weights[index], result, index, direction, point, keras_model)
            for index, run in enumerate(runs)]


def _save_source_model(folder: Path, study_id: int, run: RunSpec, weights: models.Weights, result, index: int,
                       direction: Direction, point, keras_model) -> dict:
    prefix = "" if direction.name == "forward" else "reverse_"
    sources = folder / SOURCE_DIR if point is None else folder / SOURCE_DIR / f"point_{point.index:03d}"
    path = sources / f"{prefix}source_{run.source_index:03d}.keras"
    models.set_keras_weights(keras_model, weights)
    with atomic_path(path) as temporary:  # a reader never sees a half-written model file
        models.save_model_file(keras_model, temporary)
    return {
        "study_id": study_id,
        "direction": direction.name,
        "source_index": run.source_index,
        "file": path.relative_to(folder).as_posix(),  # relative: a moved or copied folder keeps working
        "file_sha256": models.file_sha256(path),
        "weights_sha256": models.weights_sha256(weights),
        "trained_here": True,
        "seed": run.seed,
        **{name: float(result.final[name][index]) for name in result.final},
    }


def _given_source_record(plan: Plan, study_id: int, direction: Direction) -> dict:
    """The record of the study's given model file; with a described source task, its loss and
    metrics on that task's splits, by the objective its output layer trains with."""
    model = models.load_model_file(plan.model_file, expected_sha256=plan.model_file_sha256)
    weights = models.keras_weights(model)
    record = {
        "study_id": study_id,
        "direction": "forward",
        "source_index": 0,
        "file": plan.model_file,
        "file_sha256": plan.model_file_sha256,
        "weights_sha256": models.weights_sha256(weights),
        "trained_here": False,
    }
    task = direction.source_task
    if task is not None:
        objective = objectives.for_task(task.kind, direction.source_arch.head)
        for split in ("train", "test"):
            outputs = model(getattr(task, f"x_{split}"), training=False)
            scores = objective.evaluate(outputs, getattr(task, f"y_{split}"))
            record.update({objectives.column(split, name): value for name, value in scores.items()})
    return record


# --- one run on its own ------------------------------------------------------------------


def retrain_run(
    folder: str | Path, role: str, strategy_label: str, source_index: int, repeat: int, direction: str = "forward",
    point: int | None = None,
):
    """Train one stored run again on its own (a shard of one) from the plan stored in `folder`
    (in a sweep or matrix folder, that of point number `point`).

    Returns the engine's `ShardResult`; reproducibility means it equals the stored run.
    """
    configure()  # the first study, report or read of a process sets the backend up (a no-op after)
    with Store.in_folder(folder, readonly=True) as store:
        chosen_id = None
        if store.sweep() is not None:
            found = [p["study_id"] for p in store.points() if p["index"] == point]
            if not found:
                raise StoreError(f"{Path(folder) / 'results.sqlite'}: this folder holds a sweep; give point = one of "
                                 f"{', '.join(str(p['index']) for p in store.points())}")
            chosen_id = found[0]
        study_id, plan = store.stored_plan(chosen_id)
        chosen = plan.direction(direction)
        wanted = (direction, role, strategy_label, source_index, repeat)
        run = None if chosen is None else next(
            (r for r in plan.runs(chosen)
             if (r.direction, r.role, r.strategy.label, r.source_index, r.repeat) == wanted), None)
        if run is None:
            raise StoreError(f"{Path(folder) / 'results.sqlite'}: no run {wanted} in the stored study")
        store.check_source_files(study_id, plan)
        source_weights = load_source_weights(store, study_id, chosen) if role == "target" else {}
    if role == "source":
        job = ShardJob(chosen.source_arch, chosen.source_task, plan.training, [run],
                       {"standalone": chosen.source_recipe}, bn_frozen=plan.bn_frozen,
                       padding=plan.padding_for(chosen.source_spec))
    else:
        recipe = chosen.recipes[strategy_label]
        job = ShardJob(recipe.arch, chosen.target_task, plan.training, [run], chosen.recipes,
                       _weights_for([run], source_weights), bn_frozen=plan.bn_frozen,
                       penalised=cohort_is_penalised(chosen, recipe.arch), padding=plan.padding_for(chosen.target_spec))
    return job.execute()
