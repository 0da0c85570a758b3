"""How fast the driver commits finished shards: tutorial runs (100 epochs; train and test
loss and accuracy, per epoch and final) through `Store.finish_shard`, one transaction per
shard of 256 runs, into a fresh database.

    python bench/store_throughput.py [--runs 25600]
    PYTHONPATH=../other-checkout/src python bench/store_throughput.py   # the same with another store

Prints runs committed per second, the database's size per run-epoch, and the time to read
the mean curves and the learning-speed measures back.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.store import SCHEMA_VERSION, Store

SHARD = 256
EPOCHS = 100


@dataclass
class FakeShard:
    """What the engine hands the store for a shard (`ShardResult`'s fields)."""

    curves: dict
    final: dict
    diverged_epoch: np.ndarray


def shard(rng: np.random.Generator) -> FakeShard:
    curves = {name: rng.random((SHARD, EPOCHS), dtype=np.float32)
              for name in ("loss", "accuracy", "val_loss", "val_accuracy")}
    final = {name: rng.random(SHARD, dtype=np.float32)
             for name in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")}
    return FakeShard(curves, final, np.zeros(SHARD, np.int64))


def plan_runs(path: Path, n_runs: int) -> None:
    """A study row and `n_runs` planned target runs, written directly (the plan is not timed)."""
    with Store(path):
        pass  # the schema
    db = sqlite3.connect(path)
    db.execute("INSERT INTO studies (id, name, plan_json, plan_sha256, versions_json, created_at) "
               "VALUES (1, 'bench', '{}', 'x', '{}', 'now')")
    db.executemany(
        "INSERT INTO runs (id, study_id, direction, role, strategy, strategy_json, source_index, repeat, seed, "
        "architecture_json, layers_json, status) VALUES (?, 1, 'forward', 'target', ?, ?, -1, ?, ?, '{}', '[]', "
        "'planned')",
        [(i + 1, f"s{i % 4}", f'{{"name": "s{i % 4}"}}', i, i) for i in range(n_runs)])
    db.commit()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=25_600)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shards = [shard(rng) for _ in range(4)]  # reused: generating numbers is not the store's time
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch, "results.sqlite")
        plan_runs(path, args.runs)
        with Store(path) as store:
            started = time.perf_counter()
            for first in range(0, args.runs, SHARD):
                ids = list(range(first + 1, min(first + SHARD, args.runs) + 1))
                result = shards[(first // SHARD) % len(shards)]
                if len(ids) < SHARD:
                    continue
                store.finish_shard(ids, result)
            seconds = time.perf_counter() - started
            read_started = time.perf_counter()
            store.mean_curves(1)
            mean_seconds = time.perf_counter() - read_started
            read_started = time.perf_counter()
            store.learning_measures(1, "forward", "accuracy", 0.5)
            measure_seconds = time.perf_counter() - read_started
        size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob("results.sqlite-*"))
    print(f"schema {SCHEMA_VERSION}: {args.runs:,} runs committed in {seconds:.2f} s = {args.runs / seconds:,.0f} "
          f"runs/s (shards of {SHARD}); {size / (args.runs * EPOCHS):.1f} bytes per run-epoch; "
          f"mean curves read in {mean_seconds:.2f} s, learning-speed measures in {measure_seconds:.2f} s")


if __name__ == "__main__":
    main()
