"""Study-file validation: every error is one line naming the file and the field."""

import subprocess
import sys

import pytest

from transferlab.errors import StudyFileError
from transferlab.api import load_study
from transferlab.loading import study_from_dict

TUTORIAL = """
name = "t"
repeats = 2
[source]
seed = 1
[target]
seed = 2
[[strategies]]
name = "standalone"
"""


def _write(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def _error(tmp_path, text) -> str:
    with pytest.raises(StudyFileError) as caught:
        load_study(_write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "study.toml"))
    return message


def test_examples_load_and_are_the_tutorial(tmp_path):
    from conftest import ROOT

    config = load_study(ROOT / "examples" / "tutorial.toml")
    assert (config.repeats, config.source_repeats, config.source.seed, config.target.seed) == (30, 1, 1, 2)
    assert [s.label for s in config.strategy_values()] == [
        "standalone", "transfer freeze=0", "transfer freeze=1", "transfer freeze=2"]
    assert config.training.settings().learning_rate == 0.01 and config.training.batch_size == 32
    assert config.model.hidden == [5, 5] and config.model.kernel_initializer == "he_uniform"
    sources = load_study(ROOT / "examples" / "tutorial_sources.toml")
    assert sources.source_repeats == 10
    assert sources.model_dump(exclude={"name", "source_repeats"}) == config.model_dump(exclude={"name", "source_repeats"})


def test_packaged_demo_study_is_the_example():
    from importlib import resources

    from conftest import ROOT

    for name in ("tutorial.toml", "tutorial_sources.toml"):
        packaged = (resources.files("transferlab") / "examples" / name).read_text()
        assert packaged == (ROOT / "examples" / name).read_text()


def test_unknown_strategy_lists_the_valid_ones(tmp_path):
    message = _error(tmp_path, TUTORIAL.replace('"standalone"', '"fine_tune"'))
    assert "strategies[0].name: unknown strategy 'fine_tune'" in message
    assert "standalone" in message and "transfer (freeze = 0)" in message


def test_missing_field(tmp_path):
    assert "target.seed: missing" in _error(tmp_path, TUTORIAL.replace("[target]\nseed = 2", "[target]"))
    assert "name: missing" in _error(tmp_path, TUTORIAL.replace('name = "t"', ""))


def test_wrong_type(tmp_path):
    message = _error(tmp_path, TUTORIAL.replace("repeats = 2", 'repeats = "many"'))
    assert "repeats: Input should be a valid integer" in message and "'many'" in message
    message = _error(tmp_path, TUTORIAL + '[[strategies]]\nname = "transfer"\nfreeze = "one"\n')
    assert "strategies[1].freeze: Input should be a valid integer, got str 'one'" in message  # pydantic's own


def test_freeze_larger_than_hidden_layers(tmp_path):
    message = _error(tmp_path, TUTORIAL + '[[strategies]]\nname = "transfer"\nfreeze = 3\n')
    assert "strategies[1].freeze: 3 is outside 0..2 (the source has 2 hidden layers)" in message


def test_unknown_field_and_parameter(tmp_path):
    assert "training.epoch: unknown field" in _error(tmp_path, TUTORIAL + "[training]\nepoch = 3\n")
    message = _error(tmp_path, TUTORIAL + '[[strategies]]\nname = "transfer"\nfrozen = 1\n')
    assert "strategies[1].frozen: transfer has no parameter 'frozen' (its parameters: freeze, head)" in message


def test_bad_toml_and_missing_file(tmp_path):
    assert "not valid TOML" in _error(tmp_path, "name = ")
    with pytest.raises(StudyFileError, match="nope.toml: study file not found"):
        load_study(tmp_path / "nope.toml")


def test_duplicate_strategy_and_bad_split(tmp_path):
    assert "repeats strategies[0]" in _error(tmp_path, TUTORIAL + '[[strategies]]\nname = "standalone"\n')
    message = _error(tmp_path, TUTORIAL.replace("seed = 2", "seed = 2\nn_samples = 100\nn_train = 100"))
    assert "target: n_train (100) must be smaller than n_samples (100)" in message


def test_model_file_study_needs_one_source(tmp_path):
    raw = {"name": "f", "source_repeats": 2, "source": {"model_file": "m.keras"}, "target": {"seed": 2},
           "strategies": [{"name": "standalone"}]}
    with pytest.raises(StudyFileError, match="source_repeats: a study that names source.model_file"):
        study_from_dict(raw)


def test_cli_prints_one_line_and_no_traceback(tmp_path):
    path = _write(tmp_path, TUTORIAL + '[[strategies]]\nname = "transfer"\nfreeze = 5\n')
    result = subprocess.run([sys.executable, "-m", "transferlab.cli", "run", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert lines == [f"error: {path}: strategies[1].freeze: 5 is outside 0..2 (the source has 2 hidden layers)"]
    assert "Traceback" not in result.stderr + result.stdout


def test_model_layers_dropout_and_output_rules(tmp_path):
    from transferlab import tasks
    from transferlab.plan import architecture, head_for

    message = _error(tmp_path, TUTORIAL + '[model]\nlayers = [{ type = "conv3d", filters = 3 }]\n')
    assert "study.toml: model: layers[0].type: 'conv3d' is not a layer type; use one of dense" in message
    message = _error(tmp_path, TUTORIAL + '[model]\nhidden = [4]\nlayers = [{ type = "dense", units = 3 }]\n')
    assert "give either layers or hidden" in message
    message = _error(tmp_path, TUTORIAL + "[model]\ndropout = 1.0\n")
    assert "model.dropout: Input should be less than 1" in message
    dropped = load_study(_write(tmp_path, TUTORIAL + "[model]\ndropout = 0.3\nbatch_norm = true\n"))
    assert architecture(dropped, 2, head_for(dropped, tasks.blobs(1))).describe() == (
        "2 → 5 relu → BN → dropout 0.3 → 5 relu → BN → dropout 0.3 → 3 softmax")
    config = load_study(_write(tmp_path, TUTORIAL + '[model]\nlayers = [{ type = "dense", units = 7 }, '
                                                   '{ type = "activation", activation = "tanh" }]\n'))
    three, two = tasks.blobs(1), tasks.blobs(1, centers=2)
    arch = architecture(config, 2, head_for(config, three))
    assert arch.describe() == "2 → 7 linear → tanh → 3 softmax" and arch.n_hidden == 1
    assert head_for(config, two).units == 1 and head_for(config, two).activation == "sigmoid"
    softmax = load_study(_write(tmp_path, TUTORIAL + '[model]\noutput_activation = "softmax"\n'))
    assert head_for(softmax, two).units == 2


def test_memory_budget_chooses_the_shard_size(tmp_path):
    from transferlab import estimate, study
    from transferlab.config import ExecutionConfig

    assert "execution.memory: 'lots' is not a size; write it like" in _error(tmp_path, TUTORIAL + '[execution]\nmemory = "lots"\n')
    config = study_from_dict({"name": "big", "seed": 1, "repeats": 3000, "source": {"seed": 1}, "target": {"seed": 2},
                              "strategies": [{"name": "standalone"}]})
    plan = study.plan_study(config)
    small, large = (estimate.shard_size_for(plan, ExecutionConfig(memory=m)) for m in ("1.2 GB", "64 GB"))
    assert 1 <= small < large == estimate.DEFAULT_SHARD_CEILING
    assert estimate.estimate(plan, small).peak_bytes <= 1.2e9 < estimate.estimate(plan, small * 2).peak_bytes
    assert estimate.shard_size_for(plan, ExecutionConfig(shard_size=7, memory="1 GB")) == 7
