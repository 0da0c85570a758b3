"""A 100,000-run study end to end: training, report, `results()` and Parquet export, each
timed in its own process with its peak memory, and the database's size per run-epoch.

    python bench/large_study.py [--repeats 3226] [--out DIR] [--skip-training]

The study is the tutorial's with 10 source models (examples/tutorial_sources.toml) at 3,226
repeats: 10 + 31 × 3,226 = 100,016 runs × 100 epochs. `--skip-training` reuses DIR.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

TUTORIAL_SOURCES = Path(__file__).resolve().parents[1] / "examples" / "tutorial_sources.toml"

RESULTS = """
import sys, time
import transferlab
started = time.perf_counter()
results = transferlab.results(sys.argv[1])
tables = {name: len(results[name]) for name in results}
print(f"results(): {time.perf_counter() - started:.1f} s, tables {tables}")
"""


def study_text(repeats: int) -> str:
    from transferlab.config import as_toml

    raw = tomllib.loads(TUTORIAL_SOURCES.read_text())
    return as_toml({**raw, "name": "large", "repeats": repeats, "source_repeats": 10})


def timed(command: list[str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-2000:])
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return time.perf_counter() - started, peak * 1024, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3226)
    parser.add_argument("--out", default="/tmp/transferlab-large")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    cli = [sys.executable, "-m", "transferlab.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_training:
            study = Path(tmp) / "study.toml"
            study.write_text(study_text(args.repeats))
            seconds, peak, _ = timed(cli + ["run", str(study), "--out", str(out), "--quiet"])
            print(f"run (train + report): {seconds:.1f} s, peak {peak / 2**30:.2f} GiB")
        seconds, peak, _ = timed(cli + ["report", str(out)])
        print(f"report alone: {seconds:.1f} s, peak {peak / 2**30:.2f} GiB")
        seconds, peak, shown = timed([sys.executable, "-c", RESULTS, str(out)])
        print(f"{shown.strip()} (process {seconds:.1f} s, peak {peak / 2**30:.2f} GiB)")
        parquet = Path(tmp) / "export"
        seconds, peak, _ = timed(cli + ["export", str(out), "--format", "parquet", "--out", str(parquet)])
        size = sum(p.stat().st_size for p in parquet.rglob("*") if p.is_file())
        print(f"export --format parquet: {seconds:.1f} s, peak {peak / 2**30:.2f} GiB, {size / 2**20:.0f} MiB written")
    import sqlite3

    database = out / "results.sqlite"
    db = sqlite3.connect(database)
    runs, epochs = db.execute("SELECT count(*), max(epochs) FROM curves").fetchone()
    db.close()
    print(f"database: {database.stat().st_size / 2**20:.0f} MiB for {runs:,} runs × {epochs} epochs = "
          f"{database.stat().st_size / (runs * epochs):.1f} bytes per run-epoch")


if __name__ == "__main__":
    main()
