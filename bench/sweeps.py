"""The sweep and matrix examples end to end, each in a fresh process: wall time, peak
memory, runs trained and adopted, and engine programs built, first with an empty compile
cache, then with the cache the first run left.

    python bench/sweeps.py [EXAMPLE ...]    (default: sample_efficiency blobs_matrix)

With PYTHONPATH set (e.g. to another checkout's src/), the runs use that transferlab.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CHILD = """
import json, sys, time
started = time.perf_counter()
import jax.monitoring
counts = {}
def count(event, *args, **kwargs):
    counts[event] = counts.get(event, 0) + 1
jax.monitoring.register_event_listener(count)
jax.monitoring.register_event_duration_secs_listener(count)
import transferlab
transferlab.configure()
from transferlab import config, engine, reports, study
sweep = load_study(sys.argv[1])
outcome = study.run_sweep(sweep, sys.argv[2])
trained_at = time.perf_counter()
reports.build_report(sys.argv[2])
print(json.dumps({"points": len(sweep.points), "trained": outcome.trained_runs, "reused": outcome.reused_runs,
                  "programs": engine.compiled_programs(), "train_s": trained_at - started,
                  "xla_compiles": counts.get("/jax/core/compile/backend_compile_duration", 0),
                  "cache_hits": counts.get("/jax/compilation_cache/cache_hits", 0),
                  "wall_s": time.perf_counter() - started}))
"""


def run(example: str, cache: Path, folder: Path) -> dict:
    env = {"TRANSFERLAB_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # an A/B run against another checkout's src/
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", CHILD, str(EXAMPLES / f"{example}.toml"),
                             str(folder)], capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    numbers["peak_gib"] = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) / 2**20
    elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", result.stderr).group(1)
    minutes, seconds = elapsed.rsplit(":", 1)
    numbers["process_s"] = float(seconds) + 60 * float(minutes.split(":")[-1])
    return numbers


def main() -> None:
    examples = sys.argv[1:] or ["sample_efficiency", "blobs_matrix"]
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        for example in examples:
            cache = root / f"cache-{example}"
            for state in ("cold cache", "warm cache"):
                numbers = run(example, cache, root / f"{example}-{state.split()[0]}")
                print(f"{example} ({state}): {numbers['points']} points, {numbers['trained']:,} runs trained, "
                      f"{numbers['reused']:,} adopted, {numbers['programs']} engine program(s) traced, "
                      f"{numbers['xla_compiles']} XLA compilations, {numbers['cache_hits']} compile-cache hits, "
                      f"{numbers['process_s']:.1f} s wall for the process (training {numbers['train_s']:.1f} s "
                      f"after start-up), peak {numbers['peak_gib']:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
