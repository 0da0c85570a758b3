"""Benchmark: the engine's speed on the tutorial's model, side by side with its peers, and
how its cost grows with the number of models.

    python bench/engine_speed.py [--repeats 5] [--rounds 3] [--skip-scaling] [--skip-memory] [--before CHECKOUT]

Every contender runs in its own child process, one after the other, so each has its own
devices and reports its own peak memory; each prints the machine's load average when it
started. Times are the best of `--repeats` calls after a first call that compiles.

- The tutorial's study (4 strategies × 30 repeats, 100 epochs, [5, 5] ReLU, SGD 0.01,
  500 training rows): the engine on two XLA devices (one per core) and on one; the plain
  `jax.vmap` + `lax.scan` trainer (bench/vmap_peer.py, its models split over the two
  devices as the engine splits them); hand-written NumPy (bench/numpy_peer.py), run with
  OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset in its own process only (the machine notes
  set them for old OpenBLAS builds; they slow a current NumPy). Each peer's weights are
  compared with the engine's, trained on the same row orders.
- The same engine with every row order drawn before the timing starts: what the compiled
  program (and its transfers) costs alone, on two devices and on one.
- Scaling: 960, 3,840 and 7,680 models × 25 epochs, model-epochs per second.
- Memory: 3,840 models × 100 epochs, peak RSS of the process.

`--before CHECKOUT` (another checkout of transferlab, e.g. a `git worktree` of an earlier
commit) adds its engine's rows, run the same way in the same session, for before/after
ratios on a shared, noisy machine.
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

BENCH = os.path.dirname(os.path.abspath(__file__))
TUTORIAL_MODELS, TUTORIAL_EPOCHS = 120, 100


def _setup(n_models: int):
    import numpy as np

    from transferlab import models, tasks

    task = tasks.blobs(2)
    arch = models.mlp(2, (5, 5), 3)
    rng = np.random.default_rng(0)
    source = models.fresh_weights(arch, np.random.default_rng(1))
    weights = [source if index % 4 else models.fresh_weights(arch, rng) for index in range(n_models)]
    stacked = [tuple(np.stack(a) for a in zip(*layer)) for layer in zip(*weights)]
    return task, arch, stacked


def _best(once, repeats: int):
    first = once()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = once()
        times.append(time.perf_counter() - started)
    return min(times), first if result is None else result


def run_engine(n_models: int, epochs: int, repeats: int, given_orders: bool = False) -> dict:
    import numpy as np

    from transferlab import engine

    task, arch, stacked = _setup(n_models)
    activations = tuple(spec.activation for spec in arch.layers)
    multipliers = np.ones((n_models, epochs, len(arch.layers)), np.float32)
    seeds = np.arange(n_models)
    # drawn before the timing: what the compiled program and its transfers cost alone
    orders = shuffle_orders(seeds, epochs, len(task.x_train)) if given_orders else None

    def once():
        return engine.train_models(activations, stacked, multipliers, seeds, task.x_train, task.y_train,
                                   task.x_test, task.y_test, engine.TrainingSettings(epochs=epochs), orders=orders)

    seconds, result = _best(once, repeats)
    return dict(seconds=seconds, weights=[[k[:8].tolist(), b[:8].tolist()] for k, b in result.weights],
                accuracy=float(result.curves["val_accuracy"][:, -1].mean()))


def run_vmap_peer(n_models: int, epochs: int, repeats: int) -> dict:
    import numpy as np

    import vmap_peer

    task, arch, stacked = _setup(n_models)
    orders = shuffle_orders(np.arange(n_models), epochs, len(task.x_train)).astype(np.int32)
    activations = tuple(spec.activation for spec in arch.layers)

    def once():
        return vmap_peer.train_on_devices(stacked, orders, task, activations)

    seconds, outputs = _best(once, repeats)
    weights = [[np.asarray(k)[:8].tolist(), np.asarray(b)[:8].tolist()] for k, b in outputs[0][0]]
    accuracy = np.concatenate([np.asarray(curves[3][:, -1]) for _, curves in outputs]).mean()
    return dict(seconds=seconds, weights=weights, accuracy=float(accuracy))


def run_numpy_peer(n_models: int, epochs: int, repeats: int) -> dict:
    import numpy as np
    import threadpoolctl

    import numpy_peer

    task, arch, stacked = _setup(n_models)
    orders = shuffle_orders(np.arange(n_models), epochs, len(task.x_train)).astype(np.intp)

    def once():
        return numpy_peer.train(stacked, orders, task.x_train, task.y_train, task.x_test, task.y_test)

    seconds, (params, curves) = _best(once, repeats)
    blas = [(info.get("internal_api"), info.get("architecture")) for info in threadpoolctl.threadpool_info()]
    return dict(seconds=seconds, weights=[[k[:8].tolist(), b[:8].tolist()] for k, b in params],
                accuracy=float(curves[3][:, -1].mean()), blas=blas)


CONTENDERS = {"engine": run_engine, "program": lambda *args: run_engine(*args, given_orders=True),
              "vmap": run_vmap_peer, "numpy": run_numpy_peer}


def child(contender: str, n_models: int, epochs: int, repeats: int) -> None:
    os.environ.setdefault("TRANSFERLAB_CACHE_DIR", "off")
    sys.path.insert(0, BENCH)
    if contender != "numpy":
        import transferlab

        transferlab.configure()
    result = CONTENDERS[contender](n_models, epochs, repeats)
    result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))


def spawn(contender: str, n_models: int, epochs: int, repeats: int, **env) -> dict:
    environment = dict(os.environ, **{k: v for k, v in env.items() if v is not None})
    for key, value in env.items():
        if value is None:
            environment.pop(key, None)
    load = os.getloadavg()[0]
    output = subprocess.run(
        [sys.executable, __file__, "--child", contender, str(n_models), str(epochs), str(repeats)],
        env=environment, check=True, capture_output=True, text=True,
    ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["load"] = load
    return result


def _largest_difference(a: dict, b: dict) -> float:
    import numpy as np

    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for layer_a, layer_b in zip(a["weights"], b["weights"]) for x, y in zip(layer_a, layer_b))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the tutorial's contenders")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--before", help="another checkout whose engine to time beside this one")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        contender, n_models, epochs, repeats = args.child
        child(contender, int(n_models), int(epochs), int(repeats))
        return

    work = TUTORIAL_MODELS * TUTORIAL_EPOCHS
    contenders = {
        "engine, 2 devices": ("engine", {}),
        "engine, 1 device": ("engine", dict(TRANSFERLAB_CPU_DEVICES="1")),
        "engine with orders drawn beforehand, 2 devices": ("program", {}),
        "engine with orders drawn beforehand, 1 device": ("program", dict(TRANSFERLAB_CPU_DEVICES="1")),
    }
    earlier = {}
    if args.before:
        earlier = dict(PYTHONPATH=os.path.join(os.path.abspath(args.before), "src"))
        contenders["engine before, 2 devices"] = ("engine", earlier)
        contenders["engine before, 1 device"] = ("engine", dict(earlier, TRANSFERLAB_CPU_DEVICES="1"))
    contenders["jax.vmap peer, 2 devices"] = ("vmap", {})
    contenders["NumPy peer"] = ("numpy", dict(OPENBLAS_CORETYPE=None, OPENBLAS_L2_SIZE=None))
    # rounds interleave the contenders, so a busy spell on the shared machine hits them alike;
    # each row keeps its best round
    rows = {}
    for _ in range(args.rounds):
        for name, (contender, env) in contenders.items():
            row = spawn(contender, TUTORIAL_MODELS, TUTORIAL_EPOCHS, args.repeats, **env)
            if name not in rows or row["seconds"] < rows[name]["seconds"]:
                rows[name] = row
    print(f"The tutorial's study: {TUTORIAL_MODELS} models × {TUTORIAL_EPOCHS} epochs, "
          f"best of {args.repeats} calls in each of {args.rounds} interleaved rounds")
    print("| contender | seconds | model-epochs/s | engine's speed-up | peak RSS | load average |")
    print("| --- | --- | --- | --- | --- | --- |")
    engine = rows["engine, 2 devices"]
    for name, row in rows.items():
        print(f"| {name} | {row['seconds']:.3f} | {work / row['seconds']:,.0f} | "
              f"{row['seconds'] / engine['seconds']:.2f}× | {row['peak_gib']:.2f} GiB | {row['load']:.2f} |")
    for name in ("jax.vmap peer, 2 devices", "NumPy peer"):
        print(f"{name}: largest weight difference from the engine {_largest_difference(engine, rows[name]):.1e}, "
              f"mean final val_accuracy {rows[name]['accuracy']:.4f} (engine {engine['accuracy']:.4f})")
    print(f"NumPy's BLAS: {rows['NumPy peer']['blas']}")

    checkouts = {"": {}}
    if args.before:
        checkouts["before"] = earlier
    if not args.skip_scaling:
        print("\nScaling: models × 25 epochs, engine on 2 devices")
        print("| engine | models | seconds | model-epochs/s | vs 960 | peak RSS | load average |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for label, env in checkouts.items():
            base = None
            for n_models in (960, 3840, 7680):
                row = spawn("engine", n_models, 25, max(1, args.repeats // 2), **env)
                rate = n_models * 25 / row["seconds"]
                base = base or rate
                print(f"| {label or 'this'} | {n_models:,} | {row['seconds']:.2f} | {rate:,.0f} | {rate / base:.2f} | "
                      f"{row['peak_gib']:.2f} GiB | {row['load']:.2f} |")

    if not args.skip_memory:
        for label, env in checkouts.items():
            row = spawn("engine", 3840, 100, 1, **env)
            print(f"\n{label or 'this'} engine, 3,840 models × 100 epochs: {row['seconds']:.2f} s, peak RSS "
                  f"{row['peak_gib']:.2f} GiB (load average {row['load']:.2f})")

if __name__ == "__main__":
    main()
