"""Benchmark: the engine against the obvious JAX trainer (bench/vmap_peer.py) and against
Keras' own `model.fit` loop, for Adam, Dropout and wider layers.

Each row trains MODELS models for EPOCHS epochs on blobs (500 training rows, 500 test
rows; 2 features for the tutorial's [5, 5], 64 for the wider ones). Every contender runs
in its own child process, one after the other, so each reports its own peak memory;
compile time = first call − second call, with the persistent compile cache off. The
Keras loop (one `fit` per model, the tutorial's procedure) is timed on a few models and
scaled, since it is linear in the number of models.

    python bench/wide_layers.py [--models 240] [--epochs 100] [--keras-models 2] [--rows NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from transferlab.orders import shuffle_orders

ROWS = {
    "[5, 5] SGD (tutorial)": dict(features=2, hidden=(5, 5), settings={}, dropout=0.0, peer=True),
    "[5, 5] Adam": dict(features=2, hidden=(5, 5), settings={"optimizer": "adam", "learning_rate": 0.001},
                        dropout=0.0, peer=False),
    "[5, 5] Dropout 0.2": dict(features=2, hidden=(5, 5), settings={}, dropout=0.2, peer=False),
    "[64, 64] SGD, 64 inputs": dict(features=64, hidden=(64, 64), settings={}, dropout=0.0, peer=True),
    "[256, 256] SGD, 64 inputs": dict(features=64, hidden=(256, 256), settings={}, dropout=0.0, peer=True),
}


def _setup(row: dict, n_models: int):
    import numpy as np

    from transferlab import models, tasks

    task = tasks.blobs(2, n_features=row["features"])
    arch = models.mlp(row["features"], row["hidden"], 3, dropout=row["dropout"])
    weights = [models.fresh_weights(arch, np.random.default_rng(seed)) for seed in range(n_models)]
    return task, arch, weights


def run_engine(row: dict, n_models: int, epochs: int) -> dict:
    import numpy as np

    from transferlab import engine

    task, arch, weights = _setup(row, n_models)
    stacked = [tuple(np.stack(a) for a in zip(*layer)) for layer in zip(*weights)]
    multipliers = np.ones((n_models, epochs, len(arch.layers)), np.float32)
    config = engine.TrainingSettings(epochs=epochs, **row["settings"])

    def once():
        started = time.perf_counter()
        result = engine.train_models(arch.layers, stacked, multipliers, range(n_models), task.x_train, task.y_train,
                                     task.x_test, task.y_test, config)
        return time.perf_counter() - started, float(result.final["test_accuracy"].mean())

    first, _ = once()
    seconds, accuracy = once()
    return dict(seconds=seconds, compile=first - seconds, accuracy=accuracy)


def run_peer(row: dict, n_models: int, epochs: int) -> dict:
    import numpy as np

    import vmap_peer

    task, arch, weights = _setup(row, n_models)
    stacked = [tuple(np.stack(a) for a in zip(*layer)) for layer in zip(*weights)]
    orders = shuffle_orders(range(n_models), epochs, len(task.x_train)).astype(np.int32)
    activations = tuple(spec.activation for spec in arch.layers)

    def once():
        started = time.perf_counter()
        outputs = vmap_peer.train_on_devices(stacked, orders, task, activations)
        accuracy = np.concatenate([np.asarray(curves[3][:, -1]) for _, curves in outputs]).mean()
        return time.perf_counter() - started, float(accuracy)

    first, _ = once()
    seconds, accuracy = once()
    return dict(seconds=seconds, compile=first - seconds, accuracy=accuracy)


def run_keras(row: dict, n_models: int, epochs: int, timed_models: int) -> dict:
    import keras

    from transferlab import models

    task, arch, weights = _setup(row, timed_models)
    settings = row["settings"]
    started = time.perf_counter()
    accuracies = []
    for initial in weights:
        model = models.build_keras_model(arch, initial)
        if settings.get("optimizer") == "adam":
            optimizer = keras.optimizers.Adam(settings["learning_rate"])
        else:
            optimizer = keras.optimizers.SGD(0.01)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(task.x_train, task.y_train, epochs=epochs, batch_size=32, verbose=0,
                            validation_data=(task.x_test, task.y_test))
        accuracies.append(history.history["val_accuracy"][-1])
    seconds = (time.perf_counter() - started) * n_models / timed_models
    return dict(seconds=seconds, compile=float("nan"), accuracy=sum(accuracies) / len(accuracies))


def child(name: str, contender: str, n_models: int, epochs: int, keras_models: int) -> None:
    os.environ["TRANSFERLAB_CACHE_DIR"] = "off"
    import transferlab

    transferlab.configure()
    row = ROWS[name]
    if contender == "engine":
        result = run_engine(row, n_models, epochs)
    elif contender == "peer":
        result = run_peer(row, n_models, epochs)
    else:
        result = run_keras(row, n_models, epochs, keras_models)
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--keras-models", type=int, default=2)
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.models, args.epochs, args.keras_models)
        return
    print(f"{args.models} models × {args.epochs} epochs each; Keras timed on {args.keras_models} models and scaled")
    print(f"{'row':28} {'contender':9} {'train s':>9} {'model-ep/s':>11} {'compile s':>10} {'peak MiB':>9} "
          f"{'test acc':>9} {'engine ×':>9}")
    for name in args.rows:
        contenders = ["engine", "peer", "keras"] if ROWS[name]["peer"] else ["engine", "keras"]
        results = {}
        for contender in contenders:
            command = [sys.executable, __file__, "--child", name, contender, "--models", str(args.models),
                       "--epochs", str(args.epochs), "--keras-models", str(args.keras_models)]
            finished = subprocess.run(command, capture_output=True, text=True, check=True)
            results[contender] = json.loads(finished.stdout.strip().splitlines()[-1])
        for contender, result in results.items():
            rate = args.models * args.epochs / result["seconds"]
            ratio = result["seconds"] / results["engine"]["seconds"]
            print(f"{name:28} {contender:9} {result['seconds']:9.2f} {rate:11,.0f} {result['compile']:10.1f} "
                  f"{result['peak_mib']:9.0f} {result['accuracy']:9.3f} {ratio:9.2f}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
