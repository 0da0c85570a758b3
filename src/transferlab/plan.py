"""The plan: a validated study turned, once, into everything that runs and is reported.

A `Plan` holds the tasks (as specs that make their arrays again), the directions with
their source architectures, each strategy's recipe and every run with its seed. It is
built from a `StudyConfig` at the edge (`build_plan`), stored in canonical JSON, and
read back by resume, `report` and `retrain_run` (`Plan.from_dict`), which never apply
the study-file rules again: what was valid when the study ran stays readable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab import datasets, layers, models, objectives, registry, strategies, tasks
from transferlab.canonical import canonical_json
from transferlab.errors import ExtensionError, ModelFileError, StrategyError, StudyFileError
from transferlab.heads import Classes
from transferlab.optimizers import TrainingSettings
from transferlab.orders import RowPadding
from transferlab.strategies import InputWidthError, Recipe, Standalone, strategy_to_dict
from transferlab.words import count

PLAN_FORMAT = 2
_ROLE_CODES = {"source": 0, "target": 1}
NO_SOURCE = -1


@dataclass(frozen=True)
class TaskSpec:
    """A task as the plan holds it: its kind, the SHA-256 fingerprint of its arrays (the
    arrays themselves are stored once in the results database), its feature and class
    names, and where it came from (`provenance`: descriptive, shown in the report)."""

    kind: str
    fingerprint: str
    description: str
    feature_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, task: tasks.Task) -> TaskSpec:
        return cls(task.kind, task.fingerprint(), task.provenance.get("name", task.name),
                   tuple(task.feature_names), tuple(task.class_names), dict(task.provenance))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "fingerprint": self.fingerprint, "description": self.description,
                "feature_names": list(self.feature_names), "class_names": list(self.class_names),
                "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: dict) -> TaskSpec:
        return cls(data["kind"], data["fingerprint"], data["description"], tuple(data["feature_names"]),
                   tuple(data["class_names"]), dict(data.get("provenance") or {}))


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
        """The run's identity: its strategy by canonical parameters, never by display label."""
        return (self.direction, self.role, strategy_identity(self.strategy), self.source_index, self.repeat)


def strategy_identity(strategy) -> str:
    """A strategy's identity: the canonical JSON of its name and parameters."""
    return canonical_json(strategy_to_dict(strategy))


def run_seed(study_seed: int, role: str, identity: str, source_index: int, repeat: int, direction: str = "forward") -> int:
    """Every run's seed derives from the study seed and the run's identity alone (its
    strategy's canonical parameters, `strategy_identity`), so adding a strategy, a direction,
    rewording a label or changing shards never changes another run's numbers."""
    strategy_code = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:4], "little")
    key = (_ROLE_CODES[role], strategy_code, source_index + 1, repeat)
    if direction == "reverse":
        key += (1,)
    sequence = np.random.SeedSequence(study_seed, spawn_key=key)
    return int(sequence.generate_state(1, np.uint32)[0])


