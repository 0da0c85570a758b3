"""A shard job: one engine call for runs of one architecture, with everything it needs.

It is self-contained (architecture, task, training settings, runs, recipes and the
source weights they reuse) so an executor can ship it to another process or machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from transferlab import engine, models, objectives, optimizers
from transferlab.strategies import Recipe
from transferlab.tasks import Task

if TYPE_CHECKING:
    from transferlab.plan import RunSpec


@dataclass
class ShardJob:
    """Everything one engine call needs; self-contained so an executor can ship it elsewhere.

    Every run's strategy has its recipe in `recipes`, and all recipes share `arch`."""

    arch: models.Architecture
    task: Task
    sgd: optimizers.TrainingSettings
    runs: list[RunSpec]
    recipes: dict[str, Recipe]
    source_weights: dict[int, models.Weights] = field(default_factory=dict)
    bn_frozen: str = "inference"
    penalised: bool = False  # train with the (possibly all-zero) L2 term, so every shard of a
    # cohort with an L2-SP strategy shares one compiled program
    padding: engine.RowPadding | None = None  # the rows the program is built for (`Plan.padding`)

    def initial_state(self):
        """Stacked initial weights `(models, …)`, multipliers `(models, epochs, layers)`, recipes."""
        per_layer = [[] for _ in self.arch.layers]
        multipliers, recipes = [], []
        for run in self.runs:
            recipe = self.recipes[run.strategy.label]
            if recipe.arch != self.arch:
                raise ValueError(f"{run.strategy.label} trains {recipe.arch.describe()}, not {self.arch.describe()}")
            for layer, arrays in enumerate(initial_weights(recipe, run, self.source_weights)):
                per_layer[layer].append(arrays)
            multipliers.append(recipe.multipliers)
            recipes.append(recipe)
        stacked = [tuple(np.stack(arrays) for arrays in zip(*layer)) for layer in per_layer]
        return stacked, np.stack(multipliers), recipes

    def execute(self) -> engine.ShardResult:
        stacked, multipliers, recipes = self.initial_state()
        anchors = penalties = None
        if self._penalised(recipes):
            penalties = np.array(
                [r.penalties if r.penalties is not None else (0.0,) * len(self.arch.layers) for r in recipes],
                np.float32,
            )
            anchors = _anchors(self.arch, self.runs, recipes, self.source_weights)
        return self._engine(engine.train_models, stacked, multipliers, anchors, penalties)

    def prepare(self) -> None:
        """Compile (or load from the disk cache) the program `execute` will run, without the
        source weights and without training: arrays of the right shapes stand in for them."""
        n = len(self.runs)
        recipes = [self.recipes[run.strategy.label] for run in self.runs]
        shapes = [self.arch.weight_shapes(layer) for layer in range(len(self.arch.layers))]
        weights = [tuple(np.zeros((n, *shape), np.float32) for shape in layer) for layer in shapes]
        anchors = penalties = None
        if self._penalised(recipes):
            penalties = np.zeros((n, len(self.arch.layers)), np.float32)
            anchors = [None if spec.penalised_array is None else np.zeros((n, *shapes[layer][spec.penalised_array]),
                                                                            np.float32)
                       for layer, spec in enumerate(self.arch.layers)]
        multipliers = np.stack([recipe.multipliers for recipe in recipes])
        self._engine(engine.prepare_program, weights, multipliers, anchors, penalties)

    def _penalised(self, recipes: list[Recipe]) -> bool:
        return self.penalised or any(recipe.penalties is not None for recipe in recipes)

    def _engine(self, call, weights, multipliers, anchors, penalties):
        """`engine.train_models` (or `prepare_program`) on this shard's task and settings."""
        return call(
            self.arch.layers, weights, multipliers, [run.seed for run in self.runs],
            self.task.x_train, self.task.y_train, self.task.x_test, self.task.y_test, self.sgd,
            anchors=anchors, penalties=penalties, loss=objectives.for_task(self.task.kind, self.arch.head).name,
            bn_frozen=self.bn_frozen, padding=self.padding,
        )


