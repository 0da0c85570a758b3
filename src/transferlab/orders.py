"""Row orders: which rows each model's batches take in every epoch, as Keras' `shuffle=True`.

Each model draws its orders from its own NumPy generator, seeded by its run's seed, so a
run's batches never depend on which other runs share its shard. The definition is
`shuffle_orders`: per model, `permuted` of an `(epochs, rows)` array of row numbers.

The engine takes them a chunk of epochs at a time from an `OrderStream`: drawn on worker
threads (NumPy releases the GIL while it shuffles) one chunk ahead of the program that
needs them, only for the epochs and models that train (padding epochs and filler models
get no draws), in the narrowest integer type, laid out models-last as the program reads
them. None of this changes a draw: the stream gives exactly `shuffle_orders`' numbers.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RowPadding:
    """The row counts a program is built for, when larger than a task's own: points of a
    sweep that differ only in how many rows they train or test on then share one compiled
    program. Padded rows are masked out of every batch, statistic and metric, and batches
    past the real rows are skipped, so a run equals its unpadded run bit for bit."""

    train: int
    test: int


def generator(seed: int) -> np.random.Generator:
    """A run's own row-order generator."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))


def shuffle_orders(seeds, epochs: int, n_rows: int) -> np.ndarray:
    """Each model's row order in every epoch, `(models, epochs, rows)`: the definition the
    engine's streams follow, drawn plainly (for reference runs and tests)."""
    rows = np.broadcast_to(np.arange(n_rows), (epochs, n_rows))
    return np.stack([generator(seed).permuted(rows, axis=-1) for seed in seeds]).astype(order_dtype(n_rows))


def order_dtype(width: int):
    """int16 where the rows allow (the program widens one epoch at a time)."""
    return np.int16 if width < 2**15 else np.int32


@functools.cache
def _draw_pool() -> ThreadPoolExecutor:
    """Threads that draw orders beside the main thread (created on first use)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return ThreadPoolExecutor(max_workers=max(2, cores or 1), thread_name_prefix="transferlab-orders")


class OrderStream:
    """Row orders for a block of models, handed out a chunk of epochs at a time, `(epochs,
    width, models)`, each chunk drawn on a worker thread while the previous one trains.

    - `seeds`: the real models' seeds; `columns` (≥ their number) pads the block with
      copies of the first model's orders (filler models whose results are dropped).
    - `width` (≥ `n_rows`) pads each epoch's order with row 0 for a program built for more
      rows (`engine.RowPadding`).
    - `chunks`: the chunk sizes in order, as `(epochs, drawn)`: a chunk of `epochs` epochs
      of which the first `drawn` train; the rest are zeros, skipped by the program.
    Drawing chunk by chunk gives the same orders as drawing all epochs at once."""

    def __init__(self, seeds, n_rows: int, chunks: list[tuple[int, int]], width: int | None = None,
                 columns: int | None = None):
        self.generators = [generator(seed) for seed in seeds]
        self._start(len(seeds), n_rows, chunks, width, columns)

    def _start(self, models: int, n_rows: int, chunks, width: int | None, columns: int | None) -> None:
        self.models, self.n_rows = models, n_rows
        self.width = n_rows if width is None else width
        self.columns = models if columns is None else columns
        self.dtype = order_dtype(self.width)
        self.chunks = list(chunks)
        self.epoch = 0  # epochs handed to the worker so far
        self.pending: Future | None = None
        self._draw_ahead()

    def _draw_ahead(self) -> None:
        if self.chunks:
            self.pending = _draw_pool().submit(self._draw, *self.chunks.pop(0))

    def next(self) -> np.ndarray:
        """The next chunk's orders; starts drawing the one after."""
        if self.pending is None:
            raise RuntimeError("every chunk of this stream has been handed out")
        orders = self.pending.result()
        self.pending = None
        self._draw_ahead()
        return orders

    def _model_orders(self, model: int, drawn: int) -> np.ndarray:
        """`(drawn, n_rows)`: the model's next epochs. Shuffling machine-word integers is
        NumPy's fast path (int16 is moved byte by byte); the permutation is the same for
        any integer type."""
        rows = np.broadcast_to(np.arange(self.n_rows, dtype=np.intp), (drawn, self.n_rows))
        return self.generators[model].permuted(rows, axis=-1)

    def _draw(self, epochs: int, drawn: int) -> np.ndarray:
        orders = np.zeros((epochs, self.width, self.columns), self.dtype)
        for model in range(self.models):
            orders[:drawn, : self.n_rows, model] = self._model_orders(model, drawn)
        orders[:, :, self.models :] = orders[:, :, :1]
        self.epoch += drawn
        return orders

    def close(self) -> None:
        """Stop drawing ahead (the engine is leaving early)."""
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None


class GivenOrders(OrderStream):
    """Explicit orders `(models, epochs, rows)` handed out like the seeds' (reference runs
    that replay a given batch order)."""

    def __init__(self, orders: np.ndarray, chunks: list[tuple[int, int]], width: int, columns: int):
        self.orders = orders
        self._start(len(orders), orders.shape[2], chunks, width, columns)

    def _model_orders(self, model: int, drawn: int) -> np.ndarray:
        return self.orders[model, self.epoch : self.epoch + drawn]
