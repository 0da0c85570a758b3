"""Plan and run a study: strategies × source models × repeats → runs → shards → store.

Source models are trained first (one cohort on the source task), saved as `.keras`
files and loaded back, as the tutorial does; then every target run (one cohort per
architecture) is trained in shards by an executor, each shard stored in one
transaction. Rerunning into the same folder resumes.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab import engine, models
from transferlab.config import StudyConfig, StudyFileError, check_strategies
from transferlab.executors import LocalExecutor
from transferlab.store import Store
from transferlab.strategies import Standalone
from transferlab.tasks import Task

SOURCE_DIR = "sources"
_ROLE_CODES = {"source": 0, "target": 1}
NO_SOURCE = -1


@dataclass(frozen=True)
class RunSpec:
    """One training run: what it trains, from which source model, and its seed."""

    role: str
    strategy: object
    source_index: int
    repeat: int
    seed: int

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.role, self.strategy.label, self.source_index, self.repeat)


def run_seed(study_seed: int, role: str, label: str, source_index: int, repeat: int) -> int:
    """Every run's seed derives from the study seed and the run's identity alone, so adding a
    strategy or changing shards never changes another run's numbers."""
    sequence = np.random.SeedSequence(
        study_seed,
        spawn_key=(_ROLE_CODES[role], zlib.crc32(label.encode()), source_index + 1, repeat),
    )
    return int(sequence.generate_state(1, np.uint32)[0])


def plan_runs(config: StudyConfig, target_strategies: list, trains_sources: bool) -> list[RunSpec]:
    """Source runs (one per source model) then target runs, in a fixed order."""
    runs = []
    if trains_sources:
        source = Standalone()
        for index in range(config.source_repeats):
            seed = run_seed(config.seed, "source", source.label, index, 0)
            runs.append(RunSpec("source", source, index, 0, seed))
    for strategy in target_strategies:
        source_indices = range(config.source_repeats) if strategy.uses_source else [NO_SOURCE]
        for source_index in source_indices:
            for repeat in range(config.repeats):
                seed = run_seed(config.seed, "target", strategy.label, source_index, repeat)
                runs.append(RunSpec("target", strategy, source_index, repeat, seed))
    return runs


