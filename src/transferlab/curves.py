"""Per-epoch curves as arrays: one row per run, and the aggregates read from them with NumPy.

A run's curves are stored as one little-endian float32 array `(curves, epochs)` (its raw
bytes, beside the curve names and the epoch count), not one SQL row per run, split, metric
and epoch: the engine's own numbers, written in one `executemany` per shard and read back
with `np.frombuffer`. A value that is not finite is stored as NaN (the run diverged), read
back as missing. Why raw bytes and not `.npy` or fixed-width columns: a `.npy` header adds
128 bytes per run and a parse, and fixed-width columns fix the epoch count in the schema;
the names and shape beside the bytes say everything (bench/RESULTS.md, issue 22).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable

import numpy as np
import pandas as pd

from transferlab import objectives

DTYPE = np.dtype("<f4")


def encode(curves: dict[str, np.ndarray], index: int) -> tuple[str, int, bytes]:
    """Run `index`'s curves of a shard (`{History name: (models, epochs)}`) as a stored row:
    the names (JSON), the epoch count and the array's bytes."""
    names = curve_order(curves)  # a canonical order: the objectives' names, then any others
    values = np.stack([np.asarray(curves[name][index], DTYPE) for name in names])
    values[~np.isfinite(values)] = np.nan
    return json.dumps(names), values.shape[1], values.tobytes()


def encode_shard(curves: dict[str, np.ndarray]) -> tuple[str, int, list[bytes]]:
    """Every run's stored row of a shard at once: the names (JSON), the epoch count and each
    run's bytes (`encode` for each run, without a Python loop over curves)."""
    names = curve_order(curves)
    values = np.ascontiguousarray(np.stack([np.asarray(curves[name], DTYPE) for name in names], axis=1))
    values[~np.isfinite(values)] = np.nan  # (models, names, epochs)
    return json.dumps(names), values.shape[2], [run.tobytes() for run in values]


def decode(names_json: str, epochs: int, blob: bytes) -> tuple[list[str], np.ndarray]:
    """The names and the `(curves, epochs)` float32 array of a stored row."""
    names = json.loads(names_json)
    return names, np.frombuffer(blob, DTYPE).reshape(len(names), epochs)


def long_rows(run_ids: Iterable[int], rows: Iterable[tuple[str, int, bytes]]) -> pd.DataFrame:
    """`run_id, split, name, epoch, value` for every stored value, ordered as a table of rows
    would be (run, split, metric, epoch); a non-finite value is missing; `split` and `name`
    are categorical (a study's long table has tens of millions of rows). Built with NumPy a
    group of runs with the same curves at a time, never a Python object per value."""
    columns, vocabulary = long_columns(list(run_ids), list(rows))
    frame = pd.DataFrame({key: columns[key] for key in ("run_id", "epoch", "value")})
    for key in ("split", "name"):
        frame[key] = pd.Categorical.from_codes(columns[key], categories=vocabulary[key])
    return frame[["run_id", "split", "name", "epoch", "value"]]


def long_columns(run_ids: list[int], rows: list[tuple[str, int, bytes]]) -> tuple[dict, dict]:
    """The long table's columns as arrays, with `split` and `name` as codes into the
    vocabularies returned beside them."""
    vocabulary: dict[str, dict[str, int]] = {"split": {}, "name": {}}
    parts: list[dict[str, np.ndarray]] = []
    for ids, (names_json, epochs), values in _groups(run_ids, rows):
        order = _row_order(json.loads(names_json))
        codes = {key: np.asarray([vocabulary[key].setdefault(label, len(vocabulary[key])) for label in labels],
                                 np.int16)
                 for key, labels in (("split", [s for s, _, _ in order]), ("name", [m for _, m, _ in order]))}
        count, width = len(ids), len(order) * epochs
        parts.append({
            "run_id": np.repeat(np.asarray(ids, np.int64), width),
            **{key: np.tile(np.repeat(code, epochs), count) for key, code in codes.items()},
            "epoch": np.tile(np.arange(1, epochs + 1, dtype=np.int64), count * len(order)),
            "value": values[:, [i for _, _, i in order], :].astype(np.float64).reshape(-1),  # NaN: missing
        })
    empty = {"run_id": np.int64, "split": np.int16, "name": np.int16, "epoch": np.int64, "value": np.float64}
    columns = {key: (parts[0][key] if len(parts) == 1 else np.concatenate([part[key] for part in parts]))
               if parts else np.zeros(0, dtype) for key, dtype in empty.items()}
    return columns, {key: list(labels) for key, labels in vocabulary.items()}


def _groups(run_ids: list[int], rows: list[tuple[str, int, bytes]]):
    """Consecutive runs with the same curves: `(ids, (names, epochs), values (runs, curves, epochs))`."""
    start = 0
    for key, group in itertools.groupby(rows, key=lambda row: (row[0], row[1])):
        count = sum(1 for _ in group)
        blobs = b"".join(row[2] for row in rows[start : start + count])
        yield run_ids[start : start + count], key, np.frombuffer(blobs, DTYPE).reshape(count, -1, key[1])
        start += count


