"""The results writer: one thread that commits finished shards while the driver trains or
waits for the next ones.

The driver (the local engine, or the loop collecting a Ray cluster's shards) hands each
finished shard over and goes on at once; the writer commits shards in the order they were
handed over, on its own connection to the database. Shards that queue up while a commit is
under way go into the next transaction together, so a writer that falls behind catches up
with fewer commits; each shard is still whole or absent in the database, never half, so a
kill -9 at any moment loses only shards not yet committed (a rerun trains them again) and
duplicates nothing. The queue is bounded: a writer that cannot keep up slows the driver
instead of filling memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from transferlab.store import Store

Prepare = Callable[[], list[dict]]  # work done on the writer's thread before the commit (e.g.
# saving source models as `.keras` files), returning the shard's source-model records


class ShardWriter:
    """Commit finished shards on one thread; `with ShardWriter(path) as writer: writer.submit(…)`.

    `flush()` waits until everything handed over is committed and raises the writer's error
    (a full disk, a read-only database) in the driver's thread; leaving the `with` block
    does the same, so the caller's folder lock is never released while a write is under way."""

    def __init__(self, path: str | Path, depth: int = 8, batch: int = 32):
        self.path, self._batch = Path(path), batch
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._diverged = 0
        self._thread = threading.Thread(target=self._work, name="transferlab-writer", daemon=True)
        self._thread.start()

    def submit(self, run_ids: list[int], result, prepare: Prepare | None = None) -> None:
        """Hand over one finished shard (an engine `ShardResult` for `run_ids`); returns at once
        unless `depth` shards are already waiting."""
        item = (run_ids, result, prepare)
        while True:
            self._raise_error()
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def flush(self) -> int:
        """Wait until every shard handed over is committed; how many runs diverged so far."""
        self._queue.join()
        self._raise_error()
        return self._diverged

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()  # commits what was handed over, even on an error in the driver
        if exc_type is None:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        store = None
        try:
            store = Store(self.path)
        except BaseException as error:  # noqa: BLE001 - handed to the driver's thread
            self._error = error
        while True:
            items = self._take()
            stop = items[-1] is None
            shards = [item for item in items if item is not None]
            if shards and self._error is None:
                self._commit(store, shards)
            for _ in items:
                self._queue.task_done()
            if stop:
                break
        if store is not None:
            store.close()

    def _commit(self, store: Store, shards: list) -> None:
        """Each shard's own work, then one transaction for those whose work succeeded: a
        failure (a full disk while saving a model file) keeps the shards before it."""
        ready = []
        for ids, result, prepare in shards:
            try:
                ready.append((ids, result, prepare() if prepare else None))
            except BaseException as error:  # noqa: BLE001 - handed to the driver's thread
                self._error = error
                break
        try:
            if ready:
                self._diverged += store.finish_shards(ready)
        except BaseException as error:  # noqa: BLE001 - handed to the driver's thread
            self._error = self._error or error

    def _take(self) -> list:
        """The next shard, and every shard already waiting behind it (up to `batch`)."""
        items = [self._queue.get()]
        while items[-1] is not None and len(items) < self._batch:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items
