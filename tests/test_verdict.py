"""The verdict against hand-made cases (clearly better, clearly worse, no detectable
difference), its power calculations against statsmodels, the warnings on constructed
studies, and the p-value and interval formats."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.power import TTestIndPower

from transferlab import stats, verdict


def _runs(groups: dict[str, list[list[float]]]) -> pd.DataFrame:
    """Target runs: per strategy, a list of source models, each a list of run scores
    (standalone: one list, no source model)."""
    rows = []
    for strategy, sources in groups.items():
        for index, scores in enumerate(sources):
            for repeat, score in enumerate(scores):
                rows.append({"role": "target", "status": "done", "strategy": strategy, "repeat": repeat,
                             "source_index": -1 if strategy == "standalone" else index, "test_accuracy": score})
    return pd.DataFrame(rows)


RNG = np.random.default_rng(3)
STANDALONE = [list(0.80 + 0.03 * RNG.standard_normal(20))]


def _sources(mean: float, spread: float, n_sources: int = 10, repeats: int = 3) -> list[list[float]]:
    return [list(mean + spread * RNG.standard_normal() + 0.01 * RNG.standard_normal(repeats)) for _ in range(n_sources)]


@pytest.fixture(scope="module")
def summary():
    runs = _runs({"standalone": STANDALONE, "helps": _sources(0.90, 0.01), "hurts": _sources(0.60, 0.01),
                  "same": _sources(0.80, 0.04)})
    return stats.summary_table(runs, "test_accuracy")


def test_clearly_better_clearly_worse_and_no_detectable_difference(summary):
    found = {f.strategy: f for f in verdict.findings(summary)}
    assert found["helps"].outcome == verdict.BETTER and found["hurts"].outcome == verdict.WORSE
    assert found["same"].outcome == verdict.NO_DIFFERENCE
    assert [f.strategy for f in verdict.findings(summary)] == ["helps", "same", "hurts"]  # ranked by Δ
    lower_better = verdict.findings(summary, higher_is_better=False)  # e.g. a loss: lower scores win
    assert [(f.strategy, f.outcome) for f in lower_better][0] == ("hurts", verdict.BETTER)
    row = summary.set_index("strategy").loc["helps"]
    assert found["helps"].diff == row["diff"] and found["helps"].p_holm == row["p_holm"] < 0.05
    text = verdict.sentence(verdict.findings(summary), summary, "test accuracy")
    assert text.startswith("Helps beat standalone on test accuracy (best: helps, +0.")
    assert "hurts did worse" in text and "same showed no detectable difference" in text


def test_the_detectable_difference_and_units_needed_match_statsmodels(summary):
    found = {f.strategy: f for f in verdict.findings(summary)}["same"]
    rows = summary.set_index("strategy")
    units, base = int(rows.loc["same", "sources"]), int(rows.loc["standalone", "n"])
    s1, s2 = rows.loc["same", "between_source_std"], rows.loc["standalone", "std"]
    pooled = math.sqrt(((units - 1) * s1**2 + (base - 1) * s2**2) / (units + base - 2))
    effect = TTestIndPower().solve_power(nobs1=units, ratio=base / units, alpha=0.05, power=0.8)
    assert found.detectable == pytest.approx(effect * pooled, rel=1e-4)
    for difference, needed in zip(verdict.SMALL_DIFFERENCES, found.needed):
        exact = TTestIndPower().solve_power(effect_size=difference / pooled, ratio=1.0, alpha=0.05, power=0.8)
        assert needed == math.ceil(exact - 1e-9)


def test_power_equals_statsmodels():
    for effect, n1, n2 in ((0.5, 10, 30), (1.2, 4, 4), (0.1, 200, 150)):
        expected = TTestIndPower().power(effect_size=effect, nobs1=n1, ratio=n2 / n1, alpha=0.05)
        assert verdict.power(effect, n1, n2) == pytest.approx(expected, rel=1e-6)


def test_warnings_fire_for_few_source_models_a_poor_source_and_clipped_or_missing_tests():
    runs = _runs({"standalone": STANDALONE, "two sources": [[0.5, 0.9], [0.1, 0.2]], "one unit": [[0.7]]})
    summary = stats.summary_table(runs, "test_accuracy")
    notes = verdict.warnings_for(summary, [(0, 0.95), (1, 0.94), (2, 0.666)], stats.metric_bounds("test_accuracy"))
    assert notes[0].startswith("1 or 2 source models (fewer than 5): the intervals and tests of two sources and "
                               "one unit describe these models")
    assert ("source model 2 scored 0.666 on its own task, far below the others (median 0.945): the strategies "
            "that reuse it inherit a poor start") in notes
    clipped = next(n for n in notes if n.startswith("two sources: the 95% t-interval"))
    assert "leaves the metric's range" in clipped
    assert any(n.startswith("one unit: no test against standalone (1 replication unit;") for n in notes)
    shown = stats.display_table(summary, bounds=(0.0, 1.0)).set_index("strategy")
    assert shown.loc["two sources", "95% CI"] == "[0.000, 1.000]†"
    assert verdict.sentence(verdict.findings(summary), summary, "test accuracy").endswith(
        "One source model: the result holds for this source model only.")
    assert verdict.warnings_for(stats.summary_table(_runs({"standalone": STANDALONE, "ten": _sources(0.8, 0.02)}), "test_accuracy"),
                                [(i, 0.9) for i in range(10)], (0.0, 1.0)) == []


@pytest.mark.parametrize("p, written", [(0.82, "0.82"), (0.011, "0.011"), (0.0026, "0.003"), (0.00049, "< 0.001"),
                                        (1.0, "1"), (0.1, "0.10"), (float("nan"), "")])
def test_p_values_are_written_consistently(p, written):
    assert stats.format_p(p) == written


def test_a_study_with_two_source_models_and_a_poor_one_warns_in_the_terminal_and_the_report(tmp_path):
    """Four epochs leave one of two source models far behind the other on its own task."""
    from test_bad_input import _write, invoke

    study_file = _write(tmp_path, {
        "name": "warned", "seed": 3, "repeats": 3, "source_repeats": 2,
        "source": {"kind": "blobs", "seed": 1, "n_samples": 200, "n_train": 100},
        "target": {"kind": "blobs", "seed": 2, "n_samples": 200, "n_train": 100},
        "training": {"epochs": 4},
        "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 0}],
    })
    code, stdout, stderr = invoke("run", study_file, "--out", tmp_path / "out")
    assert code == 0, stderr
    text = " ".join(stdout.split())
    assert "warning: 2 source models (fewer than 5): the intervals and tests of transfer freeze=0 describe these" in text
    assert re.search(r"warning: source model \d scored 0\.\d{3} on its own task, far below the others", text)
    assert "Only 2 source models: the result describes these models more than transfer from the source task." in text
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Warning: 2 source models (fewer than 5)" in html and 'class="verdict"' in html
