"""Benchmark and fingerprint: `transferlab demo` from a cold process, with the compile cache
empty and then warm, and a SHA-256 of every number its database holds.

    python bench/demo_digest.py [--runs 1]

Prints, per run: wall time, the process's peak memory (RSS) and the machine's load
average; then the digest of the study's numbers (every run's seed, status and diverged
epoch, every final metric and every per-epoch curve value, each source model's weights
hash and metrics), which must be the same before and after a change to the engine that
promises to change no bit (issue 13).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERIES = (
    "SELECT direction, role, strategy_json, source_index, repeat, seed, status, diverged_epoch "
    "FROM runs ORDER BY direction, role, strategy_json, source_index, repeat",
    "SELECT r.direction, r.role, r.strategy_json, r.source_index, r.repeat, f.split, f.name, f.value "
    "FROM final_metrics f JOIN runs r ON r.id = f.run_id "
    "ORDER BY r.direction, r.role, r.strategy_json, r.source_index, r.repeat, f.split, f.name",
    "SELECT r.direction, r.role, r.strategy_json, r.source_index, r.repeat, m.split, m.name, m.epoch, m.value "
    "FROM metrics m JOIN runs r ON r.id = m.run_id "
    "ORDER BY r.direction, r.role, r.strategy_json, r.source_index, r.repeat, m.split, m.name, m.epoch",
    "SELECT direction, source_index, weights_sha256, metrics_json FROM source_models "
    "ORDER BY direction, source_index",
)


def database_digest(database: Path) -> str:
    """SHA-256 over every stored number of a study (floats by their exact `repr`)."""
    digest = hashlib.sha256()
    with sqlite3.connect(database) as connection:
        for query in QUERIES:
            for row in connection.execute(query):
                digest.update(repr(row).encode())
    return digest.hexdigest()


def run_demo(out: Path, cache: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one `transferlab demo` process."""
    env = dict(os.environ, TRANSFERLAB_CACHE_DIR=str(cache))
    command = [sys.executable, "-m", "transferlab.cli", "demo", "--out", str(out), "--quiet"]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not all children's
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"transferlab demo failed with exit status {process.returncode}")
    return wall, usage.ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1, help="cold/warm pairs")
    args = parser.parse_args()
    digests = set()
    with tempfile.TemporaryDirectory() as scratch:
        for attempt in range(args.runs):
            cache = Path(scratch, f"cache{attempt}")
            for label in ("empty compile cache", "warm compile cache"):
                out = Path(scratch, f"demo-{attempt}-{label.split()[0]}")
                load = os.getloadavg()[0]
                wall, peak = run_demo(out, cache)
                print(f"demo, {label}: {wall:5.1f} s, peak RSS ≤ {peak:.2f} GiB, load average {load:.2f}")
                digests.add(database_digest(out / "results.sqlite"))
    for digest in sorted(digests):
        print(f"digest of the study's numbers: {digest}")


if __name__ == "__main__":
    main()
