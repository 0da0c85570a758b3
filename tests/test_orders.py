"""Row orders: drawn on worker threads, a chunk ahead, only where they train, and still
exactly each seed's own NumPy draws."""

import numpy as np
import pytest

from transferlab import engine, models, orders, tasks


def plain_orders(seed, epochs, n_rows):
    """The definition, written out: the seed's generator permutes each epoch's row numbers."""
    generator = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    return generator.permuted(np.broadcast_to(np.arange(n_rows, dtype=np.int16), (epochs, n_rows)), axis=-1)


def test_shuffle_orders_are_each_seeds_own_draws():
    drawn = orders.shuffle_orders([3, 11, 3], 5, 37)
    assert drawn.dtype == np.int16 and drawn.shape == (3, 5, 37)
    for model, seed in enumerate([3, 11, 3]):
        np.testing.assert_array_equal(drawn[model], plain_orders(seed, 5, 37))
    assert orders.shuffle_orders([1], 2, 40_000).dtype == np.int32


@pytest.mark.parametrize("chunks", [[(8, 8)], [(4, 4), (4, 3)], [(2, 2), (2, 2), (2, 2), (2, 1), (2, 0)]])
def test_a_stream_hands_out_the_same_draws_in_any_chunks(chunks):
    seeds, n_rows, width, columns = [5, 6, 7], 30, 40, 4
    stream = orders.OrderStream(seeds, n_rows, chunks, width=width, columns=columns)
    handed = [stream.next() for _ in chunks]
    with pytest.raises(RuntimeError, match="handed out"):
        stream.next()
    expected = orders.shuffle_orders(seeds, sum(drawn for _, drawn in chunks), n_rows)  # (models, epochs, rows)
    epoch = 0
    for (size, drawn), chunk in zip(chunks, handed):
        assert chunk.shape == (size, width, columns) and chunk.dtype == np.int16
        real = chunk[:drawn, :n_rows, : len(seeds)]
        np.testing.assert_array_equal(np.moveaxis(real, -1, 0), expected[:, epoch : epoch + drawn])
        assert not chunk[drawn:].any() and not chunk[:, n_rows:].any()  # padding: row 0, never drawn
        np.testing.assert_array_equal(chunk[..., len(seeds)], chunk[..., 0])  # a filler model copies model 0
        epoch += drawn


def test_a_closed_stream_stops_drawing():
    stream = orders.OrderStream([1, 2], 100, [(4, 4)] * 50)
    stream.next()
    stream.close()
    assert stream.pending is None
    with pytest.raises(RuntimeError):
        stream.next()


def test_the_engine_trains_on_the_seeds_draws_over_several_blocks_and_a_padded_chunk():
    """70 models (two blocks, the second with filler models), 20 epochs (a chunk of 16 and
    one of 4 drawn + 12 skipped): each seed's stream gives what its explicit orders give."""
    problem = tasks.blobs(2)
    arch = models.mlp(2, (5, 5), 3)
    rng = np.random.default_rng(0)
    initial = [models.fresh_weights(arch, rng) for _ in range(70)]
    stacked = [tuple(np.stack([w[layer][i] for w in initial]) for i in range(2)) for layer in range(3)]
    seeds, epochs = list(range(100, 170)), 20
    multipliers = np.ones((70, epochs, 3), np.float32)
    common = dict(x_train=problem.x_train, y_train=problem.y_train, x_test=problem.x_test, y_test=problem.y_test,
                  config=engine.TrainingSettings(epochs=epochs))
    activations = tuple(layer.activation for layer in arch.layers)
    streamed = engine.train_models(activations, stacked, multipliers, seeds, **common)
    given = engine.train_models(activations, stacked, multipliers, seeds, **common,
                                orders=orders.shuffle_orders(seeds, epochs, len(problem.x_train)))
    for name in streamed.curves:
        np.testing.assert_array_equal(streamed.curves[name], given.curves[name], err_msg=name)
    for name in streamed.final:
        np.testing.assert_array_equal(streamed.final[name], given.final[name], err_msg=name)
    for trained, reference in zip(streamed.weights, given.weights):
        for a, b in zip(trained, reference):
            np.testing.assert_array_equal(a, b)
