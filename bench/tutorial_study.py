"""Benchmark: the tutorial's study (4 strategies × 30 repeats × 100 epochs = 120 trainings)
through transferlab's engine, and the tutorial's own procedure (one keras `model.fit` per
model, Keras JAX backend), side by side in one process.

    python bench/tutorial_study.py [--keras-models N]

The `model.fit` loop is timed on N models (default 12) and scaled to 120, since it is
linear in the number of models; pass --keras-models 120 for the full loop.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import transferlab
from transferlab import engine, models, tasks

transferlab.configure()  # Keras on JAX, one XLA device per core, the compile cache

STRATEGY_FREEZE = [None, 0, 1, 2]  # standalone, transfer freeze=0/1/2
REPEATS, EPOCHS = 30, 100


def engine_inputs(source_weights, arch):
    rng = np.random.default_rng(0)
    weights, multipliers = [], []
    for freeze in STRATEGY_FREEZE:
        for _ in range(REPEATS):
            fresh = models.fresh_weights(arch, rng)
            weights.append(fresh if freeze is None else source_weights)
            m = np.ones((EPOCHS, len(arch.layers)), np.float32)
            m[:, : freeze or 0] = 0
            multipliers.append(m)
    stacked = [(np.stack([w[l][0] for w in weights]), np.stack([w[l][1] for w in weights]))
               for l in range(len(arch.layers))]
    return stacked, np.stack(multipliers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keras-models", type=int, default=12)
    args = parser.parse_args()
    import jax
    import keras

    task2 = tasks.blobs(2)
    arch = models.mlp(2, (5, 5), 3)
    source = models.fresh_weights(arch, np.random.default_rng(1))
    stacked, multipliers = engine_inputs(source, arch)
    n_models = multipliers.shape[0]
    activations = tuple(s.activation for s in arch.layers)
    seeds = list(range(n_models))

    def engine_once():
        started = time.perf_counter()
        result = engine.train_models(activations, stacked, multipliers, seeds, task2.x_train, task2.y_train,
                                     task2.x_test, task2.y_test)
        return time.perf_counter() - started, result

    first, _ = engine_once()  # includes compilation (or loading it from the disk cache)
    timings = [engine_once()[0] for _ in range(5)]
    engine_time = min(timings)
    _, result = engine_once()

    def keras_one(freeze):
        model = models.build_keras_model(arch, source if freeze is not None else None)
        for layer in model.layers[: freeze or 0]:
            layer.trainable = False
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
        model.fit(task2.x_train, task2.y_train, epochs=EPOCHS, verbose=0,
                  validation_data=(task2.x_test, task2.y_test))
        return model.evaluate(task2.x_test, task2.y_test, verbose=0)[1]

    keras_one(None)  # warm-up, as the engine's first call is excluded
    started = time.perf_counter()
    keras_accuracy = [keras_one(STRATEGY_FREEZE[i % 4]) for i in range(args.keras_models)]
    keras_time = (time.perf_counter() - started) * n_models / args.keras_models
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"devices: {len(jax.local_devices())} × {jax.local_devices()[0].platform}")
    print(f"engine, 120 trainings × 100 epochs: {engine_time:.3f} s (min of 5; first call incl. compile {first:.2f} s)")
    print(f"engine throughput: {n_models * EPOCHS / engine_time:,.0f} model-epochs/s")
    print(f"keras model.fit loop ({args.keras_models} timed, scaled to 120): {keras_time:.1f} s, "
          f"{n_models * EPOCHS / keras_time:,.0f} model-epochs/s")
    print(f"speed-up: {keras_time / engine_time:.0f}×")
    print(f"peak memory (RSS): {peak_mb:.0f} MB")
    print(f"mean test accuracy — engine standalone: {result.final['test_accuracy'][:30].mean():.3f}; "
          f"keras (mixed strategies): {np.mean(keras_accuracy):.3f}")


if __name__ == "__main__":
    main()
