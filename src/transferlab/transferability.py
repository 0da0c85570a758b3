"""Every transferability score of many source models on one target, without training.

The source models (one architecture) run on the target's training rows in one
vectorised forward pass in inference mode, `jax.vmap`-ped over the models as the engine
maps models on feature maps. It returns each model's features at the chosen layer and its
head's outputs; `transferlab.scores` turns them into numbers. A score that cannot apply
(LEEP on a regression source, H-score on a regression target, features that are constant)
is stored as missing with the reason, never as a number.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from transferlab import scores
from transferlab._lazy import jax, jnp  # imported on first use: reading stored scores needs no JAX
from transferlab.errors import ModelFileError, ScoreInputError
from transferlab.layers import Context
from transferlab.models import Architecture, Weights, architecture_of, feature_layer, keras_weights, load_model_file

# rows per forward call: the features of a block of models stay near this many values
FORWARD_VALUES = 1 << 24


@dataclass(frozen=True)
class ScoreRow:
    """One score of one source model: its value, or None with the reason it has none."""

    source_index: int
    score: str
    value: float | None
    layer: int
    note: str = ""
    seconds: float = 0.0


def forward_source_models(arch: Architecture, weights: list[Weights], x: np.ndarray,
                          layer: int) -> tuple[np.ndarray, np.ndarray]:
    """`(features (M, N, D), outputs (M, N, O))` of M models on rows `x (N, …)`: the output of
    hidden layer `layer` (feature maps flattened) and of the output layer, in inference mode."""
    stop = _stop_index(arch, layer)
    stacked = [tuple(np.stack([np.asarray(model[index][k], np.float32) for model in weights])
                     for k in range(len(weights[0][index]))) for index in range(len(arch.layers))]
    program = _forward_program(arch.layers, stop)
    rows = max(1, FORWARD_VALUES // (len(weights) * max(arch.sizes)))
    features, outputs = [], []
    for first in range(0, len(x), rows):
        chunk = jnp.asarray(x[first : first + rows], jnp.float32)
        hidden, out = program(stacked, chunk)
        features.append(np.asarray(hidden, np.float64))
        outputs.append(np.asarray(out, np.float64))
    return np.concatenate(features, axis=1), np.concatenate(outputs, axis=1)


def warm_up(arch: Architecture, n_models: int, x: np.ndarray, layer: int | None) -> threading.Thread:
    """Compile the forward pass of `n_models` source models on rows like `x`, on a thread of
    its own while the study trains (a small program compiles in about 60 ms, more than
    scoring a model takes); a failure is left for the real call, which meets it."""
    def compile_program():
        try:
            zeros = [tuple(np.zeros(shape, np.float32) for shape in arch.weight_shapes(index))
                     for index in range(len(arch.layers))]
            forward_source_models(arch, [zeros] * n_models, x, feature_layer(arch, layer))
        except Exception:  # noqa: BLE001 - the scoring itself raises it where it belongs
            return

    thread = threading.Thread(target=compile_program, name="transferlab-score-compile", daemon=True)
    thread.start()
    return thread


def _stop_index(arch: Architecture, layer: int) -> int:
    """How many layers run before the features are read: everything up to the end of
    block `layer` (0: the leading weightless layers only)."""
    return len(arch.blocks[0]) - 1 if layer == 0 else arch.blocks[layer - 1][-1] + 1


@functools.lru_cache(maxsize=16)
def _forward_program(plan: tuple, stop: int):
    """A compiled pass of one model, mapped over the models' leading axis."""
    ctx = Context(training=False, models_last=False)

    def one_model(arrays, x):
        hidden, features = x, x
        for index, spec in enumerate(plan):
            if index == stop:
                features = hidden
            params, state = arrays[index][: spec.n_trainable], arrays[index][spec.n_trainable :]
            hidden, _ = spec.forward(params, state, hidden, ctx, index)
        if stop == len(plan):
            features = hidden
        return features.reshape(features.shape[0], -1), hidden

    return jax.jit(jax.vmap(one_model, in_axes=(0, None)))