@dataclass
class Direction:
    """One way round: source models (trained on `source_task`, or given) reused on `target_task`.

    `recipes` holds each target strategy's recipe by label, and `source_recipe` the recipe
    that trains a source model. `source_title` names where the source models come from."""

    name: str
    source_spec: TaskSpec | None
    target_spec: TaskSpec
    source_arch: models.Architecture
    strategies: list
    recipes: dict[str, Recipe]
    source_recipe: Recipe
    trains_sources: bool
    source_title: str
    _made: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def source_task(self) -> tasks.Task | None:
        return None if self.source_spec is None else self._task("source", self.source_spec)

    @property
    def target_task(self) -> tasks.Task:
        return self._task("target", self.target_spec)

    def _task(self, role: str, spec: TaskSpec) -> tasks.Task:
        if role not in self._made:
            raise RuntimeError(f"the {role} task's arrays were not attached to the plan (Plan.attach_tasks)")
        return self._made[role]

    def task_specs(self) -> dict[str, TaskSpec]:
        return {role: spec for role, spec in (("source", self.source_spec), ("target", self.target_spec)) if spec}

    @property
    def title(self) -> str:
        return f"{self.source_title} → {self.target_spec.description}"

    @property
    def objective(self) -> objectives.Objective:
        """The target task's objective (kind-level: its headline and metrics)."""
        return objectives.for_kind(self.target_spec.kind)

    @property
    def score(self) -> str:
        """The headline test metric as stored (`test_accuracy`, `test_r2`): the objective's."""
        return self.objective.score_column

    @property
    def notice(self) -> str | None:
        """What the user should know before reading the results of this direction: how
        the strategies that reuse the source's output layer start it (fresh, or its units
        matched to the target's classes), one line per distinct note."""
        notes = list(dict.fromkeys(self.recipes[s.label].head_notice for s in self.strategies
                                   if self.recipes[s.label].head_notice))
        if not notes:
            return None
        return f"{self.name}: output layer of strategies that reuse the source: " + "; ".join(notes)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source_task": None if self.source_spec is None else self.source_spec.to_dict(),
            "target_task": self.target_spec.to_dict(),
            "source_arch": self.source_arch.to_dict(),
            "strategies": [strategy_to_dict(s) for s in self.strategies],
            "recipes": {label: recipe_to_dict(r) for label, r in self.recipes.items()},
            "source_recipe": recipe_to_dict(self.source_recipe),
            "trains_sources": self.trains_sources,
            "source_title": self.source_title,
        }

    @classmethod
    def from_dict(cls, data: dict, extensions: dict | None = None) -> Direction:
        return cls(
            name=data["name"],
            source_spec=None if data["source_task"] is None else TaskSpec.from_dict(data["source_task"]),
            target_spec=TaskSpec.from_dict(data["target_task"]),
            source_arch=models.Architecture.from_dict(data["source_arch"]),
            strategies=[strategies.from_dict(s, extensions) for s in data["strategies"]],
            recipes={label: recipe_from_dict(r) for label, r in data["recipes"].items()},
            source_recipe=recipe_from_dict(data["source_recipe"]),
            trains_sources=bool(data["trains_sources"]),
            source_title=data["source_title"],
        )


