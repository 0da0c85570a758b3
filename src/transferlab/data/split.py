"""Splitting a task's rows into train and test.

- `first`: the first rows train and the rest test, the tutorial's rule (default for
  generated data): the first `n_train` rows when only `n_train` is given, else the first
  1 − `test_fraction` of them.
- `random` (default for files and bundled datasets): scikit-learn's `train_test_split`
  with the task's seed, stratified for classification; by `test_fraction` (default 0.25),
  or with `n_train` training rows when only `n_train` is given.
- `column`: the rows whose `split_column` holds the `train` value train, those holding the
  `test` value test (others are left out); or, from two files, `train_path` and `test_path`.

`n_train` smaller than the training part keeps the test part unchanged and trains on the
first `n_train` rows of the training part: in file order for `first`, in `random`'s
shuffled order, and after a seeded shuffle for a given (`column`) split: how much target
data does transfer need?
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from transferlab.errors import DataError
from transferlab.words import count

METHODS = ("first", "random", "column")
DEFAULT_TEST_FRACTION = 0.25  # scikit-learn's train_test_split default


@dataclass(frozen=True)
class Split:
    """Row positions (into the selected table) of the train and test parts, and in words."""

    train: np.ndarray
    test: np.ndarray
    description: str


def split_rows(
    n_rows: int,
    method: str,
    seed: int,
    n_train: int | None = None,
    test_fraction: float | None = None,
    labels: np.ndarray | None = None,
    parts: np.ndarray | None = None,
    class_names: list[str] | None = None,
    train_part: int | None = None,
) -> Split:
    """Train and test positions. `labels` (class codes, named by `class_names`) stratify a
    random split; `parts` (`"train"`/`"test"`/other per row) is the `column` method's split."""
    if method == "column":
        return _given(parts, seed, n_train)
    if train_part is not None:  # the split as if n_train were train_part, then n_train of its rows
        if test_fraction is not None:
            raise DataError("give train_part or test_fraction, not both (each sets the split)", "train_part")
        if n_train is not None and n_train > train_part:
            raise DataError(f"{n_train} is larger than train_part ({train_part})", "n_train")
        if train_part >= n_rows:
            raise DataError(f"{train_part} leaves no test rows: the task has {count(n_rows, 'row')} (after any selection); "
                            "lower it (a sweep over n_train sets it to the largest n_train)", "train_part")
        whole = split_rows(n_rows, method, seed, train_part, None, labels, parts, class_names)
        return _fewer(whole, n_train, shuffle_seed=None)
    if n_train is not None and test_fraction is None:
        if n_train >= n_rows:
            raise DataError(f"{n_train} leaves no test rows: the task has {count(n_rows, 'row')} (after any selection); lower n_train", "n_train")
        if method == "first":
            return Split(np.arange(n_train), np.arange(n_train, n_rows), f"first {count(n_train, 'row')} train, the rest test")
        train, test = _random(n_rows, labels, seed, class_names, train_size=n_train)
        return Split(train, test, _random_words(seed, labels, f"{n_train} training rows"))
    fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
    n_test = math.ceil(fraction * n_rows)
    if n_test >= n_rows or n_test < 1:
        raise DataError(f"{fraction} of {count(n_rows, 'row')} leaves {'no training' if n_test >= n_rows else 'no test'} rows",
                        "test_fraction")
    if method == "first":
        train, test = np.arange(n_rows - n_test), np.arange(n_rows - n_test, n_rows)
        words = f"first {count(n_rows - n_test, 'row')} train, last {n_test} test"
    else:
        train, test = _random(n_rows, labels, seed, class_names, test_size=fraction)
        words = _random_words(seed, labels, f"test fraction {fraction:g}")
    return _fewer(Split(train, test, words), n_train, shuffle_seed=None)


def _random(n_rows: int, labels, seed: int, class_names, **size) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if labels is not None:
        codes, counts = np.unique(labels, return_counts=True)
        if counts.min() < 2:
            code = int(codes[counts.argmin()])
            raise DataError(
                f"class {class_names[code] if class_names else code!r} has only {counts.min()} row; a stratified random split "
                "needs at least 2 per class: drop the class with classes = [...], or use split = \"first\"",
                "classes")
    try:
        train, test = train_test_split(np.arange(n_rows), random_state=seed, stratify=labels, **size)
    except ValueError as error:
        field = "n_train" if "train_size" in size else "test_fraction"
        raise DataError(f"the split of {count(n_rows, 'row')} fails ({' '.join(str(error).split())})", field) from None
    return train, test


def _random_words(seed: int, labels, size: str) -> str:
    return f"random (seed {seed}{', stratified' if labels is not None else ''}), {size}"


def _given(parts: np.ndarray | None, seed: int, n_train: int | None) -> Split:
    parts = np.asarray(parts)
    train, test = np.flatnonzero(parts == "train"), np.flatnonzero(parts == "test")
    for name, rows in (("train", train), ("test", test)):
        if len(rows) == 0:
            raise DataError(f"no row is in the {name} part; check the split column's values or the files", name)
    left_out = len(parts) - len(train) - len(test)
    words = f"given: {len(train)} train rows, {len(test)} test rows" + (f", {count(left_out, 'row')} left out" if left_out else "")
    return _fewer(Split(train, test, words), n_train, shuffle_seed=seed)


def _fewer(split: Split, n_train: int | None, shuffle_seed: int | None) -> Split:
    """The first `n_train` rows of the training part (shuffled first with `shuffle_seed`)."""
    if n_train is None:
        return split
    if n_train > len(split.train):
        raise DataError(f"{n_train} is larger than the training part ({count(len(split.train), 'row')}); lower n_train "
                        "or test_fraction", "n_train")
    train = split.train
    if shuffle_seed is not None and n_train < len(train):
        train = train[np.random.default_rng(shuffle_seed).permutation(len(train))]
    return Split(train[:n_train], split.test, f"{split.description}; trains on {n_train} of them")
