"""Whole studies with the strategy catalogue: regression and new heads, cohorts of
different architectures, the reverse direction, BatchNormalization, the CLI and the
study-file errors."""

import json
import sqlite3
import subprocess
import sys
import tomllib

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from transferlab import datasets, models, objectives, study
from transferlab.errors import StudyFileError
from transferlab.loading import study_from_dict
from transferlab.config import as_toml as _as_toml
from transferlab.reports import build_report
from transferlab.store import Store
from transferlab.strategies import Finetune, NewHead, Standalone
from transferlab.shards import ShardJob

SMALL = {"n_samples": 200, "n_train": 100}


def _study(strategies, **overrides):
    raw = {
        "name": "small",
        "seed": 3,
        "repeats": 2,
        "source_repeats": 2,
        "source": {"kind": "blobs", "seed": 1, **SMALL},
        "target": {"kind": "blobs", "seed": 2, **SMALL},
        "training": {"epochs": 25},
        "strategies": strategies,
    }
    raw.update(overrides)
    return raw


def test_regression_target_gets_a_new_head_with_a_notice_and_reports_r2(tmp_path):
    raw = _study(
        [{"name": "standalone"}, {"name": "transfer", "freeze": 1}, {"name": "new_head"}],
        target={"kind": "regression", "seed": 2, "noise": 5.0, **SMALL},
    )
    notices = []
    outcome = study.run_study(study_from_dict(raw), tmp_path, notify=notices.append)
    heads_ = [n for n in notices if n.startswith("forward:")]  # the others: the tasks' class counts
    assert len(heads_) == 1 and "needs 1 linear unit, the source has 3 softmax units" in heads_[0]
    assert "(new_head)" in heads_[0] and outcome.notices == heads_
    with Store.in_folder(tmp_path) as store:
        runs = store.runs_frame(1)
        curves = store.curves_frame(1)
    targets = runs[runs.role == "target"]
    assert targets.test_r2.notna().all() and targets.test_accuracy.isna().all()
    assert targets.test_mae.notna().all() and targets.test_loss.notna().all()
    assert (targets[targets.strategy == "standalone"].test_r2 > 0.5).all()  # learnt in 25 epochs
    y_test = datasets.task_of(study_from_dict(raw).target, "t").y_test[:, 0]
    total = np.sum(np.square(y_test - y_test.mean()))  # R² = 1 − SS_res/SS_tot, SS_res = n·MSE
    np.testing.assert_allclose(targets.test_r2, 1 - targets.test_loss * len(y_test) / total, atol=1e-4)
    assert curves[curves.role == "target"].val_r2.notna().all()
    sources = runs[runs.role == "source"]
    assert sources.test_accuracy.notna().all() and sources.test_r2.isna().all()
    outputs = build_report(tmp_path)
    assert outputs.directions[0].metric == "test_r2"
    assert list(outputs.summary.strategy) == ["standalone", "transfer freeze=1", "new_head"]
    assert np.isclose(outputs.summary.set_index("strategy").loc["standalone", "mean"],
                      targets[targets.strategy == "standalone"].test_r2.mean())
    assert "test R²" in (tmp_path / "report.html").read_text()


def test_regression_pair_transfers_and_a_retrained_run_matches(tmp_path):
    raw = _study(
        [{"name": "standalone"}, {"name": "new_head"}, {"name": "finetune", "lr": 0.1}],
        source={"kind": "regression", "seed": 1, **SMALL},
        target={"kind": "regression", "seed": 2, **SMALL},
    )
    notices = []
    study.run_study(study_from_dict(raw), tmp_path, notify=notices.append)
    assert notices == []  # the output layers fit: no new head
    with Store.in_folder(tmp_path) as store:
        runs = store.runs_frame(1).set_index(["role", "strategy", "source_index", "repeat"])
    alone = study.retrain_run(tmp_path, "target", "finetune lr×0.1", 1, 1)
    assert alone.final["test_r2"][0] == pytest.approx(runs.loc[("target", "finetune lr×0.1", 1, 1), "test_r2"], abs=1e-6)
    summary = build_report(tmp_path).summary.set_index("strategy")
    new_head = runs.reset_index().query("strategy == 'new_head'")
    assert summary.loc["new_head", "mean"] == pytest.approx(new_head.test_r2.mean())
    assert summary.loc["new_head", "mean"] > 0.5  # the new linear head learns the target's coefficients


