"""Shards on a real Ray cluster (a head and a second worker node on this machine, one CPU
each): the database equals the local executor's, metric for metric and curve for curve,
for a study, a sweep and a model-file study; a worker killed mid-shard, a driver killed or
interrupted (the CLI's --ray, resumed) lose and duplicate nothing; without Ray, --ray says
how to install it."""

import sqlite3
import sys
from pathlib import Path

import pytest

from test_bad_input import _assert_one_line, _write, invoke
from transferlab import study
from transferlab.config import StudyConfig
from transferlab.executors import RAY_MISSING, RayExecutor

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one cluster, on one pytest worker

STUDY = {
    "name": "on-ray", "seed": 7, "repeats": 3, "source_repeats": 2,
    "source": {"kind": "blobs", "seed": 1, "n_samples": 200, "n_train": 100},
    "target": {"kind": "blobs", "seed": 2, "n_samples": 200, "n_train": 100},
    "training": {"epochs": 4},
    "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 1}, {"name": "finetune", "lr": 0.1}],
}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


LONG = {**STUDY, "training": {"epochs": 20}}  # long enough to stop a run mid-way


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """LONG run by the local executor: what every cluster run must store."""
    folder = tmp_path_factory.mktemp("reference") / "local"
    study.run_study(StudyConfig.model_validate(LONG), folder, shard_size=4)
    return _results(folder)


def _results(folder) -> tuple[list, list]:
    with sqlite3.connect(folder / "results.sqlite") as db:
        final = db.execute("SELECT r.direction, r.role, r.strategy, r.source_index, r.repeat, r.status, f.split, "
                           "f.name, f.value FROM runs r JOIN final_metrics f ON f.run_id = r.id ORDER BY 1, 2, 3, 4, 5, "
                           "7, 8").fetchall()
        curves = db.execute('SELECT r.direction, r.role, r.strategy, r.source_index, r.repeat, c.names, c.epochs, '
                            'c."values" FROM runs r JOIN curves c ON c.run_id = r.id '
                            "ORDER BY 1, 2, 3, 4, 5").fetchall()
    return final, curves


def test_a_study_on_ray_stores_what_the_local_executor_stores(cluster, tmp_path):
    config = StudyConfig.model_validate(STUDY)
    study.run_study(config, tmp_path / "local", shard_size=4)
    outcome = study.run_study(config, tmp_path / "ray", executor=RayExecutor(cluster.address), shard_size=4)
    assert outcome.trained_runs == 2 + 3 + 2 * 3 * 2
    local, on_ray = _results(tmp_path / "local"), _results(tmp_path / "ray")
    assert len(local[0]) > 0 and len(local[1]) > 0
    assert on_ray == local  # final metrics and every curve, bit for bit
    nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert len(nodes) == 2


def test_without_ray_the_option_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    code, _, stderr = invoke("run", _write(tmp_path, STUDY), "--out", tmp_path / "out", "--ray", "auto")
    _assert_one_line(code, stderr, f"error: --ray: {RAY_MISSING}")
    assert not (tmp_path / "out").exists()


def _kill_one_training_worker(stop) -> list[int]:
    """Poll for a worker process running a shard (Ray titles it `ray::_train_shard`) and
    kill it with SIGKILL, once: a worker dying mid-shard."""
    import os
    import signal
    import time

    killed = []
    while not stop.is_set() and not killed:
        for entry in Path("/proc").iterdir():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:  # not a process, or it ended
                continue
            if entry.name.isdigit() and title.startswith(b"ray::_train_shard"):
                time.sleep(0.3)  # mid-shard, not at its first instruction
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
                break
        time.sleep(0.05)
    return killed


def test_a_worker_killed_mid_shard_is_retried_and_its_shard_lands_once(cluster, reference, tmp_path):
    import threading

    config = StudyConfig.model_validate(LONG)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=lambda: killed.extend(_kill_one_training_worker(stop)))
    killer.start()
    try:
        study.run_study(config, tmp_path / "ray", executor=RayExecutor(cluster.address), shard_size=4)
    finally:
        stop.set()
        killer.join()
    assert killed, "no shard was running to kill"
    assert _results(tmp_path / "ray") == reference
    with sqlite3.connect(tmp_path / "ray" / "results.sqlite") as db:
        statuses = db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        per_run = db.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM final_metrics GROUP BY run_id, split, "
                             "name)").fetchone()[0]
    assert statuses == [("done", 2 + 3 + 2 * 3 * 2)] and per_run == 1  # every run once, none twice


