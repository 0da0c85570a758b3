"""Programs shared across row counts: a run trained in a program built for more rows
(`RowPadding`) equals its run in a program of its own size, bit for bit, for every layer
kind, objective and optimizer; Keras agrees where a task has fewer rows than a batch; a
sweep over row counts runs one compiled program where its points alone would need one each."""

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import keras_fit_in_order
from transferlab import engine, models, objectives, study, tasks
from transferlab import layers as L
from transferlab.store import Store
from transferlab.sweep import sweep_from_dict
from transferlab.orders import shuffle_orders

EPOCHS = 5

CASES = {
    # architecture, objective, training settings, what else the case stresses
    "binary head, momentum, frozen layers, L2-SP": (
        models.mlp(2, (5, 5), 1, "sigmoid"), "binary_crossentropy", dict(momentum=0.9), dict(penalised=True)),
    "batch normalization and dropout, adam": (
        models.Architecture(2, (L.Dense(6, "relu"), L.BatchNormalization(), L.Dropout(0.3), L.Dense(5, "relu"),
                                L.Dense(3, "softmax"))), "categorical_crossentropy", dict(optimizer="adam"), {}),
    "wide layers run per model, two-target regression, adamw and clipping": (
        models.mlp(2, (40, 20), 2, "linear"), "mean_squared_error",
        dict(optimizer="adamw", learning_rate=0.001, weight_decay=0.01, clipnorm=1.0), {}),
}


def _task(loss: str) -> tasks.Task:
    if loss == "mean_squared_error":
        return tasks.regression(3, n_samples=300, n_targets=2, n_train=200)
    if loss == "binary_crossentropy":
        return tasks.blobs(3, n_samples=300, centers=2, n_train=200)
    return tasks.blobs(3, n_samples=300, n_train=200)


def _train(arch, loss, settings, extra, task, n_train, n_test, padding):
    n_models = 6
    rng = np.random.default_rng(5)
    initial = [models.fresh_weights(arch, rng) for _ in range(n_models)]
    stacked = [tuple(np.stack([w[layer][i] for w in initial]) for i in range(len(initial[0][layer])))
               for layer in range(len(arch.layers))]
    multipliers = np.ones((n_models, EPOCHS, len(arch.layers)), np.float32)
    multipliers[:2, :3, 0] = 0.0  # two models start with a frozen first layer, then train it
    kwargs = {}
    if extra.get("penalised"):
        kwargs["anchors"] = [a[0] if spec.penalised_array is not None else None for spec, a in zip(arch.layers, stacked)]
        kwargs["penalties"] = np.tile(np.float32([0.5, 0.0, 2.0]), (n_models, 1))
    config = engine.TrainingSettings(epochs=EPOCHS, **settings)
    return engine.train_models(
        arch.layers, stacked, multipliers, np.arange(n_models) + 40,
        task.x_train[:n_train], task.y_train[:n_train], task.x_test[:n_test], task.y_test[:n_test],
        config, loss=loss, padding=padding, **kwargs)


