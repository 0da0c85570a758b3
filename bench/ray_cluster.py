"""The catalogue study (examples/catalogue.toml) on the local executor and on a local Ray
cluster of two nodes (a head and a worker, one CPU each: the same two cores), in one run:
wall time, each shard's time, Ray's overhead per shard and the SQLite write per shard (the
writer thread's, which overlaps the driver's wait for the next shard); then, on paper, how the measured times scale to N machines and where the driver's
writes would limit it.

    python bench/ray_cluster.py [--shard-size 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import transferlab

transferlab.configure()

from transferlab import study  # noqa: E402
try:
    from transferlab.api import load_study  # noqa: E402
except ImportError:  # a checkout from before the Python API was in one place (--before)
    from transferlab.config import load_study  # noqa: E402
from transferlab.executors import LocalExecutor, RayExecutor  # noqa: E402
from transferlab.store import Store  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "catalogue.toml"


class Timed:
    """An executor that records, per shard, the time from asking for it to having it back."""

    def __init__(self, inner):
        self.inner, self.shards = inner, []

    def map(self, jobs):
        jobs = list(jobs)
        started = time.perf_counter()
        last = started
        for job, result in self.inner.map(jobs):
            now = time.perf_counter()
            self.shards.append((len(job.runs), now - last))
            last = now
            yield job, result


def timed_writes():
    """Wrap the store's commit (on the writer's thread; `Store.finish_shard` in a checkout
    from before the writer) to time each shard's share of its transaction."""
    writes = []
    name = "finish_shards" if hasattr(Store, "finish_shards") else "finish_shard"
    original = getattr(Store, name)

    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            shards = len(args[0]) if name == "finish_shards" else 1
            writes.extend([(time.perf_counter() - started) / shards] * shards)

    setattr(Store, name, timed)
    return writes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shard-size", type=int, default=256)
    shard_size = parser.parse_args().shard_size
    plan = study.plan_study(load_study(EXAMPLE))
    writes = timed_writes()
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        study.run_study(plan, root / "warm", shard_size=shard_size)  # compile once, so both runs start warm
        writes.clear()
        local = Timed(LocalExecutor())
        started = time.perf_counter()
        study.run_study(plan, root / "local", executor=local, shard_size=shard_size)
        local_wall = time.perf_counter() - started
        local_writes = list(writes)

        import ray
        from ray.cluster_utils import Cluster

        started = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cluster_start = time.perf_counter() - started
        try:
            on_ray = Timed(RayExecutor(cluster.address))
            study.run_study(plan, root / "ray-cold", executor=on_ray, shard_size=shard_size)  # workers compile
            on_ray = Timed(RayExecutor(cluster.address))
            started = time.perf_counter()
            study.run_study(plan, root / "ray", executor=on_ray, shard_size=shard_size)
            ray_wall = time.perf_counter() - started
        finally:
            ray.shutdown()
            cluster.shutdown()

    runs = sum(n for n, _ in local.shards)
    per_local = statistics.median(t for _, t in local.shards)
    write = statistics.median(local_writes)
    # the cluster trains two shards at once, each worker on half the cores: a shard's time there is about twice
    # the wall per shard, and Ray's own share is what exceeds twice the local (all-core) shard time
    per_ray = 2 * ray_wall / len(on_ray.shards)
    overhead = max(0.0, per_ray - 2 * per_local)
    print(f"catalogue study: {runs:,} runs in {len(local.shards)} shards of up to {shard_size} (warm compile cache)")
    print(f"local executor (both cores for each shard): {local_wall:.1f} s wall, median shard {per_local:.2f} s")
    print(f"ray, 2 nodes × 1 CPU on the same 2 cores: {ray_wall:.1f} s wall (cluster start {cluster_start:.1f} s, "
          f"not counted); a shard takes about {per_ray:.2f} s there, of which Ray's own ≈ {overhead:.2f} s")
    print(f"SQLite write per shard (on the writer's thread, beside the driver): median {write * 1000:.0f} ms")
    machine = per_local + overhead
    limit = machine / write
    print(f"on paper: N machines like this one, each a shard at a time, deliver N / {machine:.2f} shards/s; the "
          f"driver writes {1 / write:.1f} shards/s, so its writes limit the cluster from about N = {limit:.1f} machines")

if __name__ == "__main__":
    main()
