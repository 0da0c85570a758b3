"""What transferability scores cost against training the same study's target runs (issue 24:
under 1% of the study).

    python bench/scores_cost.py [--studies tutorial_sources digits_cnn diabetes_by_sex]

Each study runs in a fresh folder (warm compile cache) with timers around the target
shards (`study._train_targets`) and the scoring (`study.score_sources`, which scores the
source models trained in memory). Then, on the finished folder, the forward pass and each
score are timed on their own per source model (best of 3, the forward pass's program
already compiled), so the table shows where the scoring time goes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import transferlab
from transferlab import scores, study, transferability
from transferlab.models import feature_layer
from transferlab.store import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _timed(function, spent: dict, key: str):
    """`function`, adding the seconds of each call to `spent[key]`."""
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - started

    return wrapper


def timed_run(name: str, folder: Path) -> dict:
    """The study's wall time, its target shards' time and its scoring time."""
    spent = {"targets": 0.0, "scores": 0.0}
    train_targets, score_sources = study._train_targets, study.score_sources
    study._train_targets = _timed(train_targets, spent, "targets")
    study.score_sources = _timed(score_sources, spent, "scores")
    try:
        started = time.perf_counter()
        study.run_study(transferlab.load_study(EXAMPLES / f"{name}.toml"), folder)
        spent["study"] = time.perf_counter() - started
    finally:
        study._train_targets, study.score_sources = train_targets, score_sources
    return spent


def per_score(folder: Path) -> dict:
    """Seconds per source model: the forward pass, and each score on its own (best of 3)."""
    with Store.in_folder(folder, readonly=True) as store:
        study_id, plan = store.stored_plan()
        direction = plan.directions[0]
        weights = study.load_source_weights(store, study_id, direction)
    task, arch = direction.target_task, direction.source_arch
    layer = feature_layer(arch, None)
    indices = sorted(weights)
    transferability.forward_source_models(arch, [weights[i] for i in indices], task.x_train, layer)  # compiled
    best = {}
    started = time.perf_counter()
    for _ in range(3):
        started = time.perf_counter()
        features, outputs = transferability.forward_source_models(arch, [weights[i] for i in indices], task.x_train,
                                                                  layer)
        best["forward"] = min(best.get("forward", np.inf), (time.perf_counter() - started) / len(indices))
    regression = task.kind == "regression"
    labels = task.y_train if regression else task.labels_train
    for name in scores.SCORES:
        if regression and name not in scores.REGRESSION_SCORES:
            continue
        if name in scores.FROM_PROBABILITIES and transferability.class_probabilities(arch, outputs)[0] is None:
            continue
        reads = outputs if name in scores.FROM_PROBABILITIES else features
        for _ in range(3):
            started = time.perf_counter()
            for position in range(len(indices)):
                scores.score(name, reads[position], labels, regression)
            best[name] = min(best.get(name, np.inf), (time.perf_counter() - started) / len(indices))
    best["models"] = len(indices)
    best["rows"], best["features"] = len(task.x_train), features.shape[-1]
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", nargs="+", default=["tutorial_sources", "digits_cnn", "diabetes_by_sex"])
    args = parser.parse_args()
    transferlab.configure()
    rows = []
    for name in args.studies:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch, name)
            spent = timed_run(name, folder)
            parts = per_score(folder)
        rows.append((name, spent, parts))
        share = 100 * spent["scores"] / spent["targets"]
        print(f"{name}: {parts['models']} source models, {parts['rows']} target rows, {parts['features']} features; "
              f"study {spent['study']:.1f} s, target runs {spent['targets']:.2f} s, scoring {spent['scores']:.3f} s "
              f"({share:.2f}% of the target runs)")
        ms = ", ".join(f"{key} {1000 * value:.2f}" for key, value in parts.items()
                       if key not in ("models", "rows", "features"))
        print(f"  per source model (ms): {ms}")


if __name__ == "__main__":
    main()
