"""What making a task from a file costs next to reading the file: pandas' `read_csv` alone
against the whole pipeline (read, query, classes, missing-value check, stratified random
split, standardisation, float32 arrays, SHA-256 fingerprint), and the same from Parquet,
on a 200,000-row, 20-feature table; and the peak memory of the process.

    python bench/data_pipeline.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.config import CsvTask, ParquetTask
from transferlab.datasets import task_of

FEATURES = 20


def table(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, FEATURES)).round(4), columns=[f"f{i}" for i in range(FEATURES)])
    frame["site"] = rng.choice(["a", "b"], rows)
    frame["label"] = rng.choice(["low", "mid", "high", "other"], rows)
    return frame


def best_of(action, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as folder:
        csv, parquet = Path(folder) / "t.csv", Path(folder) / "t.parquet"
        frame = table(rows)
        frame.to_csv(csv, index=False)
        frame.to_parquet(parquet, index=False)
        options = {"target": "label", "drop": ["site"], "query": "site == 'a'", "classes": ["low", "mid", "high"],
                   "n_train": 10_000, "test_fraction": 0.25}
        results = {
            "pandas read_csv alone": best_of(lambda: pd.read_csv(csv)),
            "task from CSV (whole pipeline)": best_of(
                lambda: task_of(CsvTask.model_validate({"kind": "csv", "path": str(csv), **options}), "target")),
            "pandas read_parquet alone": best_of(lambda: pd.read_parquet(parquet)),
            "task from Parquet (whole pipeline)": best_of(
                lambda: task_of(ParquetTask.model_validate({"kind": "parquet", "path": str(parquet), **options}), "target")),
        }
    print(f"{rows:,} rows × {FEATURES} features (+ 2 text columns); best of 3")
    for name, seconds in results.items():
        print(f"  {name:<36} {seconds:6.2f} s")
    print(f"  pipeline / read: CSV {results['task from CSV (whole pipeline)'] / results['pandas read_csv alone']:.2f}×, "
          f"Parquet {results['task from Parquet (whole pipeline)'] / results['pandas read_parquet alone']:.2f}×")
    print(f"  peak memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
