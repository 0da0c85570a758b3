"""The data examples run end to end through the CLI (with few repeats), the example CSV is
what its script makes, and a study built in Python from Task objects runs to its report."""

import subprocess
import sys
import tomllib

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from test_bad_input import invoke
from transferlab.config import as_toml

EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("example", ["digits_new_classes", "diabetes_by_sex", "csv_example"])
def test_data_examples_run_through_the_cli(tmp_path, example):
    study = tomllib.loads((EXAMPLES / f"{example}.toml").read_text())
    study.update(repeats=2, source_repeats=2)
    study["training"]["epochs"] = 21  # two_stage trains its head for 10, gradual_unfreeze needs 21
    for role in ("source", "target"):
        if "path" in study[role]:
            study[role]["path"] = str(EXAMPLES / study[role]["path"])
    (tmp_path / "study.toml").write_text(as_toml(study))
    code, _, stderr = invoke("run", tmp_path / "study.toml", "--out", tmp_path / "out", "--quiet")
    assert code == 0, stderr
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(summary) == len(study["strategies"]) and summary["n"].min() >= 2
    report = (tmp_path / "out" / "report.html").read_text()
    assert "data fingerprint" in report and "standardisation" in report


def test_the_example_csv_is_what_its_script_makes(tmp_path):
    script = EXAMPLES / "data" / "make_clinics.py"
    copy = tmp_path / "make_clinics.py"
    copy.write_text(script.read_text())
    subprocess.run([sys.executable, str(copy)], check=True, capture_output=True, timeout=120)
    assert (tmp_path / "clinics.csv").read_bytes() == (EXAMPLES / "data" / "clinics.csv").read_bytes()


def test_a_python_study_takes_task_objects(tmp_path):
    from transferlab import Task, reports, study
    from transferlab.loading import study_from_dict

    rng = np.random.default_rng(3)
    x = rng.normal(size=(160, 3))
    species = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "heron", "stork")
    frame = pd.DataFrame(x, columns=["wing", "beak", "leg"]).assign(species=species, site=np.repeat(["lake", "marsh"], 80))
    source = Task.from_frame(frame, target="species", query="site == 'lake'", drop=["site"], name="lake birds")
    target = Task.from_frame(frame, target="species", query="site == 'marsh'", drop=["site"], n_train=30,
                             standardize=source.scaler, name="marsh birds")
    raw = {"name": "birds", "repeats": 2, "source_repeats": 2, "source": source, "target": target,
           "training": {"epochs": 3}, "strategies": [{"name": "standalone"}, {"name": "transfer"}]}
    config = study_from_dict(raw)
    study.run_study(config, tmp_path / "out")
    outputs = reports.build_report(tmp_path / "out")
    assert outputs.directions[0].title == "lake birds → marsh birds"
    html = (tmp_path / "out" / "report.html").read_text()
    for text in ("heron, stork", "wing, beak, leg", "a DataFrame or arrays given in Python", "a given scaler"):
        assert text in html, text
    again = study.run_study(study_from_dict(raw), tmp_path / "out")  # same data: it resumes
    assert again.trained_runs == 0
    alone = study.retrain_run(tmp_path / "out", "target", "transfer freeze=0", 1, 1)  # from the stored arrays
    stored = outputs.directions[0]
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    row = runs[(runs.strategy == "transfer freeze=0") & (runs.source_index == 1) & (runs.repeat == 1)].iloc[0]
    assert abs(float(alone.final["test_accuracy"][0]) - row.test_accuracy) < 1e-6, stored.name