def class_probabilities(arch: Architecture, outputs: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The head's outputs as class probabilities `(M, N, Z)` when it gives them (softmax, or
    one sigmoid unit read as p(class 1)); else None and why LEEP and NCE do not apply."""
    head = arch.head
    if head.activation == "softmax" or (head.activation == "sigmoid" and head.units == 1):
        return outputs, ""
    return None, (f"the source head ({head.describe()}) gives no class probabilities; LEEP and NCE need a softmax or "
                  "one-sigmoid output layer")


def score_source_models(arch: Architecture, weights: dict[int, Weights], x: np.ndarray, target_kind: str,
                        labels: np.ndarray, layer: int | None = None) -> list[ScoreRow]:
    """Every score of every source model (by source index) on the target's training rows
    `x` with `labels` (class indices, or regression targets `(N, T)` for a regression
    target). Scores that cannot apply get a row with no value and the reason."""
    chosen = feature_layer(arch, layer)
    indices = sorted(weights)
    started = time.perf_counter()
    features, outputs = forward_source_models(arch, [weights[i] for i in indices], x, chosen)
    forward_seconds = (time.perf_counter() - started) / len(indices)
    probabilities, no_probabilities = class_probabilities(arch, outputs)
    rows = []
    for position, index in enumerate(indices):
        for name in scores.SCORES:
            reason = _not_applicable(name, target_kind, no_probabilities)
            if reason:
                rows.append(ScoreRow(index, name, None, chosen, reason))
                continue
            reads = probabilities[position] if name in scores.FROM_PROBABILITIES else features[position]
            rows.append(_one_score(name, index, reads, labels, target_kind, chosen, forward_seconds))
    return rows


def _not_applicable(name: str, target_kind: str, no_probabilities: str) -> str:
    if target_kind == "regression" and name not in scores.REGRESSION_SCORES:
        return "the target is a regression task; of these scores only LogME scores regression targets"
    if name in scores.FROM_PROBABILITIES and no_probabilities:
        return no_probabilities
    return ""


def _one_score(name: str, index: int, reads: np.ndarray, labels: np.ndarray, target_kind: str, layer: int,
               forward_seconds: float) -> ScoreRow:
    started = time.perf_counter()
    try:
        value = scores.score(name, reads, labels, regression=target_kind == "regression")
    except ScoreInputError as error:
        return ScoreRow(index, name, None, layer, str(error))
    seconds = time.perf_counter() - started + (forward_seconds / len(scores.SCORES))
    return ScoreRow(index, name, float(value), layer, "", seconds)


def score_on_task(arch: Architecture, weights: dict[int, Weights], task, layer: int | None) -> list[ScoreRow]:
    """Source models of one architecture (by index) scored on `task`'s training rows. Models
    that cannot read the task's rows (another input shape) get rows that say so."""
    chosen = feature_layer(arch, layer)
    if arch.input_shape != task.input_shape:
        note = (f"the source model reads rows of shape {arch.input_shape}, the target's have shape "
                f"{task.input_shape}: no score can read them")
        return [ScoreRow(index, name, None, chosen, note) for index in sorted(weights) for name in scores.SCORES]
    labels = task.y_train if task.kind == "regression" else task.labels_train
    return score_source_models(arch, weights, task.x_train, task.kind, labels, layer)


def score_model_files(task, paths: list, layer: int | None = None) -> pd.DataFrame:
    """Every score of each model file (read with `safe_mode`) on `task`'s training rows, one
    row per file and score (`file`, `source_index` = its position in `paths`); models of
    one architecture share one forward pass."""
    groups: dict[Architecture, dict[int, Weights]] = {}
    for position, path in enumerate(paths):
        model = load_model_file(path)
        arch = architecture_of(model, source=str(path))
        try:
            feature_layer(arch, layer)
        except ModelFileError as error:
            raise ModelFileError(f"{path}: {error}") from None
        groups.setdefault(arch, {})[position] = keras_weights(model)
    rows = [row for arch, weights in groups.items() for row in score_on_task(arch, weights, task, layer)]
    frame = pd.DataFrame([dataclasses.asdict(row) for row in rows],
                         columns=[field.name for field in dataclasses.fields(ScoreRow)])
    frame.insert(0, "file", [str(paths[index]) for index in frame["source_index"]])
    return frame.sort_values(["source_index"], kind="stable").reset_index(drop=True)


def wide_scores(long: pd.DataFrame) -> pd.DataFrame:
    """Scores one row per model (`file`, `layer`, one column per score, `notes`)."""
    wide = long.set_index(["source_index", "file", "layer", "score"])["value"].unstack("score")
    wide = wide.reindex(columns=list(scores.SCORES)).reset_index()
    wide.columns.name = None
    wide["notes"] = ["; ".join(notes_by_reason(long[long["source_index"] == index])) for index in wide["source_index"]]
    return wide.drop(columns="source_index")


def notes_by_reason(long: pd.DataFrame) -> list[str]:
    """Why scores have no value, one line per reason naming the scores it concerns."""
    found = long[long["note"] != ""]
    names = found.groupby("note", sort=False)["score"].agg(lambda column: ", ".join(dict.fromkeys(column)))
    return [f"{scored}: {note}" for note, scored in names.items()]
