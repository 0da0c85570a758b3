"""Transferability scores in studies: the vectorised forward pass against Keras, the stored
scores against the scores of the source files read by Keras, the report's τ_w and r
against SciPy on the stored values, recomputing after a resume, a new layer or a
migration, `transferlab score`, and scores that do not apply."""

from __future__ import annotations

import shutil
import sqlite3

import keras
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import transferlab
from conftest import SMALL_STUDY
from test_bad_input import _write, invoke
from transferlab import predictability, scores
from transferlab.errors import StoreError, StudyFileError
from transferlab.migrate import migrate_folder
from transferlab.models import Architecture, architecture_of, keras_weights
from transferlab.store import Store
from transferlab.transferability import forward_source_models

STUDY = dict(SMALL_STUDY, name="scored", seed=4, repeats=2, source_repeats=4)  # its compiled programs are shared


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A finished study with four source models (its folder, results and target task)."""
    folder = tmp_path_factory.mktemp("scored") / "out"
    results = transferlab.run(STUDY, folder)
    with Store.in_folder(folder, readonly=True) as store:
        _, plan = store.stored_plan()
        files = [record["file"] for record in store.source_models(1, "forward")]
    return folder, results, plan.directions[0].target_task, files


def _keras_features(path, x, layer_index):
    """The output of layer `layer_index` of the Keras model in `path`, read by Keras."""
    model = keras.saving.load_model(path, safe_mode=True)
    sub = keras.Model(model.inputs[0], model.layers[layer_index].output)  # called eagerly: nothing to compile
    return np.asarray(sub(x), np.float64), np.asarray(model(x), np.float64)


def test_stored_scores_are_the_scores_of_the_source_files_read_by_keras(scored):
    folder, results, task, files = scored
    stored = results.scores.set_index(["source_index", "score"])["value"]
    labels = task.labels_train
    for index, path in enumerate(files):
        features, probs = _keras_features(path, task.x_train, -2)  # the output layer's input
        expected = {"leep": scores.leep(probs, labels), "nce": scores.nce(probs, labels),
                    **{name: scores.FUNCTIONS[name](features, labels) for name in scores.SCORES[2:]}}
        for name, value in expected.items():
            assert stored[index, name] == pytest.approx(value, rel=1e-4, abs=1e-6), (index, name)
    assert set(results.scores["layer"]) == {2} and (results.scores["note"] == "").all()


def test_the_reports_tau_and_r_are_scipys_on_the_stored_values(scored):
    folder, results, _, _ = scored
    runs = results.runs[(results.runs["role"] == "target") & (results.runs["source_index"] >= 0)]
    means = runs.groupby(["strategy", "source_index"])["test_accuracy"].mean()
    wide = results.scores.pivot(index="source_index", columns="score", values="value")
    agreement = results.score_agreement.set_index(["strategy", "score"])
    assert len(agreement) == 2 * len(scores.SCORES)
    for strategy in ("transfer freeze=0", "transfer freeze=2"):
        measured = means.loc[strategy].loc[wide.index]
        for name in scores.SCORES:
            row = agreement.loc[(strategy, name)]
            assert row["tau_w"] == pytest.approx(scipy_stats.weightedtau(wide[name], measured).statistic, abs=1e-12)
            assert row["r"] == pytest.approx(scipy_stats.pearsonr(wide[name], measured).statistic, abs=1e-12)
            assert row["tau_low"] <= row["tau_w"] + 1e-12 and row["r_low"] <= row["r_high"]
            assert row["top_source"] == wide[name].idxmax() and row["best_source"] == measured.idxmax()
    report = (folder / "report.html").read_text()
    assert "Could it have been predicted?" in report and (folder / "scores.png").is_file()
    exported = pd.read_csv(folder / "score_agreement.csv")
    assert exported["tau_w"].to_numpy() == pytest.approx(results.score_agreement["tau_w"].to_numpy())


def test_top1_hit_counts_the_best_sources_interval():
    outcomes = pd.DataFrame({"strategy": "s", "source_index": [0, 1, 2, 3], "n": 5, "mean": [0.70, 0.80, 0.79, 0.60],
                             "ci_low": [0.65, 0.78, 0.70, 0.55], "ci_high": [0.75, 0.82, 0.88, 0.65]})
    picks = pd.DataFrame({"source_index": [0, 1, 2, 3], "score": "leep", "value": [0.1, 0.2, 0.9, 0.0]})
    row = predictability.agreement_table(picks, outcomes, higher_is_better=True).iloc[0]
    assert (row["top_source"], row["best_source"], row["hit"]) == (2, 1, True)  # 0.79 within [0.78, 0.82]
    picks["value"] = [0.9, 0.2, 0.1, 0.0]
    assert not predictability.agreement_table(picks, outcomes, True).iloc[0]["hit"]  # 0.70 is below 0.78
    flipped = predictability.agreement_table(picks, outcomes.assign(mean=-outcomes["mean"]), False).iloc[0]
    assert flipped["tau_w"] == pytest.approx(scipy_stats.weightedtau(picks["value"], outcomes["mean"]).statistic)


def test_a_new_layer_is_scored_on_the_next_run_and_equals_transferlab_score(scored, tmp_path):
    folder, _, task, files = scored
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    study_file = _write(tmp_path, dict(STUDY, scores={"layer": 1}))
    code, _, err = invoke("run", study_file, "--out", copy, "--quiet")
    assert code == 0, err
    again = transferlab.results(copy).scores
    assert set(again["layer"]) == {1}
    cli_csv = tmp_path / "scores.csv"
    code, out, err = invoke("score", "--target", 'kind = "blobs", seed = 2, n_samples = 200, n_train = 100',
                            *files, "--layer", "1", "--out", cli_csv)
    assert code == 0, err
    assert "4 models scored" in out and "note: target: 3 classes (train/test rows)" in out
    from_cli = pd.read_csv(cli_csv)
    stored = again.pivot(index="source_index", columns="score", values="value")
    for name in scores.SCORES:
        np.testing.assert_allclose(from_cli[name], stored[name], rtol=1e-12)


def test_score_reads_a_studys_trained_sources_and_refuses_when_there_are_none(scored, tmp_path):
    folder, results, _, files = scored
    study_file = _write(tmp_path, STUDY)
    code, _, err = invoke("score", study_file, "--folder", folder, "--out", tmp_path / "s.csv")
    assert code == 0, err
    written = pd.read_csv(tmp_path / "s.csv")
    stored = results.scores.pivot(index="source_index", columns="score", values="value")
    np.testing.assert_allclose(written["logme"], stored["logme"], rtol=1e-12)
    layer_file = _write(tmp_path, dict(STUDY, scores={"layer": 1}), name="layer.toml")
    code, _, err = invoke("score", layer_file, "--folder", folder, "--out", tmp_path / "s1.csv")
    assert code == 0, err
    assert set(pd.read_csv(tmp_path / "s1.csv")["layer"]) == {1}  # the study's [scores] layer
    assert set(transferlab.score_models(layer_file, files)["layer"]) == {1}  # in Python too
    code, _, err = invoke("score", study_file, "--out", tmp_path / "s.csv")
    assert code == 2 and "no source model to score: the study trains its source models" in err
    other = _write(tmp_path, dict(STUDY, seed=5), name="other.toml")  # same name, other settings
    code, _, err = invoke("score", other, "--folder", folder, "--out", tmp_path / "s.csv")
    assert code == 2 and "holds another study than 'scored'" in " ".join(err.split())
    code, _, err = invoke("score", "--target", 'kind = "blobs", seed =', tmp_path / "s.csv")
    assert code == 2 and "--target 'kind = \"blobs\", seed =': not a TOML table" in " ".join(err.split())
    code, _, err = invoke("score", "--target", 'kind = "blobs", seed = 2, standardize = "source"', tmp_path / "s.csv")
    assert code == 2 and 'target.standardize: "source" applies a source task\'s scaler' in " ".join(err.split())


def test_a_layer_the_source_model_lacks_is_refused_naming_the_field():
    with pytest.raises(StudyFileError, match=r"scores\.layer: layer 3 is not a hidden layer of the source model"):
        transferlab.load_study(dict(STUDY, scores={"layer": 3}))


def test_regression_source_and_target_say_which_scores_apply(tmp_path):
    rng = np.random.default_rng(0)
    regressor = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(1)])
    regressor.set_weights([rng.normal(size=w.shape).astype("float32") for w in regressor.get_weights()])
    path = tmp_path / "regressor.keras"
    regressor.save(path)
    classes = transferlab.score_models({"kind": "blobs", "seed": 2, "n_samples": 100, "n_train": 60}, [path])
    assert np.isnan(classes.loc[0, "leep"]) and np.isfinite(classes.loc[0, "logme"])
    assert "leep, nce: the source head (Dense(1, linear)) gives no class probabilities" in classes.loc[0, "notes"]
    values = transferlab.score_models({"kind": "regression", "seed": 2, "n_samples": 100, "n_train": 60,
                                       "n_features": 2}, [path])
    assert np.isfinite(values.loc[0, "logme"]) and values.loc[0, scores.SCORES].isna().sum() == 6
    assert "the target is a regression task" in values.loc[0, "notes"]


def test_the_forward_pass_equals_keras_on_a_cnn_with_normalisation(tmp_path):
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                              keras.layers.Dense(4, activation="tanh"), keras.layers.Dropout(0.3),
                              keras.layers.Dense(3, activation="softmax")])
    rng = np.random.default_rng(1)
    models = []
    for _ in range(3):
        model.set_weights([rng.normal(size=w.shape).astype("float32") if w.ndim > 1 else
                           rng.uniform(0.5, 1.5, size=w.shape).astype("float32") for w in model.get_weights()])
        models.append(keras_weights(model))
    arch = architecture_of(model)
    x = rng.normal(size=(20, 6, 6, 2)).astype("float32")
    for layer, keras_index in ((1, 3), (2, 5)):  # the conv block (to Flatten), the Dense block (to Dropout)
        features, outputs = forward_source_models(arch, models, x, layer)
        for index, weights in enumerate(models):
            model.set_weights([a for arrays in weights for a in arrays])
            sub = keras.Model(model.inputs[0], model.layers[keras_index].output)
            np.testing.assert_allclose(features[index], np.asarray(sub(x)).reshape(20, -1), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(outputs[index], np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert isinstance(arch, Architecture)


def test_a_schema_6_folder_migrates_and_gets_its_scores_on_the_next_run(scored, tmp_path):
    folder, results, _, _ = scored
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    with sqlite3.connect(old / "results.sqlite") as db:
        db.execute("DROP TABLE scores")
        db.execute("PRAGMA user_version = 6")
    with pytest.raises(StoreError, match="schema 6, this version uses 7\\); run `transferlab migrate"):
        transferlab.results(old)
    migration = migrate_folder(old)
    assert (migration.before, migration.after) == (6, 7)
    assert transferlab.results(old).scores.empty
    transferlab.report(old)
    assert "No transferability scores are stored" in (old / "report.html").read_text()
    study_file = _write(tmp_path, STUDY)
    code, out, err = invoke("run", study_file, "--out", old, "--quiet")
    assert code == 0, err
    pd.testing.assert_frame_equal(transferlab.results(old).scores.drop(columns="seconds"),
                                  results.scores.drop(columns="seconds"))


def test_a_matrix_ranks_source_tasks_per_target_as_scipy_does():
    rng = np.random.default_rng(2)
    tasks = ["a", "b", "c", "d", "e"]
    pairs = [(s, t) for s in tasks for t in tasks if s != t]
    summary = pd.DataFrame([{"source": s, "target": t, "strategy": name, "mean": rng.uniform(0.5, 0.9),
                             "ci_low": 0.0, "ci_high": 1.0} for s, t in pairs for name in ("standalone", "transfer")])
    long = pd.DataFrame([{"source": s, "target": t, "source_index": i, "score": name, "value": rng.normal()}
                         for s, t in pairs for i in range(2) for name in ("logme", "gbc")])
    ranking = predictability.ranking_table(long, summary, higher_is_better=True)
    assert set(ranking["strategy"]) == {"transfer"} and len(ranking) == 5 * 2
    for row in ranking.itertuples(index=False):
        on_target = long[(long["target"] == row.target) & (long["score"] == row.score)]
        x = on_target.groupby("source")["value"].mean()
        measured = summary[(summary["target"] == row.target) & (summary["strategy"] == "transfer")].set_index("source")
        y = measured.loc[x.index, "mean"]
        assert row.tau_w == pytest.approx(scipy_stats.weightedtau(x, y).statistic, abs=1e-12)
        assert (row.top_source, row.best_source) == (x.idxmax(), y.idxmax())
    summary_rows = predictability.ranking_summary(ranking).set_index("score")
    for name in ("logme", "gbc"):
        taus = ranking.loc[ranking["score"] == name, "tau_w"]
        assert summary_rows.loc[name, "mean_tau_w"] == pytest.approx(taus.mean())
        assert summary_rows.loc[name, "tau_low"] <= taus.mean() <= summary_rows.loc[name, "tau_high"]
        assert summary_rows.loc[name, "hits"] == ranking.loc[ranking["score"] == name, "hit"].sum()


def test_the_bootstraps_weighted_tau_is_scipys_on_ties_and_duplicates():
    rng = np.random.default_rng(7)
    n = 9
    x = np.where(rng.random((400, n)) < 0.5, rng.integers(0, 4, (400, n)), rng.normal(size=(400, n)))
    y = np.where(rng.random((400, n)) < 0.5, rng.integers(0, 4, (400, n)), rng.normal(size=(400, n)))
    picks = rng.integers(0, n, (400, n))  # resamples repeat units, as the bootstrap's do
    x[200:], y[200:] = np.take_along_axis(x[200:], picks[200:], 1), np.take_along_axis(y[200:], picks[200:], 1)
    got = predictability.weighted_tau_rows(x, y)
    expected = np.array([scipy_stats.weightedtau(a, b).statistic for a, b in zip(x, y)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