@dataclass
class Plan:
    """Everything a study runs: its directions, repeats, training settings and seeds.

    `study` is the validated study configuration, kept for display only; `model_file_sha256`
    is the given source model's content hash (part of the plan's identity, its path is not)."""

    name: str
    seed: int
    repeats: int
    source_repeats: int
    training: TrainingSettings
    bn_frozen: str
    directions: list[Direction]
    model_file: str | None = None
    model_file_sha256: str | None = None
    study: dict = field(default_factory=dict)
    # per task fingerprint, the [train, test] rows its programs are built for when larger
    # than its own (a sweep's points then share programs: `share_programs`)
    padding: dict[str, list[int]] = field(default_factory=dict)
    # strategies from extensions: {name: {"module", "version"}}, so a folder names what it needs
    extensions: dict[str, dict] = field(default_factory=dict)

    def direction(self, name: str) -> Direction | None:
        return next((d for d in self.directions if d.name == name), None)

    def tasks(self) -> dict[str, tasks.Task]:
        """Every task the plan trains on, by fingerprint."""
        found = {}
        for direction in self.directions:
            for role, spec in direction.task_specs().items():
                found[spec.fingerprint] = direction._task(role, spec)
        return found

    def task_specs(self) -> dict[str, TaskSpec]:
        """The forward direction's tasks by role (`source` only when the plan has a source task)."""
        return self.directions[0].task_specs()

    def task_notes(self) -> list[tuple[str, TaskSpec, str]]:
        """`(role, task, note)` for what building each task decided (`labels.notes_of`)."""
        from transferlab.data.labels import notes_of

        return [(role, spec, note) for role, spec in self.task_specs().items() for note in notes_of(spec.provenance)]

    def notes(self) -> list[str]:
        """What building the tasks and matching the output layers decided: printed when the
        study starts."""
        lines = [f"{role} ({spec.description}): {note}" for role, spec, note in self.task_notes()]
        return lines + [d.notice for d in self.directions if d.notice]

    def attach_tasks(self, by_fingerprint: dict[str, tasks.Task]) -> None:
        """Give a stored plan its tasks' arrays (read back from the database)."""
        for direction in self.directions:
            for role, spec in direction.task_specs().items():
                direction._made[role] = by_fingerprint[spec.fingerprint]

    def padding_for(self, spec: TaskSpec) -> RowPadding | None:
        """The rows a task's programs are built for, or None for its own."""
        rows = self.padding.get(spec.fingerprint)
        return None if rows is None else RowPadding(*rows)

    def runs(self, direction: Direction) -> list[RunSpec]:
        """Source runs (one per source model) then target runs, in a fixed order."""
        runs = []
        if direction.trains_sources:
            source = Standalone()
            for index in range(self.source_repeats):
                seed = run_seed(self.seed, "source", strategy_identity(source), index, 0, direction.name)
                runs.append(RunSpec("source", source, index, 0, seed, direction.name))
        for strategy in direction.strategies:
            source_indices = range(self.source_repeats) if strategy.uses_source else [NO_SOURCE]
            for source_index in source_indices:
                for repeat in range(self.repeats):
                    seed = run_seed(self.seed, "target", strategy_identity(strategy), source_index, repeat, direction.name)
                    runs.append(RunSpec("target", strategy, source_index, repeat, seed, direction.name))
        return runs

    def count_runs(self) -> dict[str, int]:
        """Planned runs by role, without listing them."""
        sources = sum(self.source_repeats for d in self.directions if d.trains_sources)
        targets = sum(
            self.repeats * (self.source_repeats if s.uses_source else 1)
            for d in self.directions
            for s in d.strategies
        )
        return {"source": sources, "target": targets}

    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "name": self.name,
            "seed": self.seed,
            "repeats": self.repeats,
            "source_repeats": self.source_repeats,
            "training": dataclasses.asdict(self.training),
            "bn_frozen": self.bn_frozen,
            "directions": [d.to_dict() for d in self.directions],
            "model_file": self.model_file,
            "model_file_sha256": self.model_file_sha256,
            "study": self.study,
        } | ({"padding": self.padding} if self.padding else {}) | (
            {"extensions": self.extensions} if self.extensions else {})

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"plan format {data.get('format')!r}; this version reads format {PLAN_FORMAT}")
        check_extensions(data.get("extensions") or {})
        return cls(
            name=data["name"],
            seed=int(data["seed"]),
            repeats=int(data["repeats"]),
            source_repeats=int(data["source_repeats"]),
            training=TrainingSettings(**data["training"]),
            bn_frozen=data["bn_frozen"],
            directions=[Direction.from_dict(d, data.get("extensions")) for d in data["directions"]],
            model_file=data.get("model_file"),
            model_file_sha256=data.get("model_file_sha256"),
            study=data.get("study", {}),
            padding={k: list(v) for k, v in (data.get("padding") or {}).items()},
            extensions=dict(data.get("extensions") or {}),
        )

    def sha256(self) -> str:
        """The plan's identity: everything that decides a number, and nothing that only
        describes (the display copy of the study file, the model file's path, titles and
        notes), so a reworded note in a later version does not refuse a resume."""
        content = _without(self.to_dict(), _DESCRIPTIVE_KEYS)
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()


# what describes or only shapes the programs (padding changes no number): not identity
_DESCRIPTIVE_KEYS = frozenset({"study", "model_file", "notes", "source_title", "description", "provenance", "extensions",
                               "padding", "head_notice"})


