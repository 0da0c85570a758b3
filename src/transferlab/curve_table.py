"""The `curves` table of `results()` and `export`: one row per run, curve and epoch, built
from the stored arrays with NumPy a batch of runs at a time.

A 100,000-run study's table has 40 million rows, so no Python object is made per row: the
text columns are codes into short category lists (pandas categoricals, Arrow dictionary
arrays), each row's run columns are looked up by position, and Parquet files are written
straight from the arrays, never through pandas.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from transferlab import curves as curve_arrays

COLUMNS = ("run_id", "split", "name", "epoch", "value", "direction", "role", "strategy", "source_index", "repeat")
RUN_TEXT = ("direction", "role", "strategy")


@dataclass
class CurveBatch:
    """Some runs' rows: every column an array, text columns as codes into `categories`, and
    the sweep point's constant columns in `extra`."""

    columns: dict[str, np.ndarray]
    categories: dict[str, list[str]]
    extra: dict

    @classmethod
    def of(cls, run_ids: list[int], rows: list, runs: pd.DataFrame, extra: dict) -> CurveBatch:
        """From stored curve rows and the study's (labelled) runs table."""
        columns, categories = curve_arrays.long_columns(run_ids, rows)
        runs = runs.sort_values("run_id")
        ids = columns["run_id"]
        starts = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1]) if len(ids) else np.zeros(0, int)
        lengths = np.diff(np.append(starts, len(ids)))  # each run's rows are together
        position = np.searchsorted(runs["run_id"].to_numpy(), ids[starts])  # each run's row in `runs`
        for column in RUN_TEXT:
            labels = pd.Categorical(runs[column])
            columns[column] = np.repeat(labels.codes[position], lengths)
            categories[column] = list(labels.categories)
        for column in ("source_index", "repeat"):
            columns[column] = np.repeat(runs[column].to_numpy()[position], lengths)
        return cls(columns, categories, extra)

    def frame(self) -> pd.DataFrame:
        """As a DataFrame on the batch's own arrays (`copy=False`: copying 40 million rows
        of every column would take seconds and gigabytes)."""
        rows = len(self.columns["run_id"])
        data = {name: pd.Categorical.from_codes(self.columns[name], categories=self.categories[name])
                if name in self.categories else self.columns[name] for name in COLUMNS}
        data.update({name: np.full(rows, value) if not isinstance(value, str) else
                     pd.Categorical.from_codes(np.zeros(rows, np.int8), categories=[value])
                     for name, value in self.extra.items()})
        return pd.DataFrame(data, copy=False)

    def arrow(self):
        import pyarrow as pa

        arrays = {name: pa.DictionaryArray.from_arrays(self.columns[name].astype(np.int32),
                                                       pa.array(self.categories[name], pa.string()))
                  if name in self.categories else pa.array(self.columns[name]) for name in COLUMNS}
        rows = len(self.columns["run_id"])
        for name, value in self.extra.items():
            arrays[name] = (pa.DictionaryArray.from_arrays(np.zeros(rows, np.int32), pa.array([value], pa.string()))
                            if isinstance(value, str) else pa.array(np.full(rows, value)))
        return pa.table(arrays)


def batches(store, study_id: int, runs: pd.DataFrame, extra: dict, batch_runs: int = 0) -> Iterator[CurveBatch]:
    """The study's rows a batch of `batch_runs` runs at a time (0: the store's default)."""
    for run_ids, rows in store.curve_batches(study_id, batch_runs):
        yield CurveBatch.of(run_ids, rows, runs, extra)


def write_parquet(parts: Iterator[CurveBatch], path) -> None:
    """Write the batches to one Parquet file as they come (memory: one batch)."""
    import pyarrow.parquet as pq

    writer = None
    try:
        for part in parts:
            table = part.arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, use_dictionary=[*part.categories, *(
                    name for name, value in part.extra.items() if isinstance(value, str))])
            elif table.schema != writer.schema:
                table = table.select(writer.schema.names).cast(writer.schema)
            writer.write_table(table)
        if writer is None:  # no runs: the columns alone
            pd.DataFrame(columns=list(COLUMNS)).to_parquet(path, index=False)
    finally:
        if writer is not None:
            writer.close()


def write_csv(parts: Iterator[CurveBatch], path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        header = True
        for part in parts:
            part.frame().to_csv(handle, index=False, header=header)
            header = False
        if header:  # no runs: the header alone
            pd.DataFrame(columns=list(COLUMNS)).to_csv(handle, index=False)
