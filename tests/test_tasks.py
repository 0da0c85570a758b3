import numpy as np
import pytest
from sklearn.datasets import make_blobs

from transferlab import tasks


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
def test_blobs_equal_make_blobs(seed):
    x, labels = make_blobs(n_samples=1000, centers=3, n_features=2, cluster_std=2, random_state=seed)
    task = tasks.blobs(seed)
    np.testing.assert_array_equal(task.x_train, x[:500].astype(np.float32))
    np.testing.assert_array_equal(task.x_test, x[500:].astype(np.float32))
    np.testing.assert_array_equal(task.labels_train, labels[:500])
    np.testing.assert_array_equal(task.labels_test, labels[500:])
    assert task.y_train.shape == (500, 3) and set(np.unique(task.y_train)) == {0.0, 1.0}
    np.testing.assert_array_equal(task.y_train.sum(axis=1), 1.0)


def test_blobs_parameters_are_passed_through():
    x, labels = make_blobs(n_samples=300, centers=4, n_features=5, cluster_std=0.5, random_state=9)
    task = tasks.blobs(9, n_samples=300, centers=4, n_features=5, cluster_std=0.5, n_train=200)
    np.testing.assert_array_equal(task.x_test, x[200:].astype(np.float32))
    assert task.n_features == 5 and task.n_outputs == 4 and len(task.x_train) == 200
    np.testing.assert_array_equal(task.labels_test, labels[200:])


def test_nan_in_data_names_task_array_and_row():
    x = np.zeros((10, 2), np.float32)
    x[7, 1] = np.nan
    y = tasks.one_hot(np.zeros(10, int), 2)
    with pytest.raises(tasks.TaskError, match=r"'mine'.*x_train.*row 7"):
        tasks.Task("mine", x, y, x.copy() * 0, y)


def test_mismatched_rows_are_refused():
    x = np.zeros((10, 2), np.float32)
    y = tasks.one_hot(np.zeros(9, int), 2)
    with pytest.raises(tasks.TaskError, match="10 rows but y_train has 9"):
        tasks.Task("mine", x, y, x, y)


def test_regression_equals_make_regression_standardised_on_the_train_split():
    from sklearn.datasets import make_regression

    task = tasks.regression(5, n_samples=300, n_features=3, noise=2.0, n_train=200)
    x, y = make_regression(n_samples=300, n_features=3, n_informative=3, noise=2.0, random_state=5)
    np.testing.assert_array_equal(task.x_train, x[:200].astype(np.float32))
    expected = (y - y[:200].mean()) / y[:200].std()
    np.testing.assert_allclose(task.y_test[:, 0], expected[200:], rtol=1e-6)
    assert task.kind == "regression" and task.score == "test_r2"
    assert abs(task.y_train.mean()) < 1e-6 and abs(task.y_train.std() - 1) < 1e-5
    other = tasks.regression(6, n_samples=300, n_features=3, n_train=200)
    assert not np.allclose(other.y_train, task.y_train)  # another seed, other coefficients
