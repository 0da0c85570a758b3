"""Executors: where shards are trained. The local one trains them in this process, in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class LocalExecutor:
    """Train shards one after another in this process (the engine itself uses every core)."""

    def map(self, jobs: Iterable) -> Iterator[tuple[object, object]]:
        for job in jobs:
            yield job, job.execute()
