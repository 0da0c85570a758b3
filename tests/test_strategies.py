"""The strategy catalogue: each strategy's initial weights, learning-rate multipliers,
schedules and penalties, checked against the source weights, fresh draws from the run's
seed, hand-computed SGD updates and the engine run in pieces."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from transferlab import engine, layers, models, shards, strategies, tasks
from transferlab.strategies import (
    L2SP,
    Finetune,
    GradualUnfreeze,
    InsertLayer,
    NewHead,
    Reinit,
    Standalone,
    Transfer,
    TwoStage,
)
from transferlab.plan import RunSpec
from transferlab.shards import ShardJob, initial_weights
from transferlab.orders import shuffle_orders

SOURCE = models.mlp(2, (5, 5), 3)
HEAD3 = models.output_layer(3, "softmax")
HEAD5 = models.output_layer(5, "softmax")


@pytest.fixture(scope="module")
def source_weights():
    return models.fresh_weights(SOURCE, np.random.default_rng(42))


@pytest.fixture(scope="module")
def task():
    return tasks.blobs(2, n_samples=200, n_train=96)


def _run(strategy, seed=7):
    return RunSpec("target", strategy, 0, 0, seed)


def _fresh_draw(recipe, seed=7):
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    return models.fresh_weights(recipe.arch, rng)


@pytest.mark.parametrize(
    "strategy, head, origins",
    [
        (Standalone(), HEAD3, (None, None, None)),
        (Transfer(freeze=1), HEAD3, (0, 1, 2)),
        (Transfer(freeze=1), HEAD5, (0, 1, None)),  # the output does not fit: a fresh head
        (Reinit(keep=1), HEAD3, (0, None, None)),
        (Reinit(keep=2, freeze=True), HEAD3, (0, 1, None)),
        (InsertLayer(after=1, units=5), HEAD3, (0, None, 1, 2)),
        (InsertLayer(after=1, units=8), HEAD3, (0, None, None, 2)),  # layer 1's input no longer fits
        (InsertLayer(after=2, units=4), HEAD3, (0, 1, None, None)),
        (NewHead(), HEAD3, (0, 1, None)),
        (NewHead(freeze=2), HEAD5, (0, 1, None)),
        (Finetune(lr=0.1), HEAD3, (0, 1, 2)),
        (TwoStage(head_epochs=2), HEAD3, (0, 1, None)),
        (TwoStage(head_epochs=2, fresh_head=False), HEAD3, (0, 1, 2)),
        (GradualUnfreeze(every=1), HEAD3, (0, 1, 2)),
        (L2SP(), HEAD5, (0, 1, None)),
    ],
    ids=lambda value: getattr(value, "label", None),
)
def test_initial_weights_are_what_the_strategy_says(strategy, head, origins, source_weights):
    recipe = strategy.recipe(SOURCE, head, 10)
    assert recipe.origins == origins
    weights = initial_weights(recipe, _run(strategy), {0: source_weights})
    fresh = _fresh_draw(recipe)
    for layer, origin in enumerate(origins):
        expected = fresh[layer] if origin is None else source_weights[origin]
        for array, wanted in zip(weights[layer], expected):
            assert np.array_equal(array, wanted), (layer, origin)
        assert weights[layer][0].shape == recipe.arch.weight_shapes(layer)[0]
    assert recipe.arch.head.units == head.units


def test_insert_layer_records_which_layers_kept_their_weights():
    recipe = InsertLayer(after=1, units=8, activation="tanh").recipe(SOURCE, HEAD3, 10)
    assert recipe.arch.describe() == "2 → 5 relu → 8 tanh → 5 relu → 3 softmax"
    notes = [row["note"] for row in recipe.record()]
    assert notes[1] == "fresh (inserted layer)"
    assert notes[2] == "re-initialised: its input width changed from 5 to 8"
    assert notes[3] == "from source layer 2"
    assert [row["learning_rate"] for row in recipe.record()] == ["×0", "×1", "×1", "×1"]


def test_multiplier_schedules_switch_at_the_right_epoch():
    two_stage = TwoStage(head_epochs=20, lr=0.1).recipe(SOURCE, HEAD3, 100).multipliers
    assert (two_stage[:20] == [0, 0, 1]).all() and np.allclose(two_stage[20:], 0.1)
    gradual = GradualUnfreeze(every=10).recipe(SOURCE, HEAD3, 30).multipliers
    assert (gradual[:10] == [0, 0, 1]).all() and (gradual[10:20] == [0, 1, 1]).all() and (gradual[20:] == 1).all()
    discriminative = Finetune(lr=0.4, layer_factor=0.5).recipe(SOURCE, HEAD5, 3).multipliers
    assert np.allclose(discriminative, [[0.2, 0.4, 1.0]] * 3)  # the fresh head learns at 1×
    with_bn = Transfer(freeze=1).recipe(models.mlp(2, (5, 5), 3, batch_norm=True), HEAD3, 2).multipliers
    assert (with_bn == [0, 0, 1, 1, 1]).all()  # a hidden layer's BatchNormalization freezes with it
    assert strategies.schedule_text(two_stage[:, 0]) == "×0 for epochs 1–20, ×0.1 for epochs 21–100"


def _job(strategy, task, source_weights, epochs, head=HEAD3, batch_size=32, seed=7):
    recipe = strategy.recipe(SOURCE, head, epochs)
    sgd = engine.TrainingSettings(epochs=epochs, batch_size=batch_size)
    return ShardJob(recipe.arch, task, sgd, [_run(strategy, seed)], {strategy.label: recipe}, {0: source_weights})


@pytest.mark.parametrize("strategy, frozen", [
    (Transfer(freeze=2), [0, 1]),
    (Reinit(keep=1, freeze=True), [0]),
    (InsertLayer(after=1, units=5), [0]),
    (NewHead(freeze=1), [0]),
])
def test_frozen_layers_stay_bit_identical_through_training(strategy, frozen, task, source_weights):
    job = _job(strategy, task, source_weights, 5)
    start, _, _ = job.initial_state()
    result = job.execute()
    for layer, arrays in enumerate(result.weights):
        moved = not all(np.array_equal(a[0], s[0]) for a, s in zip(arrays, start[layer]))
        assert moved == (layer not in frozen), layer


def _train_in_pieces(task, weights, multipliers, orders, sgd):
    """The engine run one schedule piece at a time, each piece continuing from the last."""
    epoch = 0
    current = [tuple(a[None] for a in arrays) for arrays in weights]
    while epoch < len(multipliers):
        stop = epoch + 1
        while stop < len(multipliers) and (multipliers[stop] == multipliers[epoch]).all():
            stop += 1
        piece = engine.TrainingSettings(epochs=stop - epoch, batch_size=sgd.batch_size)
        result = engine.train_models(
            ("relu", "relu", "softmax"), current, multipliers[None, epoch:stop], [0],
            task.x_train, task.y_train, task.x_test, task.y_test, piece, orders=orders[:, epoch:stop],
        )
        current, epoch = result.weights, stop
    return current


@pytest.mark.parametrize("strategy, schedule", [
    (TwoStage(head_epochs=2, lr=0.1), [[0, 0, 1], [0, 0, 1], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1]]),
    (GradualUnfreeze(every=1), [[0, 0, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]]),
], ids=["two_stage", "gradual_unfreeze"])
def test_a_schedule_equals_its_pieces_trained_one_after_another(strategy, schedule, task, source_weights):
    """The whole run equals the engine run piece by piece on a hand-written schedule."""
    job = _job(strategy, task, source_weights, 4)
    start, _, _ = job.initial_state()
    whole = job.execute()
    orders = shuffle_orders([7], 4, len(task.x_train))
    schedule = np.array(schedule, np.float32)
    pieces = _train_in_pieces(task, [tuple(a[0] for a in arrays) for arrays in start], schedule, orders, job.sgd)
    for layer, (a, b) in enumerate(zip(whole.weights, pieces)):
        np.testing.assert_allclose(a[0], b[0], atol=1e-6, rtol=0, err_msg=str(layer))


def test_finetune_moves_each_layer_like_sgd_at_its_rate(task, source_weights):
    """One step of `finetune lr×0.4 layer×0.5` equals SGD at 0.002, 0.004 and 0.01 (the fresh
    5-class head), with the gradient of Keras' own loss taken by jax.grad."""
    batch = tasks.Task("one batch", task.x_train[:32], tasks.one_hot(task.labels_train[:32] % 5, 5),
                       task.x_test, tasks.one_hot(task.labels_test % 5, 5))
    strategy = Finetune(lr=0.4, layer_factor=0.5)
    job = _job(strategy, batch, source_weights, 1, head=HEAD5)
    start, _, _ = job.initial_state()
    result = job.execute()
    initial = [tuple(a[0] for a in arrays) for arrays in start]
    model = models.build_keras_model(job.arch)

    def loss(params):
        predictions, _ = model.stateless_call([v for pair in params for v in pair], [], jnp.asarray(batch.x_train))
        return jnp.mean(keras.losses.categorical_crossentropy(batch.y_train, predictions))

    grads = jax.grad(loss)([tuple(jnp.asarray(a) for a in pair) for pair in initial])
    for layer, rate in enumerate([0.002, 0.004, 0.01]):
        for index in range(2):
            expected = initial[layer][index] - np.float32(rate) * np.asarray(grads[layer][index])
            np.testing.assert_allclose(result.weights[layer][index][0], expected, atol=1e-7, rtol=0)