def shard_runs(runs: list[RunSpec], shard_size: int, n_devices: int) -> tuple[list[list[RunSpec]], int]:
    """Split runs into shards of equal padded size (one compiled program serves them all)."""
    if not runs:
        return [], 0
    n_shards = -(-len(runs) // shard_size)
    per_shard = -(-len(runs) // n_shards)
    padded = -(-per_shard // n_devices) * n_devices
    return [runs[i : i + per_shard] for i in range(0, len(runs), per_shard)], padded


@dataclass
class ShardJob:
    """Everything one engine call needs; self-contained so an executor can ship it elsewhere."""

    arch: models.Architecture
    task: Task
    sgd: engine.SGDConfig
    runs: list[RunSpec]
    source_weights: dict[int, models.Weights] = field(default_factory=dict)
    pad_to: int = 1

    def initial_state(self):
        """Stacked initial weights `(models, …)`, multipliers `(models, epochs, layers)`, penalties."""
        kernels = [[] for _ in self.arch.layers]
        biases = [[] for _ in self.arch.layers]
        multipliers, penalties = [], []
        for run in self.runs:
            recipe = run.strategy.recipe(self.arch, self.sgd.epochs)
            weights = initial_weights(self.arch, recipe.origins, run, self.source_weights)
            for layer, (kernel, bias) in enumerate(weights):
                kernels[layer].append(kernel)
                biases[layer].append(bias)
            multipliers.append(recipe.multipliers)
            penalties.append(recipe.penalties)
        stacked = [(np.stack(k), np.stack(b)) for k, b in zip(kernels, biases)]
        return stacked, np.stack(multipliers), penalties

    def execute(self) -> engine.ShardResult:
        stacked, multipliers, penalties = self.initial_state()
        anchors = penalty_array = None
        if any(p is not None for p in penalties):
            penalty_array = np.array(
                [p if p is not None else (0.0,) * len(self.arch.layers) for p in penalties], np.float32
            )
            anchors = _anchors(self.arch, self.runs, self.source_weights)
        orders = engine.shuffle_orders([run.seed for run in self.runs], self.sgd.epochs, len(self.task.x_train))
        return engine.train_models(
            tuple(spec.activation for spec in self.arch.layers),
            stacked,
            multipliers,
            orders,
            self.task.x_train,
            self.task.y_train,
            self.task.x_test,
            self.task.y_test,
            self.sgd,
            anchors=anchors,
            penalties=penalty_array,
            pad_to=self.pad_to,
        )


def initial_weights(
    arch: models.Architecture, origins: tuple[str, ...], run: RunSpec, source_weights: dict
) -> models.Weights:
    """Fresh layers drawn from the run's own seed; source layers copied from its source model."""
    rng = np.random.default_rng(np.random.SeedSequence(run.seed, spawn_key=(0,)))
    fresh = models.fresh_weights(arch, rng)
    if "source" not in origins:
        return fresh
    source = source_weights[run.source_index]
    return [
        (source[layer][0].copy(), source[layer][1].copy()) if origin == "source" else fresh[layer]
        for layer, origin in enumerate(origins)
    ]


def _anchors(arch, runs, source_weights) -> list[np.ndarray]:
    per_layer = []
    for layer, (n_in, n_out) in enumerate(arch.shapes):
        per_layer.append(
            np.stack(
                [
                    source_weights[run.source_index][layer][0]
                    if run.source_index in source_weights
                    else np.zeros((n_in, n_out), np.float32)
                    for run in runs
                ]
            )
        )
    return per_layer


# --- running a study ---------------------------------------------------------------------


@dataclass
class StudyOutcome:
    study_id: int
    folder: Path
    trained_runs: int
    skipped_runs: int


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
) -> StudyOutcome:
    """Train every run of the study that is not yet in `folder`'s database."""
    import jax

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    executor = executor or LocalExecutor()
    progress = progress or (lambda stage, done, total: None)
    source_task = config.source.make("source") if config.source.seed is not None else None
    target_task = config.target.make("target")
    trains_sources = config.source.model_file is None
    if trains_sources:
        arch = config.architecture(target_task.n_features, target_task.n_outputs)
        target_strategies = config.parsed_strategies()
    else:
        given = models.load_model_file(config.source.model_file)
        arch = models.architecture_of(given, source=config.source.model_file)
        check_fits(arch, target_task, config.source.model_file)
        try:
            target_strategies = check_strategies(config, arch)
        except ValueError as error:
            raise StudyFileError(f"{config.name}: {error}") from None

    runs = plan_runs(config, target_strategies, trains_sources)
    n_devices = len(jax.local_devices())
    with Store.in_folder(folder) as store:
        study_id = store.open_study(config.name, config.model_dump(mode="json"), config.sha256(), versions())
        store.plan_runs(
            study_id,
            [
                {
                    "role": run.role,
                    "strategy": run.strategy.label,
                    "strategy_json": _strategy_json(run.strategy),
                    "source_index": run.source_index,
                    "repeat": run.repeat,
                    "seed": run.seed,
                    "architecture": arch.to_dict(),
                }
                for run in runs
            ],
        )
        stored = {(r.role, r.strategy, r.source_index, r.repeat): r for r in store.runs(study_id)}
        pending = [run for run in runs if stored[run.key].status != "done"]
        skipped = len(runs) - len(pending)
        pending_sources = [run for run in pending if run.role == "source"]
        pending_targets = [run for run in pending if run.role == "target"]
        target_shards, pad_to = shard_runs(pending_targets, config.execution.shard_size, n_devices)
        sgd = config.training.sgd()

        if trains_sources:
            source_shards, source_pad = shard_runs(pending_sources, config.execution.shard_size, n_devices)
            if pad_to >= source_pad and source_task.x_train.shape == target_task.x_train.shape:
                source_pad = pad_to  # same shapes: reuse the target program instead of compiling another
            jobs = [ShardJob(arch, source_task, sgd, shard, pad_to=source_pad) for shard in source_shards]
            done = 0
            total = len(pending_sources)
            progress("source models", done, total)
            for job, result in executor.map(jobs):
                sources = [
                    _save_source_model(folder, study_id, run, result, i, arch)
                    for i, run in enumerate(job.runs)
                ]
                store.finish_shard([stored[r.key].id for r in job.runs], result.final, result.curves, sources)
                done += len(job.runs)
                progress("source models", done, total)
        elif not store.source_models(study_id):
            store.record_source_model(_given_source_record(config, study_id, given, source_task))

        if pending_targets:
            source_weights = load_source_weights(store, study_id, arch, target_task)
            jobs = [
                ShardJob(arch, target_task, sgd, shard, _weights_for(shard, source_weights), pad_to)
                for shard in target_shards
            ]
            done, total = 0, len(pending_targets)
            progress("target runs", done, total)
            for job, result in executor.map(jobs):
                store.finish_shard([stored[r.key].id for r in job.runs], result.final, result.curves)
                done += len(job.runs)
                progress("target runs", done, total)
    return StudyOutcome(study_id, folder, len(pending), skipped)


def check_fits(arch: models.Architecture, task: Task, source: str) -> None:
    """The source model's input and output widths must match the target task."""
    if arch.n_inputs != task.n_features:
        raise models.ModelFileError(
            f"{source}: the model takes {arch.n_inputs} input features but the target task has "
            f"{task.n_features}; choose a source model with a matching input layer"
        )
    if arch.n_outputs != task.n_outputs:
        raise models.ModelFileError(
            f"{source}: the model has {arch.n_outputs} outputs but the target task has "
            f"{task.n_outputs} classes; use a source model with {task.n_outputs} outputs"
        )


def load_source_weights(store: Store, study_id: int, arch, target_task) -> dict[int, models.Weights]:
    """Read every source model back from its file (safe_mode, hash checked), as the tutorial does."""
    weights = {}
    for record in store.source_models(study_id):
        model = models.load_model_file(record["file"], expected_sha256=record["file_sha256"])
        loaded_arch = models.architecture_of(model, source=record["file"])
        check_fits(loaded_arch, target_task, record["file"])
        if loaded_arch.shapes != arch.shapes:
            raise models.ModelFileError(
                f"{record['file']}: layer shapes {loaded_arch.shapes} differ from the study's {arch.shapes}"
            )
        weights[record["source_index"]] = models.keras_weights(model)
    return weights


def _weights_for(shard: list[RunSpec], source_weights: dict) -> dict:
    needed = {run.source_index for run in shard if run.strategy.uses_source}
    return {index: source_weights[index] for index in needed}


def _strategy_json(strategy) -> dict:
    from transferlab.strategies import strategy_to_dict

    return strategy_to_dict(strategy)


def _save_source_model(folder: Path, study_id: int, run: RunSpec, result, index: int, arch) -> dict:
    weights = [(k[index], b[index]) for k, b in result.weights]
    path = folder / SOURCE_DIR / f"source_{run.source_index:03d}.keras"
    sha = models.save_model_file(models.build_keras_model(arch, weights), path)
    return {
        "study_id": study_id,
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
        "source_index": 0,
        "file": config.source.model_file,
        "file_sha256": models.file_sha256(config.source.model_file),
        "weights_sha256": models.weights_sha256(weights),
        "trained_here": False,
    }
    if source_task is not None:
        for split in ("train", "test"):
            x, y = getattr(source_task, f"x_{split}"), getattr(source_task, f"y_{split}")
            probabilities = np.asarray(model(x))
            record[f"{split}_accuracy"] = float(np.mean(probabilities.argmax(1) == y.argmax(1)))
            clipped = np.clip(probabilities / probabilities.sum(1, keepdims=True), 1e-7, 1 - 1e-7)
            record[f"{split}_loss"] = float(np.mean(-np.sum(y * np.log(clipped), axis=1)))
    return record


# --- one run on its own ------------------------------------------------------------------


def retrain_run(folder: str | Path, role: str, strategy_label: str, source_index: int, repeat: int):
    """Train one stored run again on its own (a shard of one) from the study in `folder`.

    Returns the engine's `ShardResult`; reproducibility means it equals the stored run.
    """
    from transferlab.config import study_from_dict

    with Store.in_folder(folder) as store:
        study = store.study()
        config = study_from_dict(study["config"], source=str(Path(folder) / "results.sqlite"))
        target_task = config.target.make("target")
        if config.source.model_file is None:
            arch = config.architecture(target_task.n_features, target_task.n_outputs)
            strategies_ = config.parsed_strategies()
        else:
            arch = models.architecture_of(models.load_model_file(config.source.model_file))
            strategies_ = check_strategies(config, arch)
        trains_sources = config.source.model_file is None
        wanted = (role, strategy_label, source_index, repeat)
        run = next((r for r in plan_runs(config, strategies_, trains_sources) if r.key == wanted), None)
        if run is None:
            raise KeyError(f"no run {wanted} in the study stored in {folder}")
        task = config.source.make("source") if role == "source" else target_task
        source_weights = load_source_weights(store, study["id"], arch, target_task) if role == "target" else {}
    job = ShardJob(arch, task, config.training.sgd(), [run], _weights_for([run], source_weights))
    return job.execute()

