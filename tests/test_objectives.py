"""The objective owns metric knowledge: its formulas against Keras and scikit-learn, and a given
source model file's recorded score computed by the objective its output layer trains with."""

import keras
import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, r2_score

from transferlab import datasets, models, objectives, study
from transferlab.loading import study_from_dict
from transferlab.store import Store

TASKS = {  # a described source task per objective, and the output layer a source model has for it
    "binary_crossentropy": ({"kind": "blobs", "seed": 4, "centers": 2, "cluster_std": 1.0, "n_samples": 300,
                             "n_train": 200}, 1, "sigmoid"),
    "categorical_crossentropy": ({"kind": "blobs", "seed": 4, "cluster_std": 1.0, "n_samples": 300, "n_train": 200}, 3, "softmax"),
    "mean_squared_error": ({"kind": "regression", "seed": 4, "n_samples": 300, "n_train": 200, "n_targets": 2,
                            "noise": 1.0}, 2, "linear"),
}
KERAS_METRICS = {"binary_crossentropy": ["accuracy"], "categorical_crossentropy": ["accuracy"],
                 "mean_squared_error": ["mae", keras.metrics.R2Score()]}


def _trained_source_file(tmp_path, loss: str):
    """A Keras model trained by `fit` on the described source task, saved as a `.keras` file."""
    spec, units, activation = TASKS[loss]
    task = datasets.task_of(study_from_dict(_study(spec, None)).source, "source")
    arch = models.mlp(task.x_train.shape[1], (8,), units, output_activation=activation)
    model = models.build_keras_model(arch, models.fresh_weights(arch, np.random.default_rng(0)))
    y_train = objectives.OBJECTIVES[loss].targets(task.y_train)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss, metrics=KERAS_METRICS[loss])
    model.fit(task.x_train, y_train, epochs=30, batch_size=32, verbose=0)
    path = tmp_path / f"{loss}.keras"
    models.save_model_file(model, path)
    return model, task, path


def _study(source: dict, model_file):
    target = dict(source, seed=5)
    return {"name": "given", "seed": 1, "repeats": 1, "source_repeats": 1,
            "source": dict(source, model_file=model_file) if model_file else source, "target": target,
            "training": {"epochs": 1}, "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 0}]}


@pytest.mark.parametrize("loss", sorted(TASKS))
def test_a_given_source_file_is_scored_as_keras_evaluates_it(tmp_path, loss):
    """The defect of issue 21: a one-sigmoid source file with a described source task was
    scored with softmax formulas (0.99 accuracy recorded as 0.55). Every objective's record
    now equals Keras' own `evaluate` of the file's model on the source task's splits."""
    model, task, path = _trained_source_file(tmp_path, loss)
    study.run_study(study_from_dict(_study(TASKS[loss][0], str(path))), tmp_path / "out")
    with Store.in_folder(tmp_path / "out", readonly=True) as store:
        (record,) = store.source_models(1)
    objective = objectives.OBJECTIVES[loss]
    for split in ("train", "test"):
        x, y = getattr(task, f"x_{split}"), objective.targets(getattr(task, f"y_{split}"))
        expected = model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
        for name in ("loss",) + objective.metrics:
            keras_name = {"r2": "r2_score"}.get(name, name)
            assert record[f"{split}_{name}"] == pytest.approx(float(expected[keras_name]), rel=1e-4, abs=1e-5), \
                (split, name)
    if loss != "mean_squared_error":
        assert record["test_accuracy"] > 0.9  # a good model is recorded as good


def test_evaluate_matches_scikit_learn_for_regression():
    rng = np.random.default_rng(3)
    outputs, y = rng.normal(size=(120, 3)), rng.normal(size=(120, 3))
    scores = objectives.OBJECTIVES["mean_squared_error"].evaluate(outputs, y)
    assert scores["loss"] == pytest.approx(np.mean((y - outputs) ** 2), rel=1e-5)
    assert scores["mae"] == pytest.approx(mean_absolute_error(y, outputs), rel=1e-5)
    assert scores["r2"] == pytest.approx(r2_score(y, outputs), rel=1e-4)


def test_a_mismatched_output_width_is_refused():
    with pytest.raises(ValueError, match="3 outputs, but the binary_crossentropy targets have 1"):
        objectives.OBJECTIVES["binary_crossentropy"].evaluate(np.zeros((4, 3)), np.eye(2)[[0, 1, 0, 1]])


def test_metric_columns_are_made_and_read_in_one_place():
    for name, metric in objectives.METRICS.items():
        for split in objectives.SPLITS:
            assert objectives.parse_column(objectives.column(split, name)) == (split, metric)
            assert objectives.parse_column(objectives.column(split, name, curve=True)) == (split, metric)
    assert objectives.display("test_r2") == "test R²" and objectives.display("mae") == "MAE"
    assert objectives.metric_of("val_loss").higher_is_better is False
    assert objectives.METRICS["r2"].bounds == (-np.inf, 1.0)
    with pytest.raises(KeyError, match="not a metric column"):
        objectives.parse_column("test_f1")
    for objective in objectives.OBJECTIVES.values():  # every objective's headline is a known metric
        assert objective.score.name == objective.headline and objective.score_column.startswith("test_")
