"""Can the driver keep up with N machines? A simulated executor hands finished shards of
tutorial runs (256 runs, 100 epochs, four curves and four final metrics) to the driver at
the rate N machines like this one would finish them, and the driver stores them as
`transferlab run` does; the lag is how long after a shard was finished it was committed.

    python bench/driver_lag.py [--mode writer|sync] [--machine-rate 380] [--json FILE]
    PYTHONPATH=../other-checkout/src python bench/driver_lag.py --mode sync --json before.json
    python bench/driver_lag.py --machines --plot bench/driver_lag.png --series "LABEL=FILE" ...

Modes: `writer` (the `ShardWriter` thread: the driver hands a shard over and waits for the
next) and `sync` (the driver commits each shard itself before it waits for the next, as
before issue 22; with PYTHONPATH pointing at an older checkout, that checkout's store).
`--machine-rate` is one machine's tutorial runs per second (38,000 model-epochs/s on this
machine's engine at 100 epochs, bench/RESULTS.md). Prints median and worst lag per N and
the throughput the driver sustained; `--plot` draws lag against N for the modes given as
`--json` files of earlier runs and this one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from store_throughput import SHARD, plan_runs, shard
from transferlab.store import SCHEMA_VERSION, Store

MACHINES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SECONDS_OF_WORK = 3.0  # simulated production time per N (at least MIN_SHARDS shards)
MIN_SHARDS, MAX_SHARDS = 6, 240


def simulated(count: int, rate: float, results: list, ready: list):
    """Yield `(ids, result)` for `count` shards, each no earlier than N machines would have
    finished it (`rate` runs per second in all); `ready[k]` is when shard k was finished."""
    started = time.perf_counter()
    for k in range(count):
        due = started + (k + 1) * SHARD / rate
        ready.append(due)
        while (wait := due - time.perf_counter()) > 0:
            time.sleep(min(wait, 0.01))
        yield list(range(k * SHARD + 1, (k + 1) * SHARD + 1)), results[k % len(results)]


def one_n(mode: str, machines: int, machine_rate: float, results: list, scratch: Path) -> dict:
    rate = machines * machine_rate
    count = int(min(MAX_SHARDS, max(MIN_SHARDS, SECONDS_OF_WORK * rate / SHARD)))
    path = scratch / f"{mode}-{machines}.sqlite"
    plan_runs(path, count * SHARD)
    ready, committed = [], {}
    original = Store.finish_shards if hasattr(Store, "finish_shards") else None

    def stamped(self, shards):  # the writer's batches: each shard's commit time
        diverged = original(self, shards)
        now = time.perf_counter()
        for ids, _, _ in shards:
            committed[ids[0]] = now
        return diverged

    if mode == "writer":
        from transferlab.writer import ShardWriter

        Store.finish_shards = stamped
        try:
            with ShardWriter(path) as writer:
                for ids, result in simulated(count, rate, results, ready):
                    writer.submit(ids, result)
        finally:
            Store.finish_shards = original
    else:
        with Store(path) as store:
            for ids, result in simulated(count, rate, results, ready):
                store.finish_shard(ids, result)
                committed[ids[0]] = time.perf_counter()
    lags = [committed[k * SHARD + 1] - ready[k] for k in range(count)]
    span = max(committed.values()) - (ready[0] - SHARD / rate)
    return {"machines": machines, "shards": count, "median_lag": statistics.median(lags), "worst_lag": max(lags),
            "offered_runs_per_s": rate, "sustained_runs_per_s": count * SHARD / span}


def plot(series: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for label, rows in series.items():
        machines = [row["machines"] for row in rows]
        line, = ax.plot(machines, [row["median_lag"] * 1e3 for row in rows], marker="o", label=f"{label}: median")
        ax.plot(machines, [row["worst_lag"] * 1e3 for row in rows], linestyle="--", color=line.get_color(),
                label=f"{label}: worst")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({row["machines"] for rows in series.values() for row in rows})
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.set_xlabel("machines finishing shards (simulated; each at this machine's engine speed)")
    ax.set_ylabel("lag: shard finished → committed (ms)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("writer", "sync"), default="writer")
    parser.add_argument("--machine-rate", type=float, default=380.0)
    parser.add_argument("--json", help="write this run's rows here")
    parser.add_argument("--plot", help="draw the lag plot here, from --json files given with --series")
    parser.add_argument("--series", nargs="*", default=[], metavar="LABEL=FILE")
    parser.add_argument("--machines", type=int, nargs="*", default=list(MACHINES))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = [shard(rng) for _ in range(4)]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for machines in args.machines:
            row = one_n(args.mode, machines, args.machine_rate, results, Path(scratch))
            rows.append(row)
            print(f"schema {SCHEMA_VERSION} {args.mode}: N={machines:>3}: {row['shards']} shards, offered "
                  f"{row['offered_runs_per_s']:,.0f} runs/s, sustained {row['sustained_runs_per_s']:,.0f} runs/s, "
                  f"lag median {row['median_lag'] * 1e3:.1f} ms, worst {row['worst_lag'] * 1e3:.1f} ms", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.plot:
        series = {label: json.loads(Path(file).read_text())
                  for label, file in (item.split("=", 1) for item in args.series)}
        if rows:
            series.setdefault(f"schema {SCHEMA_VERSION}, {args.mode}", rows)
        plot(series, Path(args.plot))


if __name__ == "__main__":
    main()