def test_architecture_changing_strategies_form_their_own_cohorts(tmp_path):
    raw = _study([
        {"name": "standalone"},
        {"name": "transfer", "freeze": 1},
        {"name": "insert_layer", "after": 1, "units": 8, "activation": "tanh"},
        {"name": "l2sp", "alpha": 0.1, "beta": 0.01},
    ])
    config = study_from_dict(raw)
    (forward,) = study.study_directions(config)
    runs = [r for r in study.plan_runs(config, forward) if r.role == "target"]
    groups = study.cohorts(runs, forward.recipes)
    assert [arch.describe() for arch in groups] == ["2 → 5 relu → 5 relu → 3 softmax",
                                                    "2 → 5 relu → 8 tanh → 5 relu → 3 softmax"]
    assert {r.strategy.label for r in list(groups.values())[1]} == {"insert_layer after=1 8 tanh"}
    mixed = [runs[0], list(groups.values())[1][0]]
    with pytest.raises(ValueError, match="trains 2 → 5 relu → 8 tanh"):  # a shard holds one architecture
        ShardJob(SOURCE_ARCH, forward.target_task, config.training.settings(), mixed, forward.recipes).initial_state()

    study.run_study(config, tmp_path)
    db = sqlite3.connect(tmp_path / "results.sqlite")
    stored = dict(db.execute("SELECT strategy, architecture_json FROM runs WHERE role = 'target' GROUP BY strategy"))
    inserted = models.Architecture.from_dict(json.loads(stored["insert_layer after=1 8 tanh"]))
    assert inserted.shapes == [(2, 5), (5, 8), (8, 5), (5, 3)]
    assert models.Architecture.from_dict(json.loads(stored["standalone"])).shapes == [(2, 5), (5, 5), (5, 3)]
    (layers,) = db.execute("SELECT layers_json FROM runs WHERE strategy = 'insert_layer after=1 8 tanh' LIMIT 1").fetchone()
    notes = [layer["note"] for layer in json.loads(layers)]
    assert notes == ["from source layer 0", "fresh (inserted layer)",
                     "re-initialised: its input width changed from 5 to 8",
                     "from source layer 2 (classes 0, 1, 2 matched by name)"]
    assert db.execute("SELECT count(*) FROM runs WHERE status != 'done'").fetchone()[0] == 0
    db.close()
    # each cohort's run, retrained alone, equals what the mixed study stored
    with Store.in_folder(tmp_path) as store:
        table = store.runs_frame(1).set_index(["role", "strategy", "source_index", "repeat"])
    for key in [("target", "insert_layer after=1 8 tanh", 0, 1), ("target", "l2sp α=0.1 β=0.01", 1, 0)]:
        alone = study.retrain_run(tmp_path, *key)
        assert alone.final["test_accuracy"][0] == pytest.approx(table.loc[key, "test_accuracy"], abs=1e-6)
        assert alone.final["test_loss"][0] == pytest.approx(table.loc[key, "test_loss"], abs=1e-6)


SOURCE_ARCH = models.mlp(2, (5, 5), 3)


