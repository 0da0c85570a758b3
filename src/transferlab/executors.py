"""Executors: where shards are trained. The local one trains them in this process, in order;
the Ray one on the workers of a Ray cluster, handing each back as it finishes. Either way
the caller (the driver) alone writes the results database, one transaction per shard."""

from __future__ import annotations

import hashlib
import pickle
import threading
from collections.abc import Iterable, Iterator

from transferlab.errors import ClusterError
from transferlab.models import weights_sha256  # the hash the store records for a source model

RAY_MISSING = "Ray is not installed: pip install 'transferlab[ray]' (on the driver and on every worker)"


def executor_for(execution, ray_address: str | None = None):
    """The executor a study's `[execution]` settings (or `--ray ADDRESS`, which wins) ask for."""
    if ray_address is None and execution.executor == "local":
        return LocalExecutor()
    return RayExecutor(ray_address or execution.address, execution.cpus_per_shard)


class LocalExecutor:
    """Train shards one after another in this process (the engine itself uses every core)."""

    def __init__(self):
        self._preparing: threading.Thread | None = None
        self._prepared: set = set()

    def prepare(self, jobs: list) -> None:
        """Compile the programs `jobs` will run on a thread of its own while the caller trains
        other shards (the target runs' programs while the source models train); `map` waits
        for it before a shard of the same architecture and task. A failure is left for that
        shard, which meets it and says so."""
        def compile_all():
            for job in jobs:
                try:
                    job.prepare()
                except Exception:  # noqa: BLE001 - the real call raises it where it belongs
                    return

        self._prepared = {_program_key(job) for job in jobs}
        self._preparing = threading.Thread(target=compile_all, name="transferlab-compile", daemon=True)
        self._preparing.start()

    def map(self, jobs: Iterable) -> Iterator[tuple[object, object]]:
        for job in jobs:
            if self._preparing is not None and _program_key(job) in self._prepared:
                self._preparing.join()
                self._preparing, self._prepared = None, set()
            yield job, job.execute()


def _program_key(job) -> tuple:
    return job.arch, id(job.task)


class RayExecutor:
    """Train shards as Ray tasks and yield `(job, result)` in the order they finish.

    A job travels pickled as bytes with its SHA-256 and is unpickled only after the worker
    has configured JAX itself (one XLA device per core it may use, its own compile cache).
    A job's task arrays and each source model's weights (loaded and hash-checked from their
    files on the driver) go to the object store once, however many shards use them, and are
    checked against their SHA-256 on arrival. A worker that dies is retried by Ray
    (`max_retries`); its shard is written once, when it comes back. Leaving the loop early
    (Ctrl-C, an error) cancels what is still outstanding.
    """

    def __init__(self, address: str = "auto", cpus_per_shard: int = 1, max_retries: int = 3):
        self.address, self.cpus_per_shard, self.max_retries = address, cpus_per_shard, max_retries

    def map(self, jobs: Iterable) -> Iterator[tuple[object, object]]:
        ray = require_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except ConnectionError:
                raise ClusterError(
                    f"--ray {self.address}: no Ray cluster is running there; start one with `ray start --head` "
                    "(and `ray start --address HEAD:6379` on each worker), or run without --ray to train "
                    "here") from None
        remote = ray.remote(_train_shard).options(num_cpus=self.cpus_per_shard, max_retries=self.max_retries)
        shared: dict[int, object] = {}  # id of an array holder → its object-store reference, put once

        def put(value):
            if id(value) not in shared:
                shared[id(value)] = (value, ray.put(value))  # keep `value` alive: ids stay unique
            return shared[id(value)][1]

        pending = {}
        for job in jobs:
            task, weights = job.task, job.source_weights
            job.task, job.source_weights = None, {}
            payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
            job.task, job.source_weights = task, weights
            digest = hashlib.sha256(payload).hexdigest()
            sent = {index: (put(w), weights_sha256(w)) for index, w in weights.items()}
            reference = remote.remote(payload, digest, put(task), task.fingerprint(), sent)
            pending[reference] = job
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                yield job, ray.get(done[0])
        finally:
            for reference in pending:
                ray.cancel(reference, force=True)




def require_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError(RAY_MISSING) from None
    return ray


def _train_shard(payload: bytes, digest: str, task, task_fingerprint: str, weights: dict):
    """On a Ray worker: check what arrived (the job's bytes, the task's arrays and each
    source model's weights against the SHA-256 the driver sent), configure JAX, train."""
    from transferlab._backend import configure

    configure()  # before the job's modules import JAX
    import ray

    _check("the shard", hashlib.sha256(payload).hexdigest(), digest)
    _check("the task's arrays", task.fingerprint(), task_fingerprint)
    job = pickle.loads(payload)
    job.task = task
    job.source_weights = {}
    for index, (reference, expected) in weights.items():
        job.source_weights[index] = ray.get(reference)
        _check(f"source model {index}", weights_sha256(job.source_weights[index]), expected)
    return job.execute()


def _check(what: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ValueError(f"{what} arrived damaged on a Ray worker (SHA-256 {actual[:12]}, sent {expected[:12]})")
