"""Benchmark: convolutional networks in the engine against the obvious JAX trainer
(bench/cnn_peer.py: `jax.vmap` + `jit` + `lax.scan`, the same models and curves) and
against Keras' own `model.fit` loop.

Rows: the digits CNN of examples/digits_cnn.toml on its source task (digits 0–4 as 8×8×1
images), and a 32×32×3 CNN (two conv blocks and a dense head) on generated coloured
shapes. Plain SGD (learning rate 0.01, batch 32) for every contender. Each contender runs
in its own child process with the persistent compile cache off: compile time is the
program's own compilation (`engine.prepare_program`, the peer's `lower().compile()`), the
training time excludes it; peak memory is the child's. Keras is timed on a few models and
scaled (it is linear in the number of models). The peer's loss curve of model 0 is
compared with the engine's (same initial weights, same row orders).

    python bench/cnn_speed.py [--rows digits 32x32] [--keras-models 2]
    python bench/cnn_speed.py --compile-examples   # each image example's programs, compiled

`--compile-examples` compiles (cache off) the training program of every architecture
each image example trains (its source model and each strategy's target model, 64 models),
and prints the slowest per example: the issue's ≤ 20 s goal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = {
    "digits": dict(title="digits CNN (examples/digits_cnn.toml), 8×8×1", models=240, epochs=30),
    "32x32": dict(title="32×32×3 CNN, two conv blocks", models=64, epochs=3),
}
BIG_LAYERS = [
    {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "max_pooling2d", "pool_size": 2},
    {"type": "conv2d", "filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "max_pooling2d", "pool_size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 32, "activation": "relu"},
]


def _setup(row: str, n_models: int):
    import numpy as np

    from transferlab import layers, models, tasks
    from transferlab.api import load_study
    from transferlab.plan import plan_of

    if row == "digits":
        direction = plan_of(load_study(ROOT / "examples" / "digits_cnn.toml")).directions[0]
        task, arch = direction.source_task, direction.source_arch
    else:
        params = {"seed": 1, "n_samples": 600, "n_train": 400, "image_size": 32, "n_classes": 4, "channels": 3,
                  "filled": False, "thickness": 2.0, "noise": 0.1, "size_min": 0.4, "size_max": 0.8, "jitter": 0.1}
        task = tasks.generate("shapes", params, "shapes 32×32×3", standardize=True)
        specs = tuple(layers.from_dict(entry) for entry in BIG_LAYERS) + (layers.Dense(4, "softmax"),)
        arch = models.Architecture(task.inputs, specs)
    weights = [models.fresh_weights(arch, np.random.default_rng(seed)) for seed in range(n_models)]
    return task, arch, weights


def _stacked(weights):
    import numpy as np

    return [tuple(np.stack(arrays) for arrays in zip(*layer)) for layer in zip(*weights)]


def run_engine(row: str, n_models: int, epochs: int) -> dict:
    import numpy as np

    from transferlab import engine

    task, arch, weights = _setup(row, n_models)
    args = (arch.layers, _stacked(weights), np.ones((n_models, epochs, len(arch.layers)), np.float32),
            np.arange(n_models), task.x_train, task.y_train, task.x_test, task.y_test,
            engine.TrainingSettings(epochs=epochs))
    started = time.perf_counter()
    engine.prepare_program(*args)
    compiled = time.perf_counter() - started
    started = time.perf_counter()
    result = engine.train_models(*args)
    seconds = time.perf_counter() - started
    return dict(seconds=seconds, compile=compiled, accuracy=float(result.final["test_accuracy"].mean()),
                loss0=result.curves["loss"][0].tolist())


def run_peer(row: str, n_models: int, epochs: int) -> dict:
    import jax
    import numpy as np

    import cnn_peer
    from transferlab.orders import shuffle_orders

    task, arch, weights = _setup(row, n_models)
    stacked = _stacked(weights)
    orders = shuffle_orders(range(n_models), epochs, len(task.x_train)).astype(np.int32)
    specs = tuple((spec.type, getattr(spec, "activation", ""), getattr(spec, "padding", "")) for spec in arch.layers)
    data = (task.x_train, task.y_train, task.x_test, task.y_test)
    started = time.perf_counter()
    devices = jax.local_devices()
    share = -(-n_models // len(devices))
    for device in devices:  # each device's program, compiled without running
        put = lambda array: jax.device_put(array, device)  # noqa: E731
        params = [tuple(put(a[:share]) for a in layer) for layer in stacked]
        cnn_peer.train.lower(params, put(orders[:share]), *map(put, data), specs).compile()
    compiled = time.perf_counter() - started
    started = time.perf_counter()
    outputs = cnn_peer.train_on_devices(stacked, orders, *data, specs)
    seconds = time.perf_counter() - started
    accuracy = np.concatenate([np.asarray(curves[3][:, -1]) for _, curves in outputs]).mean()
    return dict(seconds=seconds, compile=compiled, accuracy=float(accuracy),
                loss0=np.asarray(outputs[0][1][0][0]).tolist())


def run_keras(row: str, n_models: int, epochs: int, timed_models: int) -> dict:
    import keras

    from transferlab import models

    task, arch, weights = _setup(row, timed_models)
    started = time.perf_counter()
    accuracies = []
    for initial in weights:
        model = models.build_keras_model(arch, initial)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(task.x_train, task.y_train, epochs=epochs, batch_size=32, verbose=0,
                            validation_data=(task.x_test, task.y_test))
        accuracies.append(history.history["val_accuracy"][-1])
    seconds = (time.perf_counter() - started) * n_models / timed_models
    return dict(seconds=seconds, compile=float("nan"), accuracy=sum(accuracies) / len(accuracies), loss0=None)


def child(row: str, contender: str, keras_models: int) -> None:
    os.environ["TRANSFERLAB_CACHE_DIR"] = "off"
    import transferlab

    transferlab.configure()
    n_models, epochs = ROWS[row]["models"], ROWS[row]["epochs"]
    if contender == "engine":
        result = run_engine(row, n_models, epochs)
    elif contender == "peer":
        result = run_peer(row, n_models, epochs)
    else:
        result = run_keras(row, n_models, epochs, keras_models)
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


EXAMPLES = ("digits_cnn", "shapes_cnn", "mirrored_digits")


def compile_examples() -> None:
    """Compile time of each architecture of each image example (64 models, cache off)."""
    os.environ["TRANSFERLAB_CACHE_DIR"] = "off"
    import numpy as np

    import transferlab
    from transferlab import engine, models
    from transferlab.api import load_study
    from transferlab.plan import plan_of

    transferlab.configure()
    print("| example | architectures | slowest compile s | all compiles s |")
    print("| --- | --- | --- | --- |")
    for name in EXAMPLES:
        direction = plan_of(load_study(ROOT / "examples" / f"{name}.toml")).directions[0]
        archs = {direction.source_arch: direction.source_task}
        archs.update({recipe.arch: direction.target_task for recipe in direction.recipes.values()})
        times = []
        for arch, task in archs.items():
            weights = [models.fresh_weights(arch, np.random.default_rng(i)) for i in range(64)]
            started = time.perf_counter()
            engine.prepare_program(arch.layers, _stacked(weights), np.ones((64, 30, len(arch.layers)), np.float32),
                                   np.arange(64), task.x_train, task.y_train, task.x_test, task.y_test,
                                   engine.TrainingSettings(epochs=30, optimizer="adam"))
            times.append(time.perf_counter() - started)
        print(f"| {name} | {len(archs)} | {max(times):.1f} | {sum(times):.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    parser.add_argument("--keras-models", type=int, default=2)
    parser.add_argument("--compile-examples", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_examples:
        compile_examples()
        return
    if args.child:
        child(*args.child, args.keras_models)
        return
    print(f"Keras timed on {args.keras_models} models and scaled")
    print("| row | models × epochs | contender | train s | model-epochs/s | compile s | peak MiB | test acc | "
          "engine speed-up | max Δ loss curve |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.rows:
        results = {}
        for contender in ("engine", "peer", "keras"):
            command = [sys.executable, __file__, "--child", name, contender, "--keras-models", str(args.keras_models)]
            finished = subprocess.run(command, capture_output=True, text=True, check=True)
            results[contender] = json.loads(finished.stdout.strip().splitlines()[-1])
        row = ROWS[name]
        for contender, result in results.items():
            rate = row["models"] * row["epochs"] / result["seconds"]
            ratio = result["seconds"] / results["engine"]["seconds"]
            delta = ("" if result["loss0"] is None or contender == "engine" else
                     f"{max(abs(a - b) for a, b in zip(result['loss0'], results['engine']['loss0'])):.1e}")
            print(f"| {row['title']} | {row['models']} × {row['epochs']} | {contender} | {result['seconds']:.2f} | "
                  f"{rate:,.0f} | {result['compile']:.1f} | {result['peak_mib']:.0f} | {result['accuracy']:.3f} | "
                  f"{ratio:.2f}× | {delta} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