def test_reverse_runs_both_directions_with_their_own_sources(tmp_path):
    raw = _study([{"name": "standalone"}, {"name": "transfer", "freeze": 1}], reverse=True)
    study.run_study(study_from_dict(raw), tmp_path)
    with Store.in_folder(tmp_path) as store:
        sources = store.source_models(1)
        runs = store.runs_frame(1)
    assert [(s["direction"], s["source_index"]) for s in sources] == [("forward", 0), ("forward", 1),
                                                                      ("reverse", 0), ("reverse", 1)]
    assert sorted(p.name for p in (tmp_path / "sources").iterdir()) == [
        "reverse_source_000.keras", "reverse_source_001.keras", "source_000.keras", "source_001.keras"]
    assert set(runs.direction) == {"forward", "reverse"} and (runs.status == "done").all()
    # the reverse sources were trained on the target task: their source-split numbers are the
    # forward standalone's task (blobs seed 2), evaluated by reloading the saved file
    reverse_source = models.load_model_file(sources[2]["file"])
    target = datasets.task_of(study_from_dict(raw).target, "t")
    objective = objectives.OBJECTIVES["categorical_crossentropy"]
    evaluated = objective.evaluate(reverse_source(target.x_test), target.y_test)
    assert evaluated["accuracy"] == pytest.approx(sources[2]["test_accuracy"], abs=1e-6)
    forward_seeds = set(runs[runs.direction == "forward"].seed)
    assert forward_seeds.isdisjoint(set(runs[runs.direction == "reverse"].seed))
    outputs = build_report(tmp_path)
    both = outputs.side_by_side()
    assert list(both.columns) == ["strategy", "forward mean (std)", "forward Δ", "reverse mean (std)", "reverse Δ"]
    assert (tmp_path / "boxplot_reverse.png").exists()
    assert alone_matches(tmp_path, ("target", "transfer freeze=1", 1, 0), "reverse")


def alone_matches(folder, key, direction):
    with Store.in_folder(folder) as store:
        runs = store.runs_frame(1)
    stored = runs[(runs.direction == direction) & (runs.role == key[0]) & (runs.strategy == key[1])
                  & (runs.source_index == key[2]) & (runs.repeat == key[3])].iloc[0]
    alone = study.retrain_run(folder, *key, direction=direction)
    return abs(alone.final["test_accuracy"][0] - stored.test_accuracy) < 1e-6


def test_batch_norm_study_freezes_statistics_in_inference_mode_and_not_in_train_mode(tmp_path):
    results = {}
    for mode in ("inference", "train"):
        raw = _study([{"name": "transfer", "freeze": 1}, {"name": "transfer", "freeze": 0}],
                     model={"hidden": [5, 5], "batch_norm": True}, bn_frozen=mode, source_repeats=1, repeats=1)
        study.run_study(study_from_dict(raw), tmp_path / mode)
        with Store.in_folder(tmp_path / mode) as store:
            (forward,) = study.study_directions(study_from_dict(raw))
            source = study.load_source_weights(store, 1, forward)[0]
        results[mode] = (study.retrain_run(tmp_path / mode, "target", "transfer freeze=1", 0, 0), source)
    inference, source = results["inference"]
    for array, start in zip(inference.weights[1], source[1]):  # gamma, beta, moving mean and variance
        assert np.array_equal(array[0], start)
    train, source = results["train"]
    assert np.array_equal(train.weights[1][0][0], source[1][0])  # gamma stays
    assert not np.array_equal(train.weights[1][2][0], source[1][2])  # the moving mean moves
    # only frozen layers differ between the modes: source models and unfrozen runs are bit-identical
    hashes = {}
    for mode in ("inference", "train"):
        with Store.in_folder(tmp_path / mode) as store:
            runs = store.runs_frame(1)
            hashes[mode] = (store.source_models(1)[0]["weights_sha256"],
                            runs[runs.strategy == "transfer freeze=0"].test_loss.tolist())
    assert hashes["inference"] == hashes["train"]


