"""Plan and run a study: directions × strategies × source models × repeats → runs →
cohorts → shards → store.

Source models are trained first (on the source task), saved as `.keras` files and
loaded back, as the tutorial does. Each strategy's recipe fixes its target
architecture; target runs of one architecture form a cohort, trained in shards by an
executor, each shard stored in one transaction. A `reverse` study does the same the
other way round. Rerunning into the same folder resumes.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab import models
from transferlab.config import StudyConfig, StudyFileError, check_model_fits, check_strategies
from transferlab.executors import LocalExecutor
from transferlab.shards import ShardJob, initial_weights  # noqa: F401  (part of this module's API)
from transferlab.store import Store
from transferlab.strategies import Recipe, Standalone, head_fits, strategy_to_dict
from transferlab.tasks import Task

SOURCE_DIR = "sources"
_ROLE_CODES = {"source": 0, "target": 1}
NO_SOURCE = -1


@dataclass(frozen=True)
class RunSpec:
    """One training run: which way round, what it trains, from which source model, its seed."""

    role: str
    strategy: object
    source_index: int
    repeat: int
    seed: int
    direction: str = "forward"

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.direction, self.role, self.strategy.label, self.source_index, self.repeat)


def run_seed(study_seed: int, role: str, label: str, source_index: int, repeat: int, direction: str = "forward") -> int:
    """Every run's seed derives from the study seed and the run's identity alone, so adding a
    strategy, a direction or changing shards never changes another run's numbers."""
    key = (_ROLE_CODES[role], zlib.crc32(label.encode()), source_index + 1, repeat)
    if direction == "reverse":
        key += (1,)
    sequence = np.random.SeedSequence(study_seed, spawn_key=key)
    return int(sequence.generate_state(1, np.uint32)[0])


@dataclass
class Direction:
    """One way round: source models (trained on `source_task`, or given) reused on `target_task`.

    `recipes` holds each target strategy's recipe by label, and `source_recipe` the
    recipe that trains a source model."""

    name: str
    source_task: Task | None
    target_task: Task
    source_arch: models.Architecture
    strategies: list
    recipes: dict[str, Recipe]
    source_recipe: Recipe
    trains_sources: bool

    @property
    def notice(self) -> str | None:
        """What the user should know before reading the results of this direction."""
        head = self.recipes[self.strategies[0].label].arch.head
        if head_fits(self.source_arch, head) or not any(s.uses_source for s in self.strategies):
            return None
        return (
            f"{self.name}: the target needs a {head.units}-unit {head.activation} output layer but the source "
            f"model has {self.source_arch.head.units} {self.source_arch.head.activation} units, so every "
            "strategy that reuses the source model starts with a fresh output layer (new_head)"
        )


def study_directions(config: StudyConfig, given_model=None) -> list[Direction]:
    """The study's directions with their architectures and recipes, checked to fit."""
    sgd = config.training.sgd()
    target_task = config.target.make("target")
    source_task = config.source.make("source") if config.source.seed is not None else None
    if given_model is not None:
        source_arch = models.architecture_of(given_model, source=config.source.model_file)
        check_model_fits(source_arch, target_task, config.source.model_file)
        pairs = [("forward", source_task, target_task, source_arch, False)]
    else:
        pairs = [("forward", source_task, target_task, None, True)]
        if config.reverse:
            pairs.append(("reverse", target_task, source_task, None, True))
    directions = []
    for name, from_task, to_task, source_arch, trains in pairs:
        if source_arch is None:
            source_arch = config.architecture(from_task.n_features, config.head_for(from_task))
        head = config.head_for(to_task)
        try:
            strategies_ = check_strategies(config, source_arch, head)
        except ValueError as error:
            raise StudyFileError(f"{config.name}: {error}") from None
        recipes = {s.label: s.recipe(source_arch, head, sgd.epochs) for s in strategies_}
        source_recipe = Standalone().recipe(source_arch, source_arch.head, sgd.epochs)
        directions.append(Direction(name, from_task, to_task, source_arch, strategies_, recipes, source_recipe, trains))
    return directions


