"""Benchmark: what the strategy catalogue costs the engine.

Every strategy is a recipe of initial weights, multipliers and (for L2-SP) a penalty, so
most strategies should train exactly as fast as plain transfer; L2-SP adds a penalty
term, insert_layer a layer, BatchNormalization two layers of statistics and the
regression loss other metrics. This trains one shard of 120 models × 100 epochs of each
kind in one process and reports run time after compilation (min of 5) and the ratio to
plain transfer.

    python bench/catalogue.py
"""

from __future__ import annotations

import resource
import time

import numpy as np

import transferlab  # noqa: F401  (JAX backend, one XLA device per core)
from transferlab import engine, models, tasks
from transferlab.strategies import (
    L2SP,
    Finetune,
    GradualUnfreeze,
    InsertLayer,
    Transfer,
    TwoStage,
)
from transferlab.plan import RunSpec
from transferlab.shards import ShardJob

MODELS, EPOCHS = 120, 100


def case(strategy, task, source_arch, batch_norm=False):
    """One shard of MODELS runs of `strategy`, ready to execute."""
    source = models.fresh_weights(source_arch, np.random.default_rng(1))
    head = models.output_layer(task.n_outputs, "softmax" if task.kind == "classification" else "linear")
    recipe = strategy.recipe(source_arch, head, EPOCHS)
    runs = [RunSpec("target", strategy, 0, repeat, 1000 + repeat) for repeat in range(MODELS)]
    sgd = engine.TrainingSettings(epochs=EPOCHS)
    return ShardJob(recipe.arch, task, sgd, runs, {strategy.label: recipe}, {0: source})


def timed(job, repeats=5) -> tuple[float, float]:
    started = time.perf_counter()
    job.execute()
    first = time.perf_counter() - started
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        job.execute()
        best = min(best, time.perf_counter() - started)
    return first, best


def main() -> None:
    blobs = tasks.blobs(2)
    regression = tasks.regression(2, n_features=2)
    mlp = models.mlp(2, (5, 5), 3)
    cases = {
        "transfer freeze=1 (reference)": case(Transfer(freeze=1), blobs, mlp),
        "finetune lr×0.1 layer×0.5": case(Finetune(lr=0.1, layer_factor=0.5), blobs, mlp),
        "two_stage head=20 lr×0.1": case(TwoStage(head_epochs=20), blobs, mlp),
        "gradual_unfreeze every=10": case(GradualUnfreeze(every=10), blobs, mlp),
        "l2sp α=0.01 β=0.01 (penalty term)": case(L2SP(), blobs, mlp),
        "insert_layer after=1 5 relu (4 layers)": case(InsertLayer(after=1, units=5), blobs, mlp),
        "transfer freeze=1, BatchNormalization model": case(Transfer(freeze=1), blobs, models.mlp(2, (5, 5), 3, batch_norm=True)),
        "transfer freeze=1, regression (MSE, MAE, R²)": case(
            Transfer(freeze=1), regression, models.mlp(2, (5, 5), 1, output_activation="linear")
        ),
    }
    print(f"{MODELS} models × {EPOCHS} epochs per shard, 500 training rows, batch 32\n")
    print("| case | first call | after compilation | model-epochs/s | × reference |")
    print("| --- | --- | --- | --- | --- |")
    reference = None
    for name, job in cases.items():
        first, best = timed(job)
        reference = reference or best
        print(f"| {name} | {first:.2f} s | {best:.3f} s | {MODELS * EPOCHS / best:,.0f} | {best / reference:.2f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