def test_every_strategy_runs_through_the_cli_and_the_report_shows_them(tmp_path):
    catalogue = tomllib.loads((ROOT / "examples" / "catalogue.toml").read_text())
    catalogue.update(repeats=2, source_repeats=2, reverse=True, training={"epochs": 25})
    catalogue["source"].update(SMALL)
    catalogue["target"].update(SMALL)
    (tmp_path / "catalogue.toml").write_text(_as_toml(catalogue))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "transferlab.cli", "run", str(tmp_path / "catalogue.toml"),
                             "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    from transferlab.strategies import CATALOGUE

    names = {entry["name"] for entry in catalogue["strategies"]}
    assert names == set({cls.name: cls for cls in CATALOGUE})  # the catalogue example holds every strategy
    labels = ["standalone", "transfer freeze=0", "transfer freeze=2", "reinit keep=1", "insert_layer after=1 5 relu",
              "new_head", "new_input freeze=1", "finetune lr×0.1", "finetune lr×0.5 layer×0.5", "two_stage head=20 lr×0.1",
              "gradual_unfreeze every=10", "l2sp α=0.01 β=0.01"]
    report = (out / "report.html").read_text()
    for label in labels:
        assert label in result.stdout and label in report, label
    assert "What each strategy trained" in report and "both directions" in result.stdout
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary[summary.direction == "forward"].strategy) == labels
    assert set(summary.direction) == {"forward", "reverse"}


def test_the_python_api_takes_strategy_values(tmp_path):
    raw = _study([Standalone(), Finetune(lr=0.2), NewHead(freeze=1)], source_repeats=1, repeats=1)
    config = study_from_dict(raw)
    assert config.model_dump()["strategies"][1] == {"name": "finetune", "lr": 0.2, "layer_factor": 1.0}
    assert config.strategy_values()[1] == Finetune(lr=0.2)
    outcome = study.run_study(config, tmp_path)
    assert outcome.trained_runs == 4