def plan_runs(config: StudyConfig, direction: Direction) -> list[RunSpec]:
    """Source runs (one per source model) then target runs, in a fixed order."""
    runs = []
    if direction.trains_sources:
        source = Standalone()
        for index in range(config.source_repeats):
            seed = run_seed(config.seed, "source", source.label, index, 0, direction.name)
            runs.append(RunSpec("source", source, index, 0, seed, direction.name))
    for strategy in direction.strategies:
        source_indices = range(config.source_repeats) if strategy.uses_source else [NO_SOURCE]
        for source_index in source_indices:
            for repeat in range(config.repeats):
                seed = run_seed(config.seed, "target", strategy.label, source_index, repeat, direction.name)
                runs.append(RunSpec("target", strategy, source_index, repeat, seed, direction.name))
    return runs


def cohorts(runs: list[RunSpec], recipes: dict[str, Recipe]) -> dict[models.Architecture, list[RunSpec]]:
    """Target runs grouped by the architecture their strategy trains, in first-seen order."""
    grouped: dict[models.Architecture, list[RunSpec]] = {}
    for run in runs:
        grouped.setdefault(recipes[run.strategy.label].arch, []).append(run)
    return grouped


def shard_runs(runs: list[RunSpec], shard_size: int, n_devices: int) -> tuple[list[list[RunSpec]], int]:
    """Split runs into shards of equal padded size (one compiled program serves them all)."""
    if not runs:
        return [], 0
    n_shards = -(-len(runs) // shard_size)
    per_shard = -(-len(runs) // n_shards)
    padded = -(-per_shard // n_devices) * n_devices
    return [runs[i : i + per_shard] for i in range(0, len(runs), per_shard)], padded


# --- running a study ---------------------------------------------------------------------


@dataclass
class StudyOutcome:
    study_id: int
    folder: Path
    trained_runs: int
    skipped_runs: int
    notices: list[str] = field(default_factory=list)


Progress = Callable[[str, int, int], None]


def versions() -> dict:
    import jax
    import keras

    import transferlab

    return {
        "transferlab": transferlab.__version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "jax": jax.__version__,
        "keras": keras.__version__,
    }


def run_study(
    config: StudyConfig,
    folder: str | Path,
    executor=None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> StudyOutcome:
    """Train every run of the study that is not yet in `folder`'s database."""
    import jax

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    executor = executor or LocalExecutor()
    progress = progress or (lambda stage, done, total: None)
    notify = notify or (lambda message: None)
    given = models.load_model_file(config.source.model_file) if config.source.model_file else None
    directions = study_directions(config, given)
    for direction in directions:
        if direction.notice:
            notify(direction.notice)
    n_devices = len(jax.local_devices())
    sgd = config.training.sgd()
    trained = skipped = 0
    with Store.in_folder(folder) as store:
        study_id = store.open_study(config.name, config.model_dump(mode="json"), config.sha256(), versions())
        planned = {direction.name: plan_runs(config, direction) for direction in directions}
        store.plan_runs(
            study_id,
            [
                _planned_row(run, direction.source_recipe if run.role == "source" else direction.recipes[run.strategy.label])
                for direction in directions
                for run in planned[direction.name]
            ],
        )
        stored = {(r.direction, r.role, r.strategy, r.source_index, r.repeat): r for r in store.runs(study_id)}
        for direction in directions:
            runs = planned[direction.name]
            pending = [run for run in runs if stored[run.key].status != "done"]
            trained += len(pending)
            skipped += len(runs) - len(pending)
            stage = "" if direction.name == "forward" else "reverse: "
            targets = [run for run in pending if run.role == "target"]
            target_jobs = []
            for arch, cohort in cohorts(targets, direction.recipes).items():
                shards, pad_to = shard_runs(cohort, config.execution.shard_size, n_devices)
                penalised = any(direction.recipes[run.strategy.label].penalties is not None for run in cohort)
                target_jobs += [
                    ShardJob(arch, direction.target_task, sgd, shard, direction.recipes, pad_to=pad_to,
                             bn_frozen=config.bn_frozen, penalised=penalised)
                    for shard in shards
                ]
            if direction.trains_sources:
                sources = [run for run in pending if run.role == "source"]
                _train_sources(store, study_id, folder, direction, sources, target_jobs, config, stored,
                               executor, progress, stage)
            elif not store.source_models(study_id):
                store.record_source_model(_given_source_record(config, study_id, given, direction.source_task))
            if not target_jobs:
                continue
            source_weights = load_source_weights(store, study_id, direction)
            for job in target_jobs:
                job.source_weights = _weights_for(job.runs, source_weights)
            done, total = 0, len(targets)
            progress(stage + "target runs", done, total)
            for job, result in executor.map(target_jobs):
                store.finish_shard([stored[r.key].id for r in job.runs], result.final, result.curves)
                done += len(job.runs)
                progress(stage + "target runs", done, total)
    return StudyOutcome(study_id, folder, trained, skipped, [d.notice for d in directions if d.notice])


def _train_sources(store, study_id, folder, direction, sources, target_jobs, config, stored, executor, progress, stage):
    """Train the direction's source models, save each as a `.keras` file, record them."""
    import jax

    n_devices = len(jax.local_devices())
    shards, pad_to = shard_runs(sources, config.execution.shard_size, n_devices)
    for job in target_jobs:  # same shapes as a target cohort: reuse its compiled program
        same_shapes = job.arch == direction.source_arch and job.task.x_train.shape == direction.source_task.x_train.shape
        if same_shapes and job.task.loss == direction.source_task.loss and job.pad_to >= pad_to:
            pad_to = job.pad_to
    recipes = {"standalone": direction.source_recipe}
    jobs = [
        ShardJob(direction.source_arch, direction.source_task, config.training.sgd(), shard, recipes,
                 pad_to=pad_to, bn_frozen=config.bn_frozen)
        for shard in shards
    ]
    done, total = 0, len(sources)
    progress(stage + "source models", done, total)
    for job, result in executor.map(jobs):
        records = [
            _save_source_model(folder, study_id, run, result, i, direction)
            for i, run in enumerate(job.runs)
        ]
        store.finish_shard([stored[r.key].id for r in job.runs], result.final, result.curves, records)
        done += len(job.runs)
        progress(stage + "source models", done, total)


def _planned_row(run: RunSpec, recipe: Recipe) -> dict:
    return {
        "direction": run.direction,
        "role": run.role,
        "strategy": run.strategy.label,
        "strategy_json": strategy_to_dict(run.strategy),
        "source_index": run.source_index,
        "repeat": run.repeat,
        "seed": run.seed,
        "architecture": recipe.arch.to_dict(),
        "layers": recipe.record(),
    }


def load_source_weights(store: Store, study_id: int, direction: Direction) -> dict[int, models.Weights]:
    """Read every source model back from its file (safe_mode, hash checked), as the tutorial does."""
    weights = {}
    for record in store.source_models(study_id, direction.name):
        model = models.load_model_file(record["file"], expected_sha256=record["file_sha256"])
        loaded_arch = models.architecture_of(model, source=record["file"])
        if loaded_arch.shapes != direction.source_arch.shapes:
            raise models.ModelFileError(
                f"{record['file']}: layer shapes {loaded_arch.shapes} differ from the study's "
                f"{direction.source_arch.shapes}"
            )
        weights[record["source_index"]] = models.keras_weights(model)
    return weights


def _weights_for(shard: list[RunSpec], source_weights: dict) -> dict:
    needed = {run.source_index for run in shard if run.strategy.uses_source}
    return {index: source_weights[index] for index in needed}


def _save_source_model(folder: Path, study_id: int, run: RunSpec, result, index: int, direction: Direction) -> dict:
    weights = [tuple(array[index] for array in arrays) for arrays in result.weights]
    prefix = "" if direction.name == "forward" else "reverse_"
    path = folder / SOURCE_DIR / f"{prefix}source_{run.source_index:03d}.keras"
    sha = models.save_model_file(models.build_keras_model(direction.source_arch, weights), path)
    return {
        "study_id": study_id,
        "direction": direction.name,
        "source_index": run.source_index,
        "file": str(path.resolve()),
        "file_sha256": sha,
        "weights_sha256": models.weights_sha256(weights),
        "trained_here": True,
        "seed": run.seed,
        **{name: float(result.final[name][index]) for name in result.final},
    }


def _given_source_record(config: StudyConfig, study_id: int, model, source_task: Task | None) -> dict:
    weights = models.keras_weights(model)
    record = {
        "study_id": study_id,
        "direction": "forward",
        "source_index": 0,
        "file": config.source.model_file,
        "file_sha256": models.file_sha256(config.source.model_file),
        "weights_sha256": models.weights_sha256(weights),
        "trained_here": False,
    }
    if source_task is not None:
        for split in ("train", "test"):
            x, y = getattr(source_task, f"x_{split}"), getattr(source_task, f"y_{split}")
            record.update({f"{split}_{k}": v for k, v in evaluate_model(model, x, y, source_task.kind).items()})
    return record


def evaluate_model(model, x: np.ndarray, y: np.ndarray, kind: str) -> dict[str, float]:
    """A Keras model's loss and metrics on one split, as the engine reports them."""
    outputs = np.asarray(model(x, training=False), dtype=np.float64)
    if kind == "classification":
        clipped = np.clip(outputs / outputs.sum(1, keepdims=True), 1e-7, 1 - 1e-7)
        return {
            "loss": float(np.mean(-np.sum(y * np.log(clipped), axis=1))),
            "accuracy": float(np.mean(outputs.argmax(1) == y.argmax(1))),
        }
    from sklearn.metrics import r2_score

    return {
        "loss": float(np.mean(np.square(y - outputs))),
        "mae": float(np.mean(np.abs(y - outputs))),
        "r2": float(r2_score(y, outputs)),
    }


# --- one run on its own ------------------------------------------------------------------


def retrain_run(
    folder: str | Path, role: str, strategy_label: str, source_index: int, repeat: int, direction: str = "forward"
):
    """Train one stored run again on its own (a shard of one) from the study in `folder`.

    Returns the engine's `ShardResult`; reproducibility means it equals the stored run.
    """
    from transferlab.config import study_from_dict

    with Store.in_folder(folder) as store:
        study = store.study()
        config = study_from_dict(study["config"], source=str(Path(folder) / "results.sqlite"), check_model_file=False)
        given = models.load_model_file(config.source.model_file) if config.source.model_file else None
        chosen = next((d for d in study_directions(config, given) if d.name == direction), None)
        wanted = (direction, role, strategy_label, source_index, repeat)
        run = None if chosen is None else next((r for r in plan_runs(config, chosen) if r.key == wanted), None)
        if run is None:
            raise KeyError(f"no run {wanted} in the study stored in {folder}")
        source_weights = load_source_weights(store, study["id"], chosen) if role == "target" else {}
    if role == "source":
        job = ShardJob(chosen.source_arch, chosen.source_task, config.training.sgd(), [run],
                       {"standalone": chosen.source_recipe}, bn_frozen=config.bn_frozen)
    else:
        recipe = chosen.recipes[strategy_label]
        job = ShardJob(recipe.arch, chosen.target_task, config.training.sgd(), [run], chosen.recipes,
                       _weights_for([run], source_weights), bn_frozen=config.bn_frozen)
    return job.execute()
