"""Peak memory of `transferlab report` on a 20,000-run study, against its training's peak.

    python bench/report_memory.py [--out DIR]

Trains the tutorial's study with 10 source models and 645 repeats (20,005 runs × 100
epochs) into DIR (default /tmp/transferlab-report-memory), then rebuilds its report, each
in its own process under `/usr/bin/time -v`, and prints both peaks. The report aggregates
the 2 million curve rows inside SQLite, so its memory does not grow with the runs.
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


def study_text() -> str:
    """The tutorial's study with 10 source models, at 645 repeats: 20,005 runs."""
    from transferlab.config import as_toml

    raw = tomllib.loads(TUTORIAL_SOURCES.read_text())
    return as_toml({**raw, "name": "report-memory", "repeats": 645, "source_repeats": 10})


def timed(command: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-2000:])
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return time.perf_counter() - started, peak * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/transferlab-report-memory")
    out = Path(parser.parse_args().out)
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study.toml"
        study.write_text(study_text())
        cli = [sys.executable, "-m", "transferlab.cli"]
        train_s, train_peak = timed(cli + ["run", str(study), "--out", str(out), "--quiet"])
        report_s, report_peak = timed(cli + ["report", str(out)])
    print(f"run (train + report), 20,005 runs × 100 epochs: {train_s:.1f} s, peak {train_peak / 2**30:.2f} GiB")
    print(f"report alone: {report_s:.1f} s, peak {report_peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
