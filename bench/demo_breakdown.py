"""Where `transferlab demo`'s wall time goes, warm compile cache (issue 22's ≤ 6 s goal).

    python bench/demo_breakdown.py [--runs 3] [--before CHECKOUT]

Each run is a fresh process (`python -m transferlab.cli demo --quiet` as a user runs it),
timed whole from outside; a second kind of process runs the same command in-process with
timers around its phases: start-up (interpreter and the CLI's imports), loading the study
file and making its data, planning, training (the engine's shards, and what the driver
waited for the writer), the writer's own busy time (saving source models, committing; it
overlaps training), the report, and the imports (`-X importtime`, top-level modules).
`--before CHECKOUT` times another checkout's demo the same way (whole process only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
began = time.perf_counter()
from transferlab import interrupts, shards, study, writer
from transferlab import commands
phases = {"start-up": time.perf_counter() - began}

def timed(owner, name, phase):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - started
    setattr(owner, name, wrapper)

timed(commands, "_load", "load study and data")
timed(study, "plan_study", "plan")
timed(study, "run_study", "train (all)")
timed(shards.ShardJob, "execute", "engine")
timed(writer.ShardWriter, "submit", "driver waits for the writer")
timed(writer.ShardWriter, "flush", "driver waits for the writer")
timed(study.Store, "finish_shards", "writer: commit (overlaps)")
timed(study, "_save_source_models", "writer: save .keras (overlaps)")
timed(commands, "_write_report", "report")
sys.argv = ["transferlab", "demo", "--out", sys.argv[1], "--quiet"]
try:
    commands.app()
except SystemExit:
    pass
phases["total in-process"] = time.perf_counter() - began
print(json.dumps(phases))
"""


def whole(out: Path, env: dict, checkout: str | None = None) -> float:
    env = dict(env, PYTHONPATH=str(Path(checkout, "src").resolve())) if checkout else env
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "transferlab.cli", "demo", "--out", str(out), "--quiet"], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def phases(out: Path, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(out)], env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def imports(out: Path, env: dict) -> list[tuple[str, float]]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "transferlab.cli", "demo", "--out", str(out),
                           "--quiet"], env=env, check=True, capture_output=True, text=True)
    top = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("  ") and cumulative.strip().isdigit():
                top.append((name.strip(), int(cumulative) / 1e6))
    return sorted(top, key=lambda item: -item[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, TRANSFERLAB_CACHE_DIR=str(Path(scratch, "cache")))
        whole(Path(scratch, "warm-up"), env)
        if args.before:
            whole(Path(scratch, "warm-up-before"), env, args.before)
        walls: dict[str, list[float]] = {"this checkout": [], "before": []}
        measured: list[dict] = []
        for attempt in range(args.runs):
            if args.before:
                walls["before"].append(whole(Path(scratch, f"before-{attempt}"), env, args.before))
            walls["this checkout"].append(whole(Path(scratch, f"whole-{attempt}"), env))
            measured.append(phases(Path(scratch, f"phases-{attempt}"), env))
        load = os.getloadavg()[0]
        for name, values in walls.items():
            if values:
                print(f"{name}: whole process {', '.join(f'{v:.2f}' for v in values)} s "
                      f"(median {statistics.median(values):.2f} s)")
        print(f"load average {load:.2f}\n\n| phase | seconds (median of {args.runs}) |\n| --- | --- |")
        for phase in measured[0]:
            print(f"| {phase} | {statistics.median(m.get(phase, 0.0) for m in measured):.2f} |")
        print("\n| top-level import | cumulative seconds |\n| --- | --- |")
        for name, seconds in imports(Path(scratch, "imports"), env)[:12]:
            print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