def _row_order(names: list[str]) -> list[tuple[str, str, int]]:
    """`(split, metric, index)` of a run's curves in the order rows of (split, metric) sort."""
    return sorted((*objectives.curve_key(name), i) for i, name in enumerate(names))


def digest_rows(key: tuple, names_json: str, epochs: int, blob: bytes) -> Iterable[tuple]:
    """The digest's rows of one run, exactly as one row per value gave them: `(*key, split,
    name, epoch, value)` in split, name, epoch order, a non-finite value as None."""
    names, values = decode(names_json, epochs, blob)
    for split, name, i in _row_order(names):
        for epoch in range(epochs):
            value = float(values[i, epoch])
            yield (*key, split, name, epoch + 1, value if np.isfinite(value) else None)


class MeanCurves:
    """Per group (direction, strategy): `n`, mean and sample std of every curve at every
    epoch over the runs added, in two passes (means, then squared deviations, as the
    two-pass SQL did), so memory is one group's sums, not the runs."""

    def __init__(self):
        self.sums: dict[tuple, np.ndarray] = {}
        self.counts: dict[tuple, np.ndarray] = {}
        self.squares: dict[tuple, np.ndarray] = {}
        self.names: dict[tuple, list[str]] = {}
        self.first: dict[tuple, int] = {}

    def add(self, group: tuple, run_id: int, names: list[str], values: np.ndarray) -> None:
        values = values.astype(np.float64)
        finite = np.isfinite(values)
        if group not in self.sums:
            self.sums[group], self.counts[group] = np.zeros(values.shape), np.zeros(values.shape)
            self.names[group], self.first[group] = names, run_id
        self.sums[group] += np.where(finite, values, 0.0)
        self.counts[group] += finite
        self.first[group] = min(self.first[group], run_id)

    def add_deviations(self, group: tuple, values: np.ndarray) -> None:
        values = values.astype(np.float64)
        mean = self.sums[group] / np.maximum(self.counts[group], 1)
        squared = np.where(np.isfinite(values), (values - mean) ** 2, 0.0)
        self.squares[group] = self.squares.get(group, np.zeros(values.shape)) + squared

    def frame(self) -> pd.DataFrame:
        """direction, strategy, epoch, n, then `{curve}_mean`, `{curve}_std` per curve."""
        columns = ["direction", "strategy", "epoch", "n"]
        if not self.sums:
            return pd.DataFrame(columns=columns)
        tables = []
        for group in sorted(self.sums, key=lambda g: self.first[g]):
            count = self.counts[group]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(count > 0, self.sums[group] / np.maximum(count, 1), np.nan)
                std = np.sqrt(np.where(count > 1, self.squares.get(group, 0.0) / (count - 1), np.nan))
            epochs = mean.shape[1]
            table = {"direction": group[0], "strategy": group[1], "epoch": np.arange(1, epochs + 1)}
            names = self.names[group]
            table["n"] = count[names.index("loss")].astype(int) if "loss" in names else 0
            for curve in curve_order(names):
                i = names.index(curve)
                table[f"{curve}_mean"], table[f"{curve}_std"] = mean[i], std[i]
            tables.append(pd.DataFrame(table))
        return pd.concat(tables, ignore_index=True)


def curve_order(names) -> list[str]:
    """History names in the usual order: the objectives' (train then test), then others."""
    known = [objectives.column(split, metric, curve=True) for split in objectives.SPLITS for metric in objectives.METRICS]
    return [name for name in known if name in names] + sorted(set(names) - set(known))


def learning_measures(run_ids: list[int], rows: list[tuple[str, int, bytes]], name: str,
                      threshold: float | None) -> pd.DataFrame:
    """Per run: the jumpstart (the test curve of metric `name` after epoch 1), the area under
    the curve (its mean over finite epochs) and the first epoch at or above `threshold` (NaN:
    never, or no threshold), for many runs at once."""
    parts = []
    for ids, (names_json, _), values in _groups(run_ids, rows):
        curve = values[:, json.loads(names_json).index(objectives.column("test", name, curve=True)), :]
        curve = curve.astype(np.float64)
        finite = np.isfinite(curve)
        counts = finite.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = np.where(finite, curve, 0.0).sum(axis=1) / counts
        reached = np.full(len(ids), np.nan)
        if threshold is not None:
            hits = finite & (curve >= threshold)
            reached = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.nan)
        parts.append(pd.DataFrame({"run_id": np.asarray(ids, np.int64),
                                   "jumpstart": np.where(finite[:, 0], curve[:, 0], np.nan),
                                   "auc": np.where(counts > 0, auc, np.nan), "reached": reached}))
    if not parts:
        return pd.DataFrame({"run_id": np.zeros(0, np.int64), **{key: np.zeros(0) for key in
                                                                  ("jumpstart", "auc", "reached")}})
    return pd.concat(parts, ignore_index=True)
