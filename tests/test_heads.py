"""Output units matched to classes by name: the rule (`heads.match_head`), the weights a
matched head starts from (against a Keras model built by hand), a permuted target that
gives the source order's numbers, and the notes the terminal and report show."""

import numpy as np
import pandas as pd
import pytest

from transferlab import Task, heads, loading, models, study
from transferlab.config import StudyConfig
from transferlab.heads import BY_NAME, BY_POSITION, Classes, match_head
from transferlab.shards import initial_weights
from transferlab.plan import RunSpec

SOFTMAX3 = models.output_layer(3, "softmax")
SIGMOID = models.output_layer(1, "sigmoid")


@pytest.mark.parametrize("source, target, reuse, units, negated", [
    (("A", "B", "C"), ("A", "B", "C"), "whole", None, False),
    (("A", "B", "C"), ("C", "A", "B"), "mapped", (2, 0, 1), False),
    (("A", "B", "C"), ("A", "C", "D"), "mapped", (0, 2, None), False),
    (("A", "B", "C"), ("x", "y", "z"), "fresh", None, False),
])
def test_softmax_units_follow_the_class_names(source, target, reuse, units, negated):
    match = match_head(SOFTMAX3, SOFTMAX3, Classes(source, target), BY_NAME, 2)
    assert (match.reuse, match.units, match.negated) == (reuse, units, negated)


def test_the_notes_name_both_class_lists():
    fresh = match_head(SIGMOID, SIGMOID, Classes(("female", "male"), ("0", "1")))
    assert fresh.reuse == "fresh" and "(female, male)" in fresh.note and "(0, 1)" in fresh.note
    partial = match_head(SOFTMAX3, SOFTMAX3, Classes(("A", "B", "C"), ("A", "C", "D")), BY_NAME, 2)
    assert partial.note == ("from source layer 2, units matched by class name: A ← source unit 0, C ← source unit 2, "
                            "D fresh; source class B dropped")


def test_a_sigmoid_unit_is_kept_negated_or_fresh():
    assert match_head(SIGMOID, SIGMOID, Classes(("no", "yes"), ("no", "yes"))).reuse == "whole"
    swapped = match_head(SIGMOID, SIGMOID, Classes(("no", "yes"), ("yes", "no")))
    assert (swapped.reuse, swapped.units, swapped.negated) == ("mapped", (0,), True)
    assert match_head(SIGMOID, SIGMOID, Classes(("no", "yes"), ("no", "maybe"))).reuse == "fresh"


def test_by_position_and_unknown_source_classes_reuse_by_position_and_say_so():
    forced = match_head(SOFTMAX3, SOFTMAX3, Classes(("A", "B", "C"), ("x", "y", "z")), BY_POSITION, 2)
    assert forced.reuse == "whole" and "by_position" in forced.note and "unit 0 → x" in forced.note
    unknown = match_head(SOFTMAX3, SOFTMAX3, Classes(None, ("x", "y", "z")), BY_NAME, 2)
    assert unknown.reuse == "whole" and "class names are unknown" in unknown.note
    regression = models.output_layer(1, "linear")
    assert match_head(regression, regression, Classes(None, None)).reuse == "whole"


def _frame(seed: int, labels: tuple[str, ...], rows: int = 150) -> pd.DataFrame:
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=rows, centers=len(labels), n_features=3, cluster_std=1.5, random_state=seed)
    return pd.DataFrame(x, columns=["a", "b", "c"]).assign(kind=np.array(labels)[y])


def _study(source: Task, target: Task, **extra) -> StudyConfig:
    raw = {"name": "heads", "seed": 4, "repeats": 2, "source": source, "target": target,
           "training": {"epochs": 3}, "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 0},
                                                     {"name": "l2sp", "alpha": 0.1}], **extra}
    return loading.study_from_dict(raw)


@pytest.fixture(scope="module")
def permuted(tmp_path_factory):
    """One source; the same target rows with their classes in the source's order and permuted."""
    source = Task.from_frame(_frame(1, ("A", "B", "C")), "kind", split="first", name="source")
    target = _frame(2, ("A", "B", "C"))
    in_order = Task.from_frame(target, "kind", split="first", classes=["A", "B", "C"], name="target")
    shuffled = Task.from_frame(target, "kind", split="first", classes=["C", "A", "B"], name="target")
    root = tmp_path_factory.mktemp("heads")
    for name, task in (("order", in_order), ("permuted", shuffled)):
        study.run_study(_study(source, task), root / name)
    return root


def test_a_permuted_target_gives_the_source_orders_numbers(permuted):
    import transferlab

    order, shuffled = (transferlab.results(permuted / name)["runs"] for name in ("order", "permuted"))
    reused = order["strategy"] != "standalone"
    for column in ("test_accuracy", "test_loss", "train_loss"):
        np.testing.assert_allclose(shuffled.loc[reused, column], order.loc[reused, column], rtol=1e-5, atol=1e-6)


