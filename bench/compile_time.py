"""Benchmark: how long the engine takes to compile, across architectures and data sizes.

Compile time is bounded by running an epoch as a loop over small groups of batches
(unrolled within a group; one batch a step for wide layers) and by choosing, by size,
between the model-last layout (unrolled multiply-adds) and the per-model one (vmapped
matrix products). Each case trains a few models for 2 epochs with the
persistent compile cache off; compile time = first call − second call.

    python bench/compile_time.py
"""

from __future__ import annotations

import os
import time

os.environ["TRANSFERLAB_CACHE_DIR"] = "off"  # measure compilation, not the disk cache

import numpy as np

import transferlab
from transferlab import engine, models, tasks
from transferlab.layers import BatchNormalization, Dense, Dropout

transferlab.configure()

CASES = {
    "tutorial [5, 5], 500 rows": (2, (5, 5), 1000, {}, False),
    "tutorial + BatchNormalization + Dropout": (2, (5, 5), 1000, {}, True),
    "tutorial, Adam": (2, (5, 5), 1000, {"optimizer": "adam"}, False),
    "[5, 5], 100,000 rows": (2, (5, 5), 101_000, {}, False),
    "[64, 64], 64 features, Adam": (64, (64, 64), 1000, {"optimizer": "adam"}, False),
    "[256, 256], 512 features, 20,000 rows": (512, (256, 256), 21_000, {}, False),
    "[512, 512], 1,024 features, BN + dropout, Adam": (1024, (512, 512), 3000, {"optimizer": "adam"}, True),
}


def architecture(n_inputs, hidden, normalised):
    layers = []
    for width in hidden:
        layers.append(Dense(width, "relu", "he_uniform"))
        if normalised:
            layers += [BatchNormalization(), Dropout(0.1)]
    return models.Architecture(n_inputs, tuple(layers) + (Dense(3, "softmax"),))


def main() -> None:
    print(f"{'case':50} {'compile':>9} {'train':>8}  layout")
    for name, (features, hidden, rows, settings, normalised) in CASES.items():
        task = tasks.blobs(1, n_samples=rows, n_train=rows - 500, n_features=features)
        arch = architecture(features, hidden, normalised)
        n_models = 4
        weights = [models.fresh_weights(arch, np.random.default_rng(seed)) for seed in range(n_models)]
        stacked = [tuple(np.stack(a) for a in zip(*layer)) for layer in zip(*weights)]
        multipliers = np.ones((n_models, 2, len(arch.layers)), np.float32)
        config = engine.TrainingSettings(epochs=2, **settings)

        def once():
            started = time.perf_counter()
            engine.train_models(arch.layers, stacked, multipliers, range(n_models), task.x_train, task.y_train,
                                task.x_test, task.y_test, config)
            return time.perf_counter() - started

        first, second = once(), once()
        plan = engine.layer_plan(arch.layers)
        layout = "per model" if engine.per_model_layout(plan, features) else "models last"
        group = engine.batches_per_group(plan, features, 32)
        print(f"{name:50} {first - second:8.1f}s {second:7.2f}s  {layout}, {group} batch{'es' if group > 1 else ''} a loop step, "
              f"{engine.models_per_block(plan, features)} models a block")


if __name__ == "__main__":
    main()
