"""What each optimizer costs the engine: the tutorial's MLP, 120 models × 100 epochs.

    python bench/optimizers.py

For SGD, SGD with momentum, Adam, AdamW and RMSprop: the first call (compiling, or loading
from the persistent cache) and the best of 5 later calls, in one process, and the ratio to
plain SGD. Then a second learning rate for Adam, to show it reuses the compiled program.
"""

from __future__ import annotations

import time

import numpy as np

from transferlab import engine, models, strategies, tasks

MODELS, EPOCHS = 120, 100
SETTINGS = {
    "sgd": dict(optimizer="sgd", learning_rate=0.01),
    "sgd momentum=0.9": dict(optimizer="sgd", learning_rate=0.01, momentum=0.9),
    "adam": dict(optimizer="adam", learning_rate=0.001),
    "adamw": dict(optimizer="adamw", learning_rate=0.001, weight_decay=0.004),
    "rmsprop": dict(optimizer="rmsprop", learning_rate=0.001),
}


def main() -> None:
    task = tasks.blobs(2)
    arch = models.mlp(2, (5, 5), 3)
    recipe = strategies.Standalone().recipe(arch, arch.head, EPOCHS)
    weights = [models.fresh_weights(arch, np.random.default_rng(seed)) for seed in range(MODELS)]
    stacked = [tuple(np.stack([w[layer][i] for w in weights]) for i in range(2)) for layer in range(len(arch.layers))]
    multipliers = np.stack([recipe.multipliers] * MODELS)

    def once(settings: dict) -> tuple[float, float]:
        config = engine.TrainingSettings(epochs=EPOCHS, **settings)
        started = time.perf_counter()
        result = engine.train_models(arch.layers, stacked, multipliers, list(range(MODELS)), task.x_train, task.y_train,
                                     task.x_test, task.y_test, config)
        return time.perf_counter() - started, float(result.final["test_accuracy"].mean())

    times = {}
    for name, settings in SETTINGS.items():
        first, _ = once(settings)
        best, accuracy = min(once(settings) for _ in range(5))
        times[name] = best
        print(f"{name:18s} first call {first:6.2f} s   best of 5 {best:.3f} s   "
              f"{MODELS * EPOCHS / best:8,.0f} model-epochs/s   ×{best / times['sgd']:.2f} of sgd   "
              f"mean test accuracy {accuracy:.3f}")
    programs = engine.compiled_programs()
    again, _ = once(dict(optimizer="adam", learning_rate=0.003, beta_1=0.8))
    print(f"adam at another learning rate and beta_1: {again:.3f} s, programs compiled: "
          f"{engine.compiled_programs() - programs}")


if __name__ == "__main__":
    main()
