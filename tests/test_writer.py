"""The results writer: the driver hands a finished shard over and goes on; shards are committed
in order, whole, several per transaction when they queue up; the writer's errors reach the
driver; a kill -9 while the writer is inside a transaction loses nothing committed and
duplicates nothing on resume."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from test_study import _contents
from transferlab import engine, study
from transferlab.loading import study_from_dict
from transferlab.store import Store
from transferlab.writer import ShardWriter

EPOCHS = 4
CURVES = ("loss", "accuracy", "val_loss", "val_accuracy")


@pytest.fixture
def planned(tmp_path, small_study_dict):
    """A results database with the small study's runs planned, and their ids."""
    plan = study.plan_study(study_from_dict(small_study_dict))
    with Store.in_folder(tmp_path) as store:
        study_id = store.open_study(plan, study.versions())
        runs = {d.name: plan.runs(d) for d in plan.directions}
        store.plan_runs(study_id, study._planned_rows(plan, runs))
        ids = [run.id for run in store.runs(study_id, role="target")]
    return tmp_path / "results.sqlite", ids


def _result(n, seed):
    rng = np.random.default_rng(seed)
    curves = {name: rng.random((n, EPOCHS), dtype=np.float32) for name in CURVES}
    final = {f"{split}_{name}": rng.random(n, dtype=np.float32) for split in ("train", "test")
             for name in ("loss", "accuracy")}
    return engine.ShardResult(weights=[], curves=curves, final=final)


def _stored(path):
    db = sqlite3.connect(path)
    try:
        done = db.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0]
        curves = db.execute("SELECT count(*) FROM curves").fetchone()[0]
        finals = db.execute("SELECT count(*) FROM final_metrics").fetchone()[0]
        return done, curves, finals
    finally:
        db.close()


def test_the_driver_goes_on_while_the_writer_commits(planned):
    path, ids = planned
    handed_over = threading.Event()
    seen = []

    def prepare():  # runs on the writer's thread, before its commit
        seen.append(handed_over.wait(timeout=30))  # only True if `submit` returned first
        return []

    with ShardWriter(path) as writer:
        writer.submit(ids[:2], _result(2, 0), prepare)
        handed_over.set()
        assert writer.flush() == 0
    assert seen == [True]
    assert _stored(path) == (2, 2, 8)


def test_shards_that_queue_up_commit_together_each_whole(planned, monkeypatch):
    path, ids = planned
    batches = []
    original = Store.finish_shards
    monkeypatch.setattr(Store, "finish_shards", lambda self, shards: batches.append(len(shards)) or original(self, shards))
    release = threading.Event()
    with ShardWriter(path) as writer:
        writer.submit(ids[:1], _result(1, 0), lambda: release.wait(timeout=30) and [])
        time.sleep(0.2)  # the writer is now inside the first shard's work
        for start in (1, 3, 5):
            writer.submit(ids[start:start + 2], _result(2, start))
        release.set()
    assert batches == [1, 3]
    assert _stored(path) == (7, 7, 28)
    with Store(path) as store:  # each run's arrays as handed over
        long = store.metrics_frame(1)
    loss = long[(long.run_id == ids[3]) & (long.split == "train") & (long.name == "loss")]
    np.testing.assert_array_equal(loss.sort_values("epoch").value.to_numpy(np.float32),
                                  _result(2, 3).curves["loss"][0])


def test_an_error_on_the_writer_reaches_the_driver_and_later_shards_are_not_written(planned):
    path, ids = planned

    def broken():
        raise OSError("no space left for the source model file")

    writer = ShardWriter(path)
    writer.submit(ids[:2], _result(2, 0))
    writer.flush()
    writer.submit(ids[2:4], _result(2, 1), broken)
    with pytest.raises(OSError, match="no space left"):
        writer.flush()
    with pytest.raises(OSError, match="no space left"):
        writer.submit(ids[4:6], _result(2, 2))
    writer.close()
    assert _stored(path) == (2, 2, 8)  # the shard before is whole; the failed one and the next absent


# A study run whose writer stops for good inside its third shard's transaction, after writing
# that shard's rows but before the commit, and says so through a marker file.
STUCK_WRITER = """
import sys, time
from pathlib import Path
from transferlab import study
from transferlab.api import load_study
from transferlab.store import Store

original, written = Store._write_shard, []

def write(self, *args):
    stored = original(self, *args)
    written.append(1)
    if len(written) == 3:
        Path(sys.argv[3]).touch()
        time.sleep(600)
    return stored

Store._write_shard = write
study.run_study(load_study(sys.argv[1]), sys.argv[2])
"""


def test_kill_9_while_the_writer_is_inside_a_transaction_loses_and_duplicates_nothing(tmp_path, small_study_dict):
    from transferlab.config import as_toml

    small_study_dict["execution"] = {"shard_size": 2}
    study_file = tmp_path / "s.toml"
    study_file.write_text(as_toml(small_study_dict))
    out, marker = tmp_path / "out", tmp_path / "inside"
    process = subprocess.Popen([sys.executable, "-c", STUCK_WRITER, str(study_file), str(out), str(marker)])
    deadline = time.time() + 240
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the writer never reached its third shard"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done, curves, finals = _stored(out / "results.sqlite")
    assert done == curves and finals == 4 * done  # whole shards only
    assert done % 2 == 0 and done <= 4  # committed shards of two runs; at most the two before the third
    config = study_from_dict(small_study_dict)
    resumed = study.run_study(config, out)
    assert resumed.skipped_runs == done
    study.run_study(config, tmp_path / "whole")
    assert _contents(out) == _contents(tmp_path / "whole")


def test_ctrl_c_in_python_commits_what_was_handed_over_and_the_rerun_finishes(tmp_path, small_study_dict):
    """In a notebook, Ctrl-C is a KeyboardInterrupt in the driver: the shards already handed
    to the writer are committed (whole), the folder is released, and a rerun finishes it."""
    from transferlab.executors import LocalExecutor

    class StopsAfterTwoShards(LocalExecutor):
        def map(self, jobs):
            for count, (job, result) in enumerate(super().map(jobs)):
                if count == 2:
                    raise KeyboardInterrupt
                yield job, result

    small_study_dict["execution"] = {"shard_size": 2}
    config = study_from_dict(small_study_dict)
    with pytest.raises(KeyboardInterrupt):
        study.run_study(config, tmp_path / "out", executor=StopsAfterTwoShards())
    done, curves, _ = _stored(tmp_path / "out" / "results.sqlite")
    assert done == curves == 2 + 2 * 2  # the source shard and two target shards, each whole
    resumed = study.run_study(config, tmp_path / "out")  # the lock was released
    assert resumed.skipped_runs == done
    study.run_study(config, tmp_path / "whole")
    assert _contents(tmp_path / "out") == _contents(tmp_path / "whole")


def test_a_shard_whose_work_fails_keeps_the_shards_before_it_in_its_batch(planned):
    path, ids = planned
    release = threading.Event()

    def broken():
        raise OSError("no space left for the source model file")

    writer = ShardWriter(path)
    writer.submit(ids[:1], _result(1, 0), lambda: release.wait(timeout=30) and [])
    time.sleep(0.2)  # the writer is inside the first shard's work: the next three queue up
    writer.submit(ids[1:3], _result(2, 1))
    writer.submit(ids[3:5], _result(2, 2), broken)
    writer.submit(ids[5:7], _result(2, 3))
    release.set()
    with pytest.raises(OSError, match="no space left"):
        writer.flush()
    writer.close()
    assert _stored(path) == (3, 3, 12)  # the first shard, and the one before the failure in the batch
