"""The run-time estimate on the plan line: the work counted run by run, speeds measured by
earlier studies and kept per executor and model size, and the question before a long study
(only at a terminal)."""

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from transferlab import throughput
from transferlab.config import as_toml
from transferlab.loading import study_from_dict
from transferlab.study import plan_study


@pytest.fixture
def plan(small_study_dict):
    return plan_study(study_from_dict(small_study_dict))


def test_the_work_is_every_planned_run_weights_times_rows_and_epochs(plan):
    expected = models = weights = 0
    for direction in plan.directions:
        for run in plan.runs(direction):
            source = run.role == "source"
            arch = (direction.source_recipe if source else direction.recipes[run.strategy.label]).arch
            task = direction.source_task if source else direction.target_task
            size = sum(array.size for arrays in _fresh(arch) for array in arrays)
            expected += plan.training.epochs * (3 * len(task.x_train) + len(task.x_test)) * size
            models, weights = models + 1, weights + size
    assert throughput.work([plan]) == (pytest.approx(expected), weights // models)
    assert throughput.work([plan], 0.25)[0] == pytest.approx(expected / 4)


def _fresh(arch):
    import numpy as np

    from transferlab.models import fresh_weights

    return fresh_weights(arch, np.random.default_rng(0))


def test_a_measured_speed_times_the_same_plan_as_it_ran(tmp_path, plan):
    fixed = throughput.FIXED_SECONDS
    first = throughput.estimate_duration([plan], "local", cache=tmp_path)
    assert not first.measured and first.describe().endswith("(first guess)")
    throughput.record_rate("local", [plan], 0.5, 30.0, cache=tmp_path)  # half the runs in 30 s
    again = throughput.estimate_duration([plan], "local", 0.5, cache=tmp_path)
    assert again.measured and again.seconds == pytest.approx(30.0) and again.describe() == "about 30 s"
    whole = throughput.estimate_duration([plan], "local", cache=tmp_path).seconds
    assert whole == pytest.approx(fixed + 2 * (30.0 - fixed))  # the fixed start once, the work twice
    assert not throughput.estimate_duration([plan], "ray", cache=tmp_path).measured  # per executor
    throughput.record_rate("local", [plan], 1.0, fixed + 0.5, cache=tmp_path)  # mostly start-up: not a speed
    assert throughput.estimate_duration([plan], "local", cache=tmp_path).seconds == pytest.approx(whole)


def test_a_long_study_weighs_more_than_a_short_one_and_older_ones_fade(tmp_path, plan):
    fixed, units = throughput.FIXED_SECONDS, throughput.work([plan])[0]
    throughput.record_rate("local", [plan], 1.0, fixed + 10.0, cache=tmp_path)  # the whole plan in 10 s
    throughput.record_rate("local", [plan], 0.01, fixed + 1.0, cache=tmp_path)  # a hundredth of it in 1 s
    expected = (0.5 * units + 0.01 * units) / (0.5 * 10.0 + 1.0)  # the first halved, the second whole
    assert throughput.measured_rate("local", throughput.work([plan])[1], tmp_path) == pytest.approx(expected)


def test_the_speed_of_the_nearest_model_size_is_used(tmp_path, plan):
    _, size = throughput.work([plan])
    bucket = round(__import__("math").log2(size))
    (tmp_path / throughput.SPEED_FILE).write_text(json.dumps({"local": {str(bucket + 9): 1.0, str(bucket - 1): 1e6}}))
    units, _ = throughput.work([plan])
    estimate = throughput.estimate_duration([plan], "local", cache=tmp_path)
    assert estimate.seconds == pytest.approx(throughput.FIXED_SECONDS + units / 1e6)
    assert estimate.describe().endswith("(timed on models of another size)")  # it says what it assumed


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"local": 3}', '{"local": {"x": "fast"}}',
                                     '{"local": {"4": -1}}'])
def test_a_damaged_speed_file_is_as_if_nothing_was_measured(tmp_path, plan, content):
    (tmp_path / throughput.SPEED_FILE).write_text(content)
    assert not throughput.estimate_duration([plan], "local", cache=tmp_path).measured
    throughput.record_rate("local", [plan], 1.0, 10.0, cache=tmp_path)  # and it is rewritten whole
    assert throughput.estimate_duration([plan], "local", cache=tmp_path).seconds == pytest.approx(10.0)
    assert json.loads((tmp_path / throughput.SPEED_FILE).read_text()).keys() == {"local"}


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (40.4, "40 s"), (89, "89 s"), (95, "2 min"),
                                           (59 * 60, "59 min"), (3600, "1 h"), (3 * 3600 + 610, "3 h 10 min")])
def test_durations_read_as_estimates(seconds, text):
    assert throughput.format_seconds(seconds) == text


def _in_a_terminal(command, env, answer=None, timeout=120):
    """Run `command` with a pseudo-terminal as stdin and stdout; type `answer` when asked."""
    try:
        leader, follower = pty.openpty()
    except OSError as error:
        pytest.skip(f"no pseudo-terminal here ({error})")
    process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    output, deadline = b"", time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        if select.select([leader], [], [], 0.1)[0]:
            try:
                output += os.read(leader, 4096)
            except OSError:
                break
            if answer is not None and b"start it?" in output:
                os.write(leader, answer.encode() + b"\n")
                answer = None
    process.wait(timeout=10)
    os.close(leader)
    return process.returncode, output.decode(errors="replace"), process.stderr.read().decode()


def test_a_study_estimated_over_an_hour_asks_at_a_terminal_and_only_there(tmp_path, small_study_dict):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / throughput.SPEED_FILE).write_text(json.dumps({"local": {"0": 10.0}}))  # a very slow machine
    study_file = tmp_path / "s.toml"
    study_file.write_text(as_toml(small_study_dict))
    out = tmp_path / "out"
    env = dict(os.environ, TRANSFERLAB_CACHE_DIR=str(cache), COLUMNS="200")
    command = [sys.executable, "-m", "transferlab.cli", "run", str(study_file), "--out", str(out)]
    code, shown, err = _in_a_terminal(command, env, answer="n")
    assert code == 2, (shown, err)
    assert "plan: " in shown and " h" in shown and "start it? [y/N]" in shown
    assert err.strip().endswith("small: not started; pass --yes to start it without this question")
    assert not out.exists() or not any(out.iterdir())  # nothing made, no lock left behind


def test_a_long_study_starts_without_a_question_when_not_at_a_terminal(tmp_path, plan, monkeypatch):
    from transferlab.commands import _Timing

    (tmp_path / throughput.SPEED_FILE).write_text(json.dumps({"local": {"0": 10.0}}))
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(tmp_path))
    timing = _Timing([plan], tmp_path / "out", "local")
    assert timing.duration.seconds > throughput.LONG_STUDY_SECONDS and not sys.stdin.isatty()
    timing.confirm("small", yes=False)  # returns: a script or CI job is never stopped by a question