def test_l2sp_pulls_reused_kernels_to_the_source_and_fresh_ones_to_zero(task, source_weights):
    strategy = L2SP(alpha=0.5, beta=2.0)
    job = _job(strategy, task, source_weights, 1, head=HEAD5)
    _, _, recipes = job.initial_state()
    assert recipes[0].penalties == (0.5, 0.5, 2.0)
    anchors = shards._anchors(job.arch, job.runs, recipes, job.source_weights)
    assert np.array_equal(anchors[0][0], source_weights[0][0]) and np.array_equal(anchors[1][0], source_weights[1][0])
    assert not anchors[2].any()
    # One step (the whole split in one batch) against new_head from the same start: the
    # reused kernels sit on their anchors (no pull yet); the fresh head moves by −lr·β·w.
    five_class = tasks.Task("5 classes", task.x_train, tasks.one_hot(task.labels_train % 5, 5),
                            task.x_test, tasks.one_hot(task.labels_test % 5, 5))
    pulled_job = _job(strategy, five_class, source_weights, 1, head=HEAD5, batch_size=96)
    plain_job = _job(NewHead(), five_class, source_weights, 1, head=HEAD5, batch_size=96)
    start, _, _ = plain_job.initial_state()
    pulled, plain = pulled_job.execute(), plain_job.execute()
    for layer in range(2):
        np.testing.assert_allclose(pulled.weights[layer][0][0], plain.weights[layer][0][0], atol=1e-7)
    extra = -0.01 * 2.0 * start[2][0][0]
    np.testing.assert_allclose(pulled.weights[2][0][0] - plain.weights[2][0][0], extra, atol=1e-7)


