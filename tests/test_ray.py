"""Shards on a real Ray cluster (a head and a second worker node on this machine, one CPU
each): the database equals the local executor's, metric for metric and curve for curve;
the CLI's --ray runs a study there; without Ray, --ray says how to install it."""

import sqlite3
import sys

import pytest

from test_bad_input import _assert_one_line, _write, invoke
from transferlab import study
from transferlab.config import StudyConfig
from transferlab.executors import RAY_MISSING, RayExecutor

ray = pytest.importorskip("ray")

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


def _results(folder) -> tuple[list, list]:
    with sqlite3.connect(folder / "results.sqlite") as db:
        final = db.execute("SELECT r.direction, r.role, r.strategy, r.source_index, r.repeat, r.status, f.split, "
                           "f.name, f.value FROM runs r JOIN final_metrics f ON f.run_id = r.id ORDER BY 1, 2, 3, 4, 5, "
                           "7, 8").fetchall()
        curves = db.execute("SELECT r.direction, r.role, r.strategy, r.source_index, r.repeat, m.split, m.name, "
                            "m.epoch, m.value FROM runs r JOIN metrics m ON m.run_id = r.id "
                            "ORDER BY 1, 2, 3, 4, 5, 6, 7, 8").fetchall()
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


def test_the_cli_runs_a_study_on_the_cluster_and_reports(cluster, tmp_path):
    study_file = _write(tmp_path, STUDY)
    code, stdout, stderr = invoke("run", study_file, "--out", tmp_path / "out", "--ray", cluster.address, "--quiet")
    assert code == 0, stderr
    assert "verdict against standalone" in stdout and (tmp_path / "out" / "report.html").is_file()


def test_without_ray_the_option_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    code, _, stderr = invoke("run", _write(tmp_path, STUDY), "--out", tmp_path / "out", "--ray", "auto")
    _assert_one_line(code, stderr, f"error: --ray: {RAY_MISSING}")
    assert not (tmp_path / "out").exists()