def initial_weights(recipe: Recipe, run: RunSpec, source_weights: dict) -> models.Weights:
    """Fresh layers drawn from the run's own seed; reused layers copied from its source model
    (an output layer matched to the target's classes unit by unit: `head_weights`)."""
    rng = np.random.default_rng(np.random.SeedSequence(run.seed, spawn_key=(0,)))
    fresh = models.fresh_weights(recipe.arch, rng)
    if all(origin is None for origin in recipe.origins):
        return fresh
    source = source_weights[run.source_index]
    weights = [
        tuple(a.copy() for a in source[origin]) if origin is not None else fresh[layer]
        for layer, origin in enumerate(recipe.origins)
    ]
    if recipe.head_units is not None:
        weights[-1] = head_weights(recipe, source[recipe.origins[-1]], fresh[-1])
    if recipe.source_scale is not None:
        weights = [_mixed(recipe, layer, arrays, fresh[layer]) for layer, arrays in enumerate(weights)]
    return weights


def _mixed(recipe: Recipe, layer: int, arrays: tuple, fresh: tuple) -> tuple:
    """A reused layer's trainable arrays as `source_scale · source + fresh_scale · fresh`
    (its state, e.g. moving statistics, as the source has it); in an output layer matched
    by class, a new class's fresh unit stays as drawn."""
    if recipe.origins[layer] is None:
        return arrays
    scale, noise = np.float32(recipe.source_scale[layer]), np.float32(recipe.fresh_scale[layer])
    trainable = recipe.arch.layers[layer].n_trainable
    mixed = [scale * array + noise * drawn if index < trainable else array
             for index, (array, drawn) in enumerate(zip(arrays, fresh))]
    if layer == len(recipe.origins) - 1 and recipe.head_units is not None:
        new = [unit for unit, source_unit in enumerate(recipe.head_units) if source_unit is None]
        mixed[0][:, new], mixed[1][new] = fresh[0][:, new], fresh[1][new]
    return tuple(mixed)


def head_weights(recipe: Recipe, source_head: tuple, fresh_head: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The output layer's (kernel, bias): column `j` from source unit `head_units[j]`
    (× −1 when `head_negated`), the layer's fresh draw where a class is new."""
    kernel, bias = (np.array(array, copy=True) for array in fresh_head)
    sign = np.float32(-1.0 if recipe.head_negated else 1.0)
    for unit, source_unit in enumerate(recipe.head_units):
        if source_unit is not None:
            kernel[:, unit] = sign * source_head[0][:, source_unit]
            bias[unit] = sign * source_head[1][source_unit]
    return kernel, bias


def _anchors(arch, runs, recipes, source_weights) -> list[np.ndarray | None]:
    """Per layer with an anchored array (a Dense kernel), each run's L2 anchor: its source's
    array, or zeros for a fresh layer."""
    anchors = []
    for layer, spec in enumerate(arch.layers):
        if spec.penalised_array is None:
            anchors.append(None)
            continue
        which = spec.penalised_array
        shape = arch.weight_shapes(layer)[which]
        anchors.append(np.stack([_anchor(recipe, run, layer, which, shape, source_weights)
                                 for run, recipe in zip(runs, recipes)]))
    return anchors


def _anchor(recipe: Recipe, run: RunSpec, layer: int, which: int, shape, source_weights) -> np.ndarray:
    """One run's L2 anchor for one layer: its source's array (an output layer matched by
    class: the matched source columns, zeros for a new class's), or zeros for a fresh layer."""
    origin = recipe.origins[layer]
    if origin is None or run.source_index not in source_weights:
        return np.zeros(shape, np.float32)
    source = source_weights[run.source_index][origin]
    if layer == len(recipe.origins) - 1 and recipe.head_units is not None:
        return head_weights(recipe, source, (np.zeros(shape, np.float32), np.zeros(shape[-1:], np.float32)))[which]
    return source[which]