@pytest.mark.parametrize("make, parameter, message", [
    (lambda: Transfer(freeze=3).recipe(SOURCE, HEAD3, 10), "freeze", "3 is outside 0..2"),
    (lambda: Reinit(keep=0), "keep", "keep=0 is standalone"),
    (lambda: InsertLayer(activation="cubic"), "activation", "'cubic' is not one of"),
    (lambda: Finetune(lr=0.0), "lr", "must be greater than 0"),
    (lambda: TwoStage(head_epochs=10).recipe(SOURCE, HEAD3, 10), "head_epochs", "leaves no epochs"),
    (lambda: GradualUnfreeze(every=50).recipe(SOURCE, HEAD3, 100), "every", "use every ≤ 49"),
    (lambda: L2SP(alpha=-1.0), "alpha", "must be 0 or more"),
])
def test_bad_parameters_name_themselves(make, parameter, message):
    with pytest.raises(strategies.StrategyError, match=message) as caught:
        make()
    assert caught.value.parameter == parameter


def test_every_strategy_has_docs_and_a_label_with_its_parameters():
    for name, cls in ((cls.name, cls) for cls in strategies.CATALOGUE):
        assert cls.summary and cls.reference and cls.__doc__, name
    assert Finetune(lr=0.1).label == "finetune lr×0.1"
    assert Transfer(freeze=1).label == "transfer freeze=1"
    assert L2SP(alpha=0.1, beta=0.0).label == "l2sp α=0.1 β=0"


def test_a_source_without_hidden_layers():
    single = models.Architecture(2, (layers.Dense(3, "softmax"),))
    assert Transfer().recipe(single, HEAD3, 5).origins == (0,)
    assert GradualUnfreeze(every=1).recipe(single, HEAD3, 5).multipliers.min() == 1.0
    with pytest.raises(strategies.StrategyError, match="no layer the target can reuse"):
        Finetune().recipe(single, HEAD5, 5)


def test_strategies_with_different_parameters_never_share_a_label():
    from transferlab.strategies import Finetune, L2SP

    assert Finetune(lr=0.1).label == "finetune lr×0.1"  # short where exact: existing labels and seeds stay
    assert Finetune(lr=0.1000001).label == "finetune lr×0.1000001"
    assert L2SP(alpha=1 / 3).label != L2SP(alpha=0.333333).label
