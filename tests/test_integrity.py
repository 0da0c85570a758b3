"""Integrity under faults and concurrency: one writer per folder, reports during a run,
model-file studies end to end, divergence as a result, Ctrl-C at any moment, and results
that no execution setting (shard size, device count) can change."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from test_study import _contents
from transferlab import models, study
from transferlab.config import as_toml
from transferlab.loading import study_from_dict
from transferlab.reports import build_report
from transferlab.store import Store

CLI = [sys.executable, "-m", "transferlab.cli"]


def _study_file(tmp_path, raw, name="s.toml"):
    path = tmp_path / name
    path.write_text(as_toml(raw))
    return path


def _done_counts(folder):
    db = sqlite3.connect(folder / "results.sqlite")
    try:
        return dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    finally:
        db.close()


def _wait_for_done(folder, process, at_least=1, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            if _done_counts(folder).get("done", 0) >= at_least:
                return True
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    return False


@pytest.fixture
def longer_study(small_study_dict):
    """Long enough (a few seconds) to be caught in the act."""
    small_study_dict.update(repeats=12, execution={"shard_size": 6})
    small_study_dict["training"]["epochs"] = 40
    return small_study_dict


def test_two_runs_into_one_folder_one_is_refused_and_the_folder_completes(tmp_path, longer_study):
    longer_study["training"]["epochs"] = 400  # still training when the second process arrives
    study_file = _study_file(tmp_path, longer_study)
    out = tmp_path / "out"
    command = CLI + ["run", str(study_file), "--out", str(out), "--quiet"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (out / ".transferlab.lock").exists() and first.poll() is None:
        time.sleep(0.05)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    first_out, first_err = first.communicate(timeout=300)
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 2], (first_err, second.stderr)
    refused = second if second.returncode == 2 else first
    err = second.stderr if second.returncode == 2 else first_err
    assert refused is second
    assert err.startswith(f"error: {out}: transferlab run (pid {first.pid}, started ") and err.count("\n") == 1
    assert "is writing to this folder; wait for it to finish or choose another --out" in err
    counts = _done_counts(out)
    assert set(counts) == {"done"} and counts["done"] == 2 + 12 + 2 * 2 * 12
    again = study.run_study(study_from_dict(longer_study), out)
    assert again.trained_runs == 0


def test_a_report_while_a_run_writes(tmp_path, longer_study):
    study_file = _study_file(tmp_path, longer_study)
    out = tmp_path / "out"
    process = subprocess.Popen(CLI + ["run", str(study_file), "--out", str(out), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for_done(out, process, at_least=4)
        outputs = build_report(out)  # a consistent snapshot while shards are committed
        assert (out / "report.html").stat().st_size > 0
        if outputs.runs_done < outputs.runs_planned:
            assert outputs.pending and "target runs trained so far" in " ".join(outputs.pending)
            assert "The study is not finished" in (out / "report.html").read_text()
    finally:
        assert process.wait(timeout=300) == 0, process.stderr.read()


def test_report_of_a_folder_stopped_during_its_source_phase(tmp_path, small_study_dict):
    config = study_from_dict(small_study_dict)
    plan = study.plan_study(config)
    with Store.in_folder(tmp_path) as store:  # planned, nothing trained: as if killed at once
        study_id = store.open_study(plan, study.versions())
        store.plan_runs(study_id, study._planned_rows(plan, {d.name: plan.runs(d) for d in plan.directions}))
    outputs = build_report(tmp_path)
    assert outputs.pending == ["forward: 0 of 2 source models and 0 of 15 target runs trained so far"]
    assert outputs.summary.empty and (tmp_path / "report.html").exists()


def test_a_model_file_study_from_run_to_report_to_retrain(tmp_path, small_study_dict):
    arch = models.mlp(2, (5, 5), 3)
    model_file = tmp_path / "mine [v2].keras"
    weights = models.fresh_weights(arch, np.random.default_rng(0))
    models.save_model_file(models.build_keras_model(arch, weights), model_file)
    raw = dict(small_study_dict, source_repeats=1, source={"model_file": model_file.name})
    study_file = _study_file(tmp_path, raw)
    out = tmp_path / "out"
    result = subprocess.run(CLI + ["run", str(study_file), "--out", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "mine [v2].keras → blobs(seed=2)" in result.stdout  # brackets survive rich
    (out / "report.html").unlink()
    rebuilt = subprocess.run(CLI + ["report", str(out)], capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "mine [v2].keras" in (out / "report.html").read_text()
    with Store.in_folder(out) as store:
        runs = store.runs_frame(1).set_index(["role", "strategy", "source_index", "repeat"])
    alone = study.retrain_run(out, "target", "transfer freeze=2", 0, 1)
    assert alone.final["test_loss"][0] == runs.loc[("target", "transfer freeze=2", 0, 1), "test_loss"]


def test_divergence_is_stored_and_reported(tmp_path):
    raw = {
        "name": "diverges", "seed": 1, "repeats": 4,
        "source": {"kind": "regression", "seed": 1, "n_samples": 200, "n_train": 100},
        "target": {"kind": "regression", "seed": 2, "n_samples": 200, "n_train": 100},
        "training": {"epochs": 30, "learning_rate": 5.0},
        "strategies": [{"name": "standalone"}, {"name": "finetune", "lr": 0.0001}],
    }
    out = tmp_path / "out"
    result = subprocess.run(CLI + ["run", str(_study_file(tmp_path, raw)), "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with Store.in_folder(out) as store:
        runs = store.runs_frame(1)
    diverged = runs[(runs["status"] == "diverged") & (runs["role"] == "target")]
    assert len(diverged) > 0 and diverged["diverged_epoch"].between(1, 30).all()
    assert diverged["test_r2"].isna().all()
    summary = pd.read_csv(out / "summary.csv")
    standalone = summary.set_index("strategy").loc["standalone"]
    assert standalone["diverged"] == (diverged["strategy"] == "standalone").sum()
    assert f"{int(standalone['diverged'])} of 4" in result.stdout
    assert "runs diverged" in result.stdout and "left out of means" in result.stdout
    assert "Some runs diverged" in (out / "report.html").read_text()


def _interrupt(command, delay, timeout=120):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    started = time.time()
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err, time.time() - started


def test_ctrl_c_at_random_moments_exits_130_with_one_line_and_resumes(tmp_path, longer_study):
    study_file = _study_file(tmp_path, longer_study)
    out = tmp_path / "out"
    command = CLI + ["run", str(study_file), "--out", str(out), "--quiet"]
    moments = random.Random(7).sample([0.3, 0.8, 1.5, 3.0, 4.5, 6.0], 3)
    for delay in moments:
        code, err, waited = _interrupt(command, delay)
        if code == 0:
            break  # finished before the signal: nothing to check
        assert code == 130, err
        assert err.startswith("interrupted: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert waited < 3.0
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert _done_counts(out) == {"done": 2 + 12 + 2 * 2 * 12}
    # Ctrl-C while the report is being written: one line, exit 130, and the report can be rebuilt
    code, err, _ = _interrupt(CLI + ["report", str(out)], 2.0)
    if code != 0:
        assert code == 130 and err.startswith("interrupted: ") and err.count("\n") == 1, err
    assert not [p for p in out.rglob(".partial-*") if not p.name.endswith("probe")] or code == 130
    rebuilt = subprocess.run(CLI + ["report", str(out)], capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    whole = tmp_path / "whole"
    study.run_study(study_from_dict(longer_study), whole)
    assert _contents(out) == _contents(whole)


def test_shard_size_changes_no_stored_number(tmp_path, small_study_dict):
    small_study_dict["strategies"].append({"name": "l2sp", "alpha": 0.01})
    contents = []
    for shard_size in (1, 16, 256):
        raw = dict(small_study_dict, execution={"shard_size": shard_size})
        study.run_study(study_from_dict(raw), tmp_path / str(shard_size))
        contents.append(_contents(tmp_path / str(shard_size)))
        stored = contents[-1].pop("studies")  # its display copy of the study file shows the shard size
        contents[-1]["plan_sha256"] = [row[3] for row in stored]
    assert contents[0] == contents[1] == contents[2]


def test_the_number_of_devices_changes_no_stored_number(tmp_path, small_study_dict):
    # 160 target runs in one cohort: three blocks, dealt over both devices in this process
    small_study_dict.update(repeats=40)
    small_study_dict["training"]["epochs"] = 10
    study_file = _study_file(tmp_path, small_study_dict)
    env = dict(os.environ, TRANSFERLAB_CPU_DEVICES="1")
    one = subprocess.run(CLI + ["run", str(study_file), "--out", str(tmp_path / "one"), "--quiet"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr
    import jax

    assert len(jax.local_devices()) == 2  # this process splits the CPU in two
    study.run_study(study_from_dict(small_study_dict), tmp_path / "two")
    assert _contents(tmp_path / "one") == _contents(tmp_path / "two")


def test_mean_curves_in_sql_equal_pandas(tmp_path, small_study_dict):
    study.run_study(study_from_dict(small_study_dict), tmp_path)
    with Store.in_folder(tmp_path) as store:
        in_sql = store.mean_curves(1)
        curves = store.curves_frame(1)
    curves = curves[curves["role"] == "target"]
    metrics = [c for c in ("loss", "accuracy", "val_loss", "val_accuracy")]
    expected = curves.groupby(["direction", "strategy", "epoch"], sort=False)[metrics].agg(["mean", "std"])
    expected.columns = [f"{m}_{s}" for m, s in expected.columns]
    expected = expected.reset_index()
    assert list(in_sql["strategy"].unique()) == list(expected["strategy"].unique())
    for column in expected.columns[3:]:
        np.testing.assert_allclose(in_sql[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-9)
    assert "mae_mean" not in in_sql.columns


def test_the_stored_plan_reads_back_as_the_same_plan(tmp_path):
    raw = {
        "name": "every-kind", "seed": 5, "repeats": 2, "source_repeats": 2, "reverse": True,
        "source": {"seed": 1, "n_samples": 120, "n_train": 60},
        "target": {"seed": 2, "n_samples": 120, "n_train": 60, "centers": 4},
        "model": {"hidden": [6, 4], "batch_norm": True},
        "training": {"epochs": 12},
        "strategies": [{"name": "standalone"}, {"name": "two_stage", "head_epochs": 3, "lr": 0.1},
                       {"name": "l2sp"}, {"name": "insert_layer", "after": 1, "units": 3}],
    }
    plan = study.plan_study(study_from_dict(raw))
    with Store.in_folder(tmp_path) as store:
        store.open_study(plan, study.versions())
    with Store.in_folder(tmp_path, readonly=True) as store:
        _, stored = store.stored_plan()
    assert stored.sha256() == plan.sha256() and stored.to_dict() == plan.to_dict()
    for before, after in zip(plan.directions, stored.directions):
        assert [r.key for r in plan.runs(before)] == [r.key for r in stored.runs(after)]
        assert [r.seed for r in plan.runs(before)] == [r.seed for r in stored.runs(after)]
        for label, recipe in before.recipes.items():
            np.testing.assert_array_equal(recipe.multipliers, after.recipes[label].multipliers)
            assert recipe.arch == after.recipes[label].arch and recipe.origins == after.recipes[label].origins
        np.testing.assert_array_equal(before.target_task.x_train, after.target_task.x_train)


def test_a_file_written_through_atomic_path_is_whole_or_untouched(tmp_path):
    from transferlab.folder import atomic_path

    target = tmp_path / "report.html"
    target.write_text("the old report")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temporary:
            temporary.write_text("half of the new")
            assert target.read_text() == "the old report"  # readers still see the whole old file
            raise KeyboardInterrupt
    assert target.read_text() == "the old report" and [p.name for p in tmp_path.iterdir()] == ["report.html"]
    with atomic_path(target) as temporary:
        temporary.write_text("the new report")
    assert target.read_text() == "the new report" and [p.name for p in tmp_path.iterdir()] == ["report.html"]
