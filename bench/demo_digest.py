"""Benchmark and fingerprint: `transferlab demo` from a cold process, with the compile cache
empty and then warm, and a SHA-256 of every number its database holds.

    python bench/demo_digest.py [--runs 1] [--before CHECKOUT]

Prints, per run: wall time, the process's peak memory (RSS) and the machine's load
average; then the digest of the study's numbers (every run's seed, status and diverged
epoch, every final metric and every per-epoch curve value, each source model's weights
hash and metrics), which must be the same before and after a change to the engine that
promises to change no bit (issue 13). `--before CHECKOUT` (another checkout of transferlab,
e.g. a `git worktree` of an earlier commit) runs its demo the same way first, for before
and after in one session; the digests are computed by this checkout either way.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def database_digest(folder: Path) -> str:
    """SHA-256 over every stored number of the demo's study (`Store.numbers_digest`)."""
    from transferlab.store import Store

    with Store.in_folder(folder, readonly=True) as store:
        return store.numbers_digest()


def run_demo(out: Path, cache: Path, checkout: str | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one `transferlab demo` process."""
    env = dict(os.environ, TRANSFERLAB_CACHE_DIR=str(cache))
    if checkout:
        env["PYTHONPATH"] = str(Path(checkout, "src").resolve())
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
    parser.add_argument("--before", help="another checkout whose demo to run first")
    args = parser.parse_args()
    checkouts = {"before": args.before, "this checkout": None} if args.before else {"this checkout": None}
    with tempfile.TemporaryDirectory() as scratch:
        for name, checkout in checkouts.items():
            digests = set()
            for attempt in range(args.runs):
                cache = Path(scratch, f"cache-{name}-{attempt}")
                for label in ("empty compile cache", "warm compile cache"):
                    out = Path(scratch, f"demo-{name}-{attempt}-{label.split()[0]}")
                    load = os.getloadavg()[0]
                    wall, peak = run_demo(out, cache, checkout)
                    print(f"{name}, demo, {label}: {wall:5.1f} s, peak RSS {peak:.2f} GiB, load average {load:.2f}")
                    digests.add(database_digest(out))
            for digest in sorted(digests):
                print(f"{name}: digest of the study's numbers {digest}")

if __name__ == "__main__":
    main()