@pytest.mark.parametrize("change, message", [
    ({"strategies": [{"name": "finetune", "lr": -1}]}, "strategies[0].lr: -1.0 must be greater than 0"),
    ({"strategies": [{"name": "two_stage", "head_epochs": 25}]},
     "strategies[0].head_epochs: 25 leaves no epochs for the second stage (the study trains 25)"),
    ({"strategies": [{"name": "gradual_unfreeze", "every": 20}]},
     "strategies[0].every: 20 would leave the first layer frozen for all 25 epochs; use every ≤ 12"),
    ({"strategies": [{"name": "insert_layer", "units": 0}]}, "strategies[0].units: 0 must be 1 or more"),
    ({"strategies": [{"name": "reinit", "depth": 1}]},
     "strategies[0].depth: reinit has no parameter 'depth' (its parameters: keep, freeze)"),
    ({"strategies": [{"name": "fine_tune"}]}, "unknown strategy 'fine_tune'; choose one of standalone, transfer (freeze = 0), reinit (keep = 1, freeze = false)"),
    ({"target": {"kind": "regresion", "seed": 2}}, "target: kind must be one of 'blobs', 'regression'"),
    ({"target": {"kind": "regression", "seed": 2, "centers": 3}}, "target.centers: unknown field"),
    ({"target": {"kind": "blobs", "seed": 2, "n_features": 4}, "strategies": [{"name": "standalone"}, {"name": "transfer"}]},
     "s.toml: strategies[1]: transfer freeze=0 reuses the source's first layer, which takes 2 features (x0, x1), but "
     "the target has 4 (x0, x1, x2, x3); use new_input (a fresh first layer on the target's features) or standalone, "
     "or give both tasks the same features"),
    ({"bn_frozen": "frozen"}, "bn_frozen: Input should be 'inference' or 'train'"),
])
def test_study_file_errors_name_field_and_fix(change, message):
    raw = _study([{"name": "standalone"}])
    raw.update(change)
    with pytest.raises(StudyFileError) as caught:
        study_from_dict(raw, source="s.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_strategy_lists_every_strategy_and_its_parameters():
    with pytest.raises(StudyFileError) as caught:
        study_from_dict(_study([{"name": "nope"}]))
    for piece in ("reinit (keep = 1, freeze = false)",
                  'insert_layer (after = 1, units = 5, activation = "relu", freeze = true)',
                  "new_head (freeze = 0)", "finetune (lr = 0.1, layer_factor = 1.0)",
                  "two_stage (head_epochs = 20, lr = 0.1, fresh_head = true)", "gradual_unfreeze (every = 10)",
                  "l2sp (alpha = 0.01, beta = 0.01)"):
        assert piece in str(caught.value)


def test_reverse_needs_a_source_task(tmp_path):
    arch = models.mlp(2, (5, 5), 3)
    path = tmp_path / "m.keras"
    models.save_model_file(models.build_keras_model(arch, models.fresh_weights(arch, np.random.default_rng(0))), path)
    raw = _study([{"name": "standalone"}], source={"model_file": str(path)}, source_repeats=1, reverse=True)
    with pytest.raises(StudyFileError, match="reverse: a reverse study trains source models on the target task"):
        study_from_dict(raw)


def test_a_user_model_with_another_class_count_gets_a_new_head(tmp_path):
    arch = models.mlp(2, (6, 4), 3, activation="tanh", batch_norm=True)
    path = tmp_path / "three_classes.keras"
    models.save_model_file(models.build_keras_model(arch, models.fresh_weights(arch, np.random.default_rng(0))), path)
    raw = _study([{"name": "standalone"}, {"name": "transfer", "freeze": 1}], source={"model_file": str(path)},
                 source_repeats=1, target={"kind": "blobs", "seed": 2, "centers": 5, **SMALL})
    notices = []
    study.run_study(study_from_dict(raw), tmp_path / "out", notify=notices.append)
    assert "the target needs 5 softmax units, the source has 3 softmax units (new_head)" in notices[-1]
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    stored = dict(db.execute("SELECT strategy, architecture_json FROM runs GROUP BY strategy"))
    for label in ("standalone", "transfer freeze=1"):  # both train the file's body under a 5-class head
        trained = models.Architecture.from_dict(json.loads(stored[label]))
        assert trained.describe() == "2 → 6 tanh → BN → 4 tanh → BN → 5 softmax"
    assert db.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0] == 4


def test_a_database_from_another_schema_is_refused_and_left_alone(tmp_path):
    from transferlab.store import StoreError

    path = tmp_path / "results.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY, name TEXT)")
    old.commit()
    old.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="database schema 0, this version uses 7"):
        Store.in_folder(tmp_path)
    assert path.read_bytes() == before


def test_strategies_are_checked_against_a_model_file_when_the_study_is_read(tmp_path):
    arch = models.mlp(2, (6,), 3)
    path = tmp_path / "one_hidden.keras"
    models.save_model_file(models.build_keras_model(arch), path)
    study_file = tmp_path / "study.toml"
    raw = _study([{"name": "transfer", "freeze": 2}], source={"model_file": "one_hidden.keras"}, source_repeats=1)
    study_file.write_text(_as_toml(raw))
    from transferlab.api import load_study

    with pytest.raises(StudyFileError) as caught:
        load_study(study_file)
    assert str(caught.value) == (
        f"{study_file}: strategies[0].freeze: 2 is outside 0..1 (the source has 1 hidden layer) "
        "(source model one_hidden.keras: 2 → 6 relu → 3 softmax)"
    )


def test_cli_lists_the_strategies():
    from transferlab.strategies import CATALOGUE

    result = subprocess.run([sys.executable, "-m", "transferlab.cli", "strategies"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "[[strategies]]" in result.stdout
    for name in {cls.name: cls for cls in CATALOGUE}:
        assert name in result.stdout
    assert "head_epochs = 20" in result.stdout and "fresh_head = true" in result.stdout
