import copy
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# the suite's own compile cache, never the user's (subprocesses inherit it)
os.environ["TRANSFERLAB_CACHE_DIR"] = str(ROOT / ".test-cache" / "xla")

import transferlab

transferlab.configure()  # Keras on JAX, one XLA device per core, before any test imports keras


SMALL_STUDY = {  # a study small enough to train in a second: blobs with 200 rows, 4 epochs
    "name": "small",
    "seed": 3,
    "repeats": 3,
    "source_repeats": 2,
    "source": {"kind": "blobs", "seed": 1, "n_samples": 200, "n_train": 100},
    "target": {"kind": "blobs", "seed": 2, "n_samples": 200, "n_train": 100},
    "training": {"epochs": 4},
    "strategies": [
        {"name": "standalone"},
        {"name": "transfer", "freeze": 0},
        {"name": "transfer", "freeze": 2},
    ],
}


@pytest.fixture
def small_study_dict():
    """`SMALL_STUDY`, a copy each test may change."""
    return copy.deepcopy(SMALL_STUDY)


def keras_fit_in_order(model, x, y, orders, x_val, y_val, batch_size=32):
    """Train a real keras model one epoch per `fit` call on rows in the given order
    (`shuffle=False`), so the batch order is exactly `orders[epoch]`; returns the history."""
    history = {}
    for order in orders:
        result = model.fit(
            x[order], y[order], batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
            validation_data=(x_val, y_val),
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)
    return {key: np.array(values) for key, values in history.items()}