def _assert_identical(padded: engine.ShardResult, own: engine.ShardResult):
    for padded_arrays, own_arrays in zip(padded.weights, own.weights):
        for a, b in zip(padded_arrays, own_arrays):
            np.testing.assert_array_equal(a, b)
    assert padded.curves.keys() == own.curves.keys() and padded.final.keys() == own.final.keys()
    for name in own.curves:
        np.testing.assert_array_equal(padded.curves[name], own.curves[name], err_msg=name)
    for name in own.final:
        np.testing.assert_array_equal(padded.final[name], own.final[name], err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_a_padded_program_trains_every_run_as_its_own_size_does(case):
    """Rows below a batch, and whole batches with a partial last one; training and test
    splits padded past several groups of batches and evaluation blocks."""
    arch, loss, settings, extra = CASES[case]
    task = _task(loss)
    padding = engine.RowPadding(train=700, test=600)
    for n_train, n_test in ((10, 100), (200, 37)):
        own = _train(arch, loss, settings, extra, task, n_train, n_test, None)
        padded = _train(arch, loss, settings, extra, task, n_train, n_test, padding)
        assert np.isfinite(own.curves["loss"]).all()
        _assert_identical(padded, own)


def test_padding_below_the_task_is_refused():
    arch, loss, settings, extra = CASES["batch normalization and dropout, adam"]
    with pytest.raises(ValueError, match="padding to 100 training and 600 test rows is less than the task's 200 and 100"):
        _train(arch, loss, settings, extra, _task(loss), 200, 100, engine.RowPadding(100, 600))


def test_block_ordered_row_sums_ignore_appended_zero_rows():
    values = np.random.default_rng(0).normal(size=(512, 3)).astype(np.float32)
    padded = np.concatenate([values, np.zeros((1024, 3), np.float32)])
    mask = np.arange(len(padded)) < 500
    summed = np.asarray(objectives.row_sum(values, mask[:512]))
    np.testing.assert_array_equal(np.asarray(objectives.row_sum(padded, mask)), summed)
    np.testing.assert_allclose(summed, values[:500].astype(np.float64).sum(axis=0), rtol=0, atol=2e-5)


def test_fewer_rows_than_a_batch_equal_keras_fit_in_both_layouts():
    """10 rows: one partial batch of a padded group, for per-model layers and for model-last
    ones with batch statistics from the real rows alone."""
    task = tasks.blobs(6, n_samples=110, n_train=10)
    with_statistics = models.Architecture(2, (L.Dense(5, "relu"), L.BatchNormalization(), L.Dense(3, "softmax")))
    # (the narrow model-last layout's partial batches are compared with Keras in test_engine.py)
    for arch in (models.mlp(2, (40, 20), 3), with_statistics):
        initial = models.fresh_weights(arch, np.random.default_rng(2))
        stacked = [tuple(a[None] for a in layer) for layer in initial]
        config = engine.TrainingSettings(epochs=4, optimizer="adam")
        multipliers = np.ones((1, 4, len(arch.layers)), np.float32)
        result = engine.train_models(arch.layers, stacked, multipliers, [9],
                                     task.x_train, task.y_train, task.x_test, task.y_test, config)
        model = models.build_keras_model(arch, initial)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
        order = shuffle_orders([9], 4, 10)[0]
        history = keras_fit_in_order(model, task.x_train, task.y_train, order, task.x_test, task.y_test)
        for reference, trained in zip(models.keras_weights(model), result.weights):
            for expected, actual in zip(reference, trained):
                np.testing.assert_allclose(actual[0], expected, atol=1e-5, rtol=0)
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(result.curves[name][0], history[name], atol=1e-5, rtol=0)


SWEEP = {
    "name": "sizes", "seed": 2, "repeats": 2, "source_repeats": 2,
    "source": {"kind": "blobs", "seed": 1, "n_samples": 300, "n_train": 100},
    "target": {"kind": "blobs", "seed": 2, "n_samples": 500},
    "training": {"epochs": 3},
    "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}],
    "sweep": {"target.n_train": [20, 150, 300]},
}


def test_a_row_count_sweep_runs_one_program_and_each_point_equals_its_study_alone(tmp_path, monkeypatch):
    sweep = sweep_from_dict(SWEEP)
    plans = study.plan_sweep(sweep)
    assert [p.padding for _, p in plans][0]  # the smaller tasks are padded to the largest split
    monkeypatch.setattr(engine, "_PROGRAMS_RUN", set())
    study.run_sweep(sweep, tmp_path / "sweep", plans=plans)
    assert engine.compiled_programs() == 1  # sources and every point's targets: one program
    monkeypatch.setattr(engine, "_PROGRAMS_RUN", set())
    for point in sweep.points:
        study.run_study(point.config, tmp_path / f"alone-{point.index}")
    assert engine.compiled_programs() == 3  # alone, each point's target split has its own shapes
    with Store.in_folder(tmp_path / "sweep", readonly=True) as store:
        in_sweep = {p["index"]: (store.runs_frame(p["study_id"]), store.curves_frame(p["study_id"]))
                    for p in store.points()}
    for point in sweep.points:
        with Store.in_folder(tmp_path / f"alone-{point.index}", readonly=True) as store:
            study_id, _ = store.stored_plan()
            runs, curves = store.runs_frame(study_id), store.curves_frame(study_id)
        swept_runs, swept_curves = in_sweep[point.index]
        columns = [c for c in runs.columns if c not in ("id", "run_id", "study_id", "finished_at")]
        pd.testing.assert_frame_equal(runs[columns].reset_index(drop=True), swept_runs[columns].reset_index(drop=True))
        columns = [c for c in curves.columns if c not in ("id", "run_id", "study_id")]
        pd.testing.assert_frame_equal(curves[columns].reset_index(drop=True),
                                      swept_curves[columns].reset_index(drop=True))