def test_the_permuted_head_starts_from_the_source_rows_permuted(permuted):
    from transferlab.store import Store

    plans = {}
    for name in ("order", "permuted"):
        with Store.in_folder(permuted / name, readonly=True) as store:
            _, plans[name] = store.stored_plan()
    order_recipe = plans["order"].directions[0].recipes["transfer freeze=0"]
    permuted_recipe = plans["permuted"].directions[0].recipes["transfer freeze=0"]
    assert order_recipe.head_units is None and permuted_recipe.head_units == (2, 0, 1)
    rng = np.random.default_rng(0)
    source = [(rng.normal(size=shape).astype(np.float32), rng.normal(size=shape[-1:]).astype(np.float32))
              for shape in [(3, 5), (5, 5), (5, 3)]]
    run = plans["order"].runs(plans["order"].directions[0])[-1]
    kernel, bias = initial_weights(permuted_recipe, run, {run.source_index: source})[-1]
    np.testing.assert_array_equal(kernel, source[2][0][:, [2, 0, 1]])
    np.testing.assert_array_equal(bias, source[2][1][[2, 0, 1]])


def test_a_partly_shared_class_set_reuses_exactly_the_shared_units(tmp_path):
    """Source classes A, B, C; target A, C, D: weight by weight against a Keras model whose
    output layer is assembled by hand from the saved source model and the run's fresh draw."""
    import keras

    source = Task.from_frame(_frame(1, ("A", "B", "C")), "kind", split="first", name="source")
    target = Task.from_frame(_frame(2, ("A", "C", "D")), "kind", split="first", name="target")
    cfg = _study(source, target)
    plan = study.plan_study(cfg)
    direction = plan.directions[0]
    recipe = direction.recipes["transfer freeze=0"]
    assert recipe.head_units == (0, 2, None) and "D fresh; source class B dropped" in recipe.notes[-1]
    assert "units matched by class name" in direction.notice
    study.run_study(plan, tmp_path / "out")
    saved = keras.saving.load_model(next((tmp_path / "out" / "sources").glob("*.keras")), safe_mode=True)
    source_weights = {0: [tuple(layer.get_weights()) for layer in saved.layers]}
    run = next(r for r in plan.runs(direction) if r.strategy.label == "transfer freeze=0")
    started = initial_weights(recipe, run, source_weights)
    fresh = models.fresh_weights(recipe.arch, np.random.default_rng(np.random.SeedSequence(run.seed, spawn_key=(0,))))
    by_hand = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5, "relu"), keras.layers.Dense(5, "relu"),
                                keras.layers.Dense(3, "softmax")])
    head_kernel, head_bias = saved.layers[2].get_weights()
    kernel = np.stack([head_kernel[:, 0], head_kernel[:, 2], fresh[2][0][:, 2]], axis=1)
    bias = np.array([head_bias[0], head_bias[2], fresh[2][1][2]])
    by_hand.set_weights([*saved.layers[0].get_weights(), *saved.layers[1].get_weights(), kernel, bias])
    for ours, theirs in zip([a for layer in started for a in layer], by_hand.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_by_position_is_a_study_or_strategy_choice_shown_in_the_label():
    source = Task.from_frame(_frame(1, ("female", "male"), 80), "kind", split="first", name="source")
    target = Task.from_frame(_frame(2, ("0", "1"), 80), "kind", split="first", name="target")
    by_name = study.plan_study(_study(source, target))
    assert "no class name is shared between the source (female, male) and the target (0, 1)" in \
        by_name.directions[0].notice
    forced = study.plan_study(_study(source, target, head="by_position"))
    labels = [s.label for s in forced.directions[0].strategies]
    assert labels == ["standalone", "transfer freeze=0 head by position", "l2sp α=0.1 β=0.01 head by position"]
    assert "reused by position" in forced.directions[0].notice
    one = study.plan_study(_study(source, target, strategies=[
        {"name": "transfer", "freeze": 0}, {"name": "transfer", "freeze": 0, "head": "by_position"}]))
    assert one.directions[0].recipes["transfer freeze=0"].notes[-1].startswith("fresh output layer")
    assert heads.BY_POSITION in one.directions[0].recipes["transfer freeze=0 head by position"].notes[-1]


def test_a_swapped_sigmoid_head_starts_negated_and_predicts_the_same_class():
    """Target classes (yes, no) against the source's (no, yes): the unit is negated, so the
    reused model gives each row the same class as the source model."""
    from transferlab.strategies import Transfer

    source_arch = models.mlp(3, (4,), 1, output_activation="sigmoid")
    head = models.output_layer(1, "sigmoid")
    recipe = Transfer(freeze=0).recipe(source_arch, head, 2, 3, Classes(("no", "yes"), ("yes", "no")))
    assert recipe.head_units == (0,) and recipe.head_negated and "negated" in recipe.head_notice
    rng = np.random.default_rng(1)
    source = models.fresh_weights(source_arch, rng)
    run = RunSpec("target", Transfer(freeze=0), 0, 0, 7)
    started = initial_weights(recipe, run, {0: source})
    np.testing.assert_array_equal(started[-1][0], -source[-1][0])
    np.testing.assert_array_equal(started[-1][1], -source[-1][1])
    x = rng.normal(size=(50, 3)).astype(np.float32)

    def positive(weights):  # P(the task's second class) > 0.5
        hidden = np.maximum(x @ weights[0][0] + weights[0][1], 0)
        return hidden @ weights[1][0] + weights[1][1] > 0

    source_says_yes = positive(source)
    target_says_no = positive(started)  # the target's second class is "no"
    np.testing.assert_array_equal(target_says_no, ~source_says_yes)