def _without(data, keys: frozenset):
    if isinstance(data, dict):
        return {k: _without(v, keys) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [_without(v, keys) for v in data]
    return data


def configuration(plan: dict) -> dict:
    """A stored plan's study settings as they took effect (training settings resolved to
    their defaults), for saying what differs between two studies."""
    return {**plan.get("study", {}), "training": plan["training"], "bn_frozen": plan["bn_frozen"]}


def changed_fields(before, after, prefix: str = "", shown: int = 5) -> str:
    """What differs between two configurations, as `path: old → new` (the first `shown`)."""
    changes = list(_changes(before, after, prefix))
    text = "; ".join(changes[:shown])
    return text + (f"; and {len(changes) - shown} more" if len(changes) > shown else "")


def _changes(before, after, path: str):
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            yield from _changes(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
    elif before != after:
        yield f"{path or 'value'}: {_short(before)} → {_short(after)}"


def _short(value) -> str:
    text = "(default)" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# --- recipes and strategies in stored form ------------------------------------------------


def recipe_to_dict(recipe: Recipe) -> dict:
    """A recipe as JSON; each layer's learning-rate multipliers as runs `[value, epochs]`."""
    columns = []
    for column in np.asarray(recipe.multipliers, np.float32).T:
        runs: list[list] = []
        for value in column.tolist():
            if runs and runs[-1][0] == value:
                runs[-1][1] += 1
            else:
                runs.append([value, 1])
        columns.append(runs)
    return {
        "arch": recipe.arch.to_dict(),
        "origins": list(recipe.origins),
        "multipliers": columns,
        "penalties": None if recipe.penalties is None else list(recipe.penalties),
        "notes": list(recipe.notes),
    } | ({"head_units": list(recipe.head_units), "head_negated": recipe.head_negated}
         if recipe.head_units is not None else {}) | (
        {"head_notice": recipe.head_notice} if recipe.head_notice else {}) | (
        {"source_scale": list(recipe.source_scale), "fresh_scale": list(recipe.fresh_scale)}
        if recipe.source_scale is not None else {})


def recipe_from_dict(data: dict) -> Recipe:
    columns = [np.concatenate([np.full(count, value, np.float32) for value, count in runs]) for runs in data["multipliers"]]
    return Recipe(
        arch=models.Architecture.from_dict(data["arch"]),
        origins=tuple(data["origins"]),
        multipliers=np.stack(columns, axis=1),
        penalties=None if data["penalties"] is None else tuple(data["penalties"]),
        notes=tuple(data["notes"]),
        head_units=None if data.get("head_units") is None else tuple(data["head_units"]),
        head_negated=bool(data.get("head_negated", False)),
        head_notice=data.get("head_notice"),
        source_scale=None if data.get("source_scale") is None else tuple(data["source_scale"]),
        fresh_scale=None if data.get("fresh_scale") is None else tuple(data["fresh_scale"]),
    )


# --- building the plan (the edge: a validated study file) ---------------------------------


def plan_of(config, given_model=None) -> Plan:
    """The plan of a validated `StudyConfig`, built once: loading a study builds it (every
    check runs then), and running, estimating and reporting it read that same plan. A
    config changed since is planned again."""
    key = canonical_json(config.model_dump(mode="json"))
    cached = getattr(config, "_plan", None)
    if cached is None or cached[0] != key:
        if given_model is None and config.source.model_file is not None:
            given_model = models.load_model_file(config.source.model_file)
        config._plan = (key, build_plan(config, given_model))
    return config._plan[1]


def build_plan(config, given_model=None) -> Plan:
    """The plan of a validated `StudyConfig`; `given_model` is the loaded `source.model_file`.

    Raises `StudyFileError` (naming the field, without the file) when a task cannot be made
    or a strategy does not fit."""
    sgd = config.training.settings()
    built = datasets.study_tasks(config)
    source_task, target_task = built["source"], built["target"]
    target_spec = TaskSpec.of(target_task)
    source_spec = TaskSpec.of(source_task) if source_task is not None else None
    model_sha = None
    if given_model is not None:
        source_arch = models.architecture_of(given_model, source=config.source.model_file)
        _check_described_source(config, source_task, source_arch)
        model_sha = models.file_sha256(config.source.model_file)
        pairs = [("forward", source_spec, target_spec, source_task, target_task, source_arch, False,
                  Path(config.source.model_file).name)]
    else:
        pairs = [("forward", source_spec, target_spec, source_task, target_task, None, True, source_spec.description)]
        if config.reverse:
            pairs.append(("reverse", target_spec, source_spec, target_task, source_task, None, True,
                          target_spec.description))
    directions = [_direction(config, sgd.epochs, *pair, given=given_model is not None) for pair in pairs]
    for direction in directions:
        try:
            models.feature_layer(direction.source_arch, config.scores.layer)
        except ModelFileError as error:
            raise StudyFileError(f"scores.layer: {error}", "scores.layer") from None
    return Plan(
        name=config.name,
        seed=config.seed,
        repeats=config.repeats,
        source_repeats=config.source_repeats,
        training=sgd,
        bn_frozen=config.bn_frozen,
        directions=directions,
        model_file=config.source.model_file,
        model_file_sha256=model_sha,
        # the display copy: a model-file study has no [model] table (the file is the model)
        study=config.model_dump(mode="json", exclude={"model"} if config.source.model_file else None),
        extensions=_extensions_used(config.strategy_values(), directions),
    )


def _extensions_used(values: list, directions: list[Direction]) -> dict[str, dict]:
    """The strategies and layer types from outside transferlab that the plan needs."""
    used = strategies.extensions_used(values)
    for direction in directions:
        archs = [direction.source_arch, *(recipe.arch for recipe in direction.recipes.values())]
        for spec in (spec for arch in archs for spec in arch.layers):
            found = registry.origin(type(spec))
            if found is not None:
                used[spec.type] = {"kind": "layer type", **found}
    return used


def check_extensions(extensions: dict[str, dict]) -> None:
    """A stored plan's extensions must be installed here: else one line naming each."""
    missing = [(name, found) for name, found in extensions.items()
               if (strategies.REGISTRY if found.get("kind") == "strategy" else layers.REGISTRY).get(name) is None]
    if missing:
        named = "; ".join(f"the {found.get('kind', 'strategy')} {name!r} from {found['module']} (version "
                          f"{found['version']})" for name, found in missing)
        raise ExtensionError(f"this study used {named}, not installed here; install or import it "
                             "(transferlab.register_strategy / register_layer, an entry point, or --extension FILE) "
                             "and try again")


def _direction(config, epochs: int, name: str, from_spec, to_spec, from_task, to_task, source_arch, trains: bool,
               title: str, given: bool) -> Direction:
    """One direction: the source architecture, each strategy's recipe (checked here, once)."""
    if source_arch is None:
        source_arch = architecture(config, from_task.inputs, head_for(config, from_task))
    head = head_for(config, to_task, source_arch.head if given else None)
    features = (None if from_task is None else from_task.feature_names, to_task.feature_names)
    classes = class_pair(from_task, to_task)
    values = config.strategy_values()
    try:
        recipes = check_strategies(values, source_arch, head, epochs, to_task.inputs, features, classes)
    except StudyFileError as error:
        if not given:
            raise
        model = f"source model {Path(config.source.model_file).name}: {source_arch.describe()}"
        raise StudyFileError(f"{error} ({model})") from None
    source_recipe = Standalone().recipe(source_arch, source_arch.head, epochs)
    direction = Direction(name, from_spec, to_spec, source_arch, values, recipes, source_recipe, trains, title)
    direction._made.update({k: v for k, v in (("source", from_task), ("target", to_task)) if v is not None})
    return direction


def _check_described_source(config, source_task, arch: models.Architecture) -> None:
    """A described source task must have the given model file's input width."""
    if source_task is not None and source_task.inputs != arch.n_inputs:
        has = (count(source_task.n_features, 'feature') if isinstance(source_task.inputs, int)
               else f"rows of shape {models.shape_text(source_task.inputs)}")
        raise StudyFileError(
            f"source: the source task has {has} but {Path(config.source.model_file).name} takes "
            f"{models.shape_text(arch.n_inputs)}; describe the task the model was trained on, or leave only "
            "model_file in [source]")


def check_strategies(values: list, source_arch: models.Architecture, head: layers.Dense, epochs: int,
                     n_inputs: int | None = None,
                     features: tuple[tuple[str, ...] | None, tuple[str, ...]] | None = None,
                     classes: Classes | None = None) -> dict[str, Recipe]:
    """Each strategy's recipe for the source model, the target's `n_inputs` features and
    output layer `head` over `epochs`; a strategy that cannot apply is a `StudyFileError`
    naming it (`strategies[1].freeze: ...`). `features` (source names or None, target
    names) name the columns when a strategy needs equal input widths and they differ."""
    recipes = {}
    for index, strategy in enumerate(values):
        where = f"strategies[{index}]"
        try:
            recipes[strategy.label] = strategy.recipe(source_arch, head, epochs, n_inputs, classes)
        except InputWidthError as error:
            raise StudyFileError(f"{where}: {strategy.label} {_width_problem(error, features)}") from None
        except StrategyError as error:
            field = f"{where}.{error.parameter}" if error.parameter else where
            raise StudyFileError(f"{field}: {error}") from None
        except TypeError as error:
            if registry.origin(type(strategy)) is None:
                raise  # a defect of transferlab's own: not the user's to fix
            raise ExtensionError(f"{where}: {type(strategy).__module__}.{type(strategy).__qualname__}.recipe failed: "
                                 f"{error}; it is called as recipe(source, head, epochs, n_inputs, classes) "
                                 "(the Strategy contract)") from None
        if not isinstance(recipes[strategy.label], Recipe):
            raise StudyFileError(f"{where}: {strategy.label}'s recipe() returned {type(recipes[strategy.label]).__name__}"
                                 ", not a Recipe (the Strategy contract)")
    return recipes


def _width_problem(error: InputWidthError, features) -> str:
    """`reuses the source's first layer, which takes 4 features (a, b, c, d), but the target has 3 (a, b, e)`."""
    from transferlab.data.select import listing

    if not (isinstance(error.source_width, int) and isinstance(error.target_width, int)):
        return str(error)
    source_names, target_names = features or (None, None)
    source_list = f" ({listing(source_names)})" if source_names else ""
    target_list = f" ({listing(target_names)})" if target_names else ""
    return (f"reuses the source's first layer, which takes {count(error.source_width, 'feature')}{source_list}, but the "
            f"target has {error.target_width}{target_list}; use new_input (a fresh first layer on the target's "
            "features) or standalone, or give both tasks the same features")


def architecture(config, n_inputs, head: layers.Dense) -> models.Architecture:
    """The `[model]` hidden layers on `n_inputs` features (or an input shape) under the
    output layer `head`; a declared `input_shape` must be the task's."""
    declared = config.model.input_shape
    if declared is not None and models.model_inputs(declared) != models.model_inputs(n_inputs):
        raise StudyFileError(
            f"model.input_shape: {list(declared)}, but the task's rows have shape {list(layers.as_shape(n_inputs))}; "
            "give the task's shape (images come from an image task: shape = \"image\", kind = \"images\" or an "
            ".npz of images)")
    try:
        if config.model.layers is not None:
            hidden = tuple(layers.from_dict(entry) for entry in config.model.layers)
            return models.Architecture(n_inputs, hidden + (head,))
        body = models.mlp(n_inputs, tuple(config.model.hidden), 1, activation=config.model.activation,
                          kernel_initializer=config.model.kernel_initializer, batch_norm=config.model.batch_norm,
                          dropout=config.model.dropout)
        return models.Architecture(n_inputs, body.layers[:-1] + (head,))
    except ModelFileError as error:
        hint = "" if config.model.layers is not None else (
            " (the [model] MLP takes flat rows: give layers = [...] with convolutions and a flatten or global "
            "pooling layer for images)")
        raise StudyFileError(f"model.{'layers' if config.model.layers is not None else 'hidden'}: {error}{hint}") from None


def head_for(config, task: tasks.Task, source_head: layers.Dense | None = None) -> layers.Dense:
    """The output layer a task needs: one sigmoid unit for two classes (unless
    `output_activation` says otherwise), softmax (or `output_activation`) over more
    classes, one linear unit per regression target. A given source model's output
    layer is kept when it already fits the task (two softmax units for two classes)."""
    if task.kind != "classification":
        return models.output_layer(task.n_outputs, "linear")
    chosen = config.model.output_activation
    if (chosen is None and source_head is not None and source_head.units == task.n_outputs
            and source_head.activation == "softmax"):
        return models.output_layer(source_head.units, "softmax")
    if task.n_outputs == 2 and chosen in (None, "sigmoid"):
        return models.output_layer(1, "sigmoid")
    return models.output_layer(task.n_outputs, chosen or "softmax")


def class_pair(source_task: tasks.Task | None, target_task: tasks.Task) -> Classes:
    """The class names a reused output layer is matched by (None where unknown)."""
    def named(task):
        return tuple(task.class_names) if task is not None and task.kind == "classification" else None

    return Classes(named(source_task), named(target_task))


# --- programs shared across plans ---------------------------------------------------------


def share_programs(plans: list[Plan]) -> list[Plan]:
    """Let plans whose tasks differ only in row counts share compiled programs: every task
    is padded (`RowPadding`) to the largest training and test split among the tasks of its
    kind, width and outputs. Returns new plans (a study's own plan is never changed).
    Padding changes no number (the engine's masks and block sums make a padded run equal its
    unpadded one, bit for bit; the tests check)."""
    groups: dict[tuple, list[tuple[str, int, int]]] = {}
    for plan in plans:
        for fingerprint, task in plan.tasks().items():
            key = (task.kind, task.x_train.shape[1:], task.y_train.shape[1:])
            groups.setdefault(key, []).append((fingerprint, len(task.x_train), len(task.x_test)))
    padding = {}
    for members in groups.values():
        train, test = max(m[1] for m in members), max(m[2] for m in members)
        padding.update({fingerprint: [train, test] for fingerprint, n_train, n_test in members
                        if (n_train, n_test) != (train, test)})
    return [dataclasses.replace(plan, padding={f: padding[f] for f in plan.tasks() if f in padding})
            for plan in plans]