def _stop_mid_run(study_file, out, address, signal_name: str):
    """Start `transferlab run --ray` in a process of its own, stop it with `signal_name` once
    its first target runs are stored; its exit code and stderr."""
    import os
    import signal
    import subprocess
    import time

    driver = subprocess.Popen([sys.executable, "-m", "transferlab.cli", "run", str(study_file), "--out", str(out),
                               "--ray", address, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    before, done, deadline = _done_targets(out), None, time.monotonic() + 120
    while driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        done = _done_targets(out)
        if done > before:
            break
    os.kill(driver.pid, getattr(signal, signal_name))
    _, stderr = driver.communicate(timeout=60)
    assert done > before, f"the driver stored no new target run before {signal_name}"
    return driver.returncode, stderr


def _done_targets(out) -> int:
    try:
        with sqlite3.connect(out / "results.sqlite") as db:
            return db.execute("SELECT count(*) FROM runs WHERE role = 'target' AND status = 'done'").fetchone()[0]
    except sqlite3.Error:  # not there yet, or its schema is still being written
        return 0


def test_a_driver_killed_then_interrupted_resumes_on_the_cluster(cluster, reference, tmp_path):
    """kill -9, then Ctrl-C (one line, exit 130): the same command resumes each time."""
    study_file = _write(tmp_path, {**LONG, "execution": {"shard_size": 2}})  # shard size changes no number
    out = tmp_path / "out"
    _stop_mid_run(study_file, out, cluster.address, "SIGKILL")
    code, stderr = _stop_mid_run(study_file, out, cluster.address, "SIGINT")
    assert code == 130 and stderr.strip().startswith("interrupted:"), stderr
    code, stdout, stderr = invoke("run", study_file, "--out", out, "--ray", cluster.address)
    assert code == 0, stderr
    assert "resumed:" in stdout
    assert _results(out) == reference


def test_a_sweep_and_a_model_file_study_on_ray_store_what_they_store_locally(cluster, tmp_path):
    import numpy as np

    from transferlab import models
    from transferlab.sweep import sweep_from_dict

    sweep = sweep_from_dict({**STUDY, "name": "sizes", "sweep": {"target.n_train": [20, 100]}})
    study.run_sweep(sweep, tmp_path / "sweep-local", shard_size=4)
    study.run_sweep(sweep, tmp_path / "sweep-ray", executor=RayExecutor(cluster.address), shard_size=4)
    assert _results(tmp_path / "sweep-ray") == _results(tmp_path / "sweep-local")

    arch = models.mlp(2, (5, 5), 3)
    models.save_model_file(models.build_keras_model(arch, models.fresh_weights(arch, np.random.default_rng(0))),
                           tmp_path / "given.keras")
    given = StudyConfig.model_validate({**STUDY, "source_repeats": 1, "source": {"model_file": str(tmp_path / "given.keras")}})
    study.run_study(given, tmp_path / "given-local", shard_size=4)
    study.run_study(given, tmp_path / "given-ray", executor=RayExecutor(cluster.address), shard_size=4)
    assert _results(tmp_path / "given-ray") == _results(tmp_path / "given-local")


def test_a_shard_that_arrives_damaged_is_refused_naming_what():
    import hashlib
    import pickle

    import numpy as np

    from transferlab import tasks
    from transferlab.executors import _train_shard, weights_sha256

    task = tasks.blobs(2, n_samples=100, n_train=50)
    payload = pickle.dumps({"not": "a job"})
    with pytest.raises(ValueError, match=r"^the shard arrived damaged on a Ray worker \(SHA-256 "):
        _train_shard(payload, "0" * 64, task, task.fingerprint(), {})
    digest = hashlib.sha256(payload).hexdigest()
    with pytest.raises(ValueError, match=r"^the task's arrays arrived damaged"):
        _train_shard(payload, digest, task, "0" * 64, {})
    weights = [(np.ones((2, 3), np.float32), np.zeros(3, np.float32))]
    assert weights_sha256(weights) != weights_sha256([(np.ones((2, 3), np.float32), np.ones(3, np.float32))])
