"""Transferability scores against independent computations: the definitions written as
loops, LogME's evidence maximised by SciPy, H-score by its matrix formula, the shrinkage
by scikit-learn, GBC's coefficients by numerical integration, TransRate by eigenvalues."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, optimize
from scipy import stats as scipy_stats
from sklearn.covariance import LedoitWolf

from transferlab import scores
from transferlab.errors import ScoreInputError


def _problem(seed: int, rows: int = 120, features: int = 6, classes: int = 3, source_classes: int = 4):
    """Features that carry the labels (plus noise) and a softmax source head."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(classes), rng.integers(0, classes, rows - classes)])
    f = rng.normal(size=(rows, features)) + 0.8 * rng.normal(size=(classes, features))[labels]
    logits = rng.normal(size=(rows, source_classes)) + 1.2 * (labels[:, None] % source_classes
                                                                == np.arange(source_classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return f, labels, probs


PROBLEMS = [_problem(0), _problem(1, rows=80, features=3, classes=2, source_classes=2),
            _problem(2, rows=200, features=10, classes=5, source_classes=3)]


# --- LEEP and NCE from their definitions ------------------------------------------------


def _leep_loops(probs, labels) -> float:
    n, z_count = probs.shape
    classes = sorted(set(labels.tolist()))
    joint = {(y, z): sum(probs[i, z] for i in range(n) if labels[i] == y) / n for y in classes for z in range(z_count)}
    marginal = {z: sum(joint[y, z] for y in classes) for z in range(z_count)}
    total = 0.0
    for i in range(n):
        total += math.log(sum(probs[i, z] * joint[labels[i], z] / marginal[z] for z in range(z_count)))
    return total / n


def _nce_loops(probs, labels) -> float:
    n = len(labels)
    z_of = [int(np.argmax(row)) for row in probs]
    joint, marginal = {}, {}
    for y, z in zip(labels.tolist(), z_of):
        joint[y, z] = joint.get((y, z), 0.0) + 1 / n
        marginal[z] = marginal.get(z, 0.0) + 1 / n
    return sum(p * math.log(p / marginal[z]) for (y, z), p in joint.items())


@pytest.mark.parametrize("problem", PROBLEMS)
def test_leep_and_nce_equal_their_definitions(problem):
    _, labels, probs = problem
    assert scores.leep(probs, labels) == pytest.approx(_leep_loops(probs, labels), rel=1e-12)
    assert scores.nce(probs, labels) == pytest.approx(_nce_loops(probs, labels), rel=1e-12)


def test_a_sigmoid_column_is_read_as_two_class_probabilities():
    _, labels, probs = PROBLEMS[1]
    p = probs[:, 1:]
    assert scores.leep(p, labels) == pytest.approx(_leep_loops(np.hstack([1 - p, p]), labels), rel=1e-12)


# --- LogME: the fixed point is the maximum of the evidence ------------------------------


def _log_evidence(f, y, log_alpha, log_beta) -> float:
    """ln p(y | f, α, β) of Bayesian linear regression, written with the D × D matrix."""
    alpha, beta = math.exp(log_alpha), math.exp(log_beta)
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, log_det = np.linalg.slogdet(a)
    return (d / 2 * log_alpha + n / 2 * log_beta - beta / 2 * np.sum((y - f @ m) ** 2) - alpha / 2 * m @ m
            - log_det / 2 - n / 2 * math.log(2 * math.pi))


def _maximised_evidence(f, y) -> float:
    best = -math.inf
    for start in itertools.product((-4.0, 0.0, 4.0), (-2.0, 0.0, 2.0)):
        found = optimize.minimize(lambda v: -_log_evidence(f, y, *v), start, method="Nelder-Mead",
                                  options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20_000})
        best = max(best, -found.fun)
    return best


@pytest.mark.parametrize("problem", PROBLEMS[:2])
def test_logme_is_the_maximised_evidence_per_class_column(problem):
    f, labels, _ = problem
    columns = [(labels == c).astype(float) for c in np.unique(labels)]
    expected = np.mean([_maximised_evidence(f, y) / len(f) for y in columns])
    got = scores.logme(f, labels)
    assert got == pytest.approx(expected, abs=1e-7)
    assert got >= expected - 1e-9  # no (α, β) SciPy finds does better


def test_logme_regression_is_per_target_and_ignores_zero_columns():
    f, _, _ = PROBLEMS[0]
    rng = np.random.default_rng(5)
    targets = np.stack([f @ rng.normal(size=f.shape[1]) + rng.normal(size=len(f)), rng.normal(size=len(f))], axis=1)
    expected = np.mean([_maximised_evidence(f, y) / len(f) for y in targets.T])
    assert scores.logme(f, targets, regression=True) == pytest.approx(expected, abs=1e-7)
    padded = np.hstack([f, np.zeros((len(f), 2))])  # dead units add prior directions that integrate out
    assert scores.logme(padded, targets, regression=True) == pytest.approx(expected, abs=1e-7)


# --- H-score, its shrinkage form, GBC and TransRate -------------------------------------


@pytest.mark.parametrize("problem", PROBLEMS)
def test_h_score_is_its_matrix_formula(problem):
    f, labels, _ = problem
    centred = f - f.mean(axis=0)
    cov_f = centred.T @ centred / (len(f) - 1)
    means = {c: f[labels == c].mean(axis=0) for c in np.unique(labels)}
    g = np.stack([means[c] for c in labels]) - f.mean(axis=0)
    cov_g = g.T @ g / (len(f) - 1)
    assert scores.h_score(f, labels) == pytest.approx(np.trace(np.linalg.pinv(cov_f) @ cov_g), rel=1e-10)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_the_shrinkage_is_scikit_learns_ledoit_wolf(problem):
    f, labels, _ = problem
    fitted = LedoitWolf().fit(f)
    shrunk, alpha = scores.ledoit_wolf(f)
    assert alpha == pytest.approx(fitted.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(shrunk, fitted.covariance_, rtol=1e-10, atol=1e-14)
    centred = f - f.mean(axis=0)
    g = np.stack([centred[labels == c].mean(axis=0) for c in labels])
    expected = np.trace(np.linalg.pinv(fitted.covariance_) @ ((1 - fitted.shrinkage_) * np.cov(g, rowvar=False)))
    assert scores.regularized_h_score(f, labels) == pytest.approx(expected, rel=1e-10)


def _bhattacharyya_coefficient(mean_a, sd_a, mean_b, sd_b) -> float:
    """∫ √(p q) per feature, numerically: diagonal Gaussians factor over features."""
    coefficient = 1.0
    for ma, sa, mb, sb in zip(mean_a, sd_a, mean_b, sd_b):
        lo, hi = min(ma - 12 * sa, mb - 12 * sb), max(ma + 12 * sa, mb + 12 * sb)
        value, _ = integrate.quad(lambda x: math.sqrt(scipy_stats.norm.pdf(x, ma, sa) * scipy_stats.norm.pdf(x, mb, sb)),
                                  lo, hi, points=[ma, mb], limit=200, epsabs=1e-13)
        coefficient *= value
    return coefficient


@pytest.mark.parametrize("problem", PROBLEMS[:2])
def test_gbc_sums_bhattacharyya_coefficients_integrated_by_scipy(problem):
    f, labels, _ = problem
    classes = np.unique(labels)
    stats_of = {c: (f[labels == c].mean(axis=0), np.sqrt(np.maximum(f[labels == c].var(axis=0), 1e-4)))
                for c in classes}
    expected = -sum(_bhattacharyya_coefficient(*stats_of[a], *stats_of[b])
                    for a in classes for b in classes if a != b)
    assert scores.gbc(f, labels) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_transrate_is_its_log_determinant_formula(problem):
    f, labels, _ = problem
    eps = 1e-3

    def rate(z):  # ½ log det(I + zᵀz/(nε)) from the eigenvalues of zᵀz
        return 0.5 * np.sum(np.log1p(np.linalg.eigvalsh(z.T @ z) / (len(z) * eps)))

    centred = f - f.mean(axis=0)
    classes = np.unique(labels)
    expected = rate(centred) - np.mean([rate(centred[labels == c]) for c in classes])
    assert scores.transrate(f, labels, eps) == pytest.approx(expected, rel=1e-9)


# --- invariances ------------------------------------------------------------------------


def _all_scores(f, labels, probs) -> dict[str, float]:
    return {"leep": scores.leep(probs, labels), "nce": scores.nce(probs, labels), "logme": scores.logme(f, labels),
            "h_score": scores.h_score(f, labels), "regularized_h_score": scores.regularized_h_score(f, labels),
            "gbc": scores.gbc(f, labels), "transrate": scores.transrate(f, labels)}


@pytest.mark.parametrize("problem", PROBLEMS)
def test_renaming_the_classes_changes_no_score(problem):
    f, labels, probs = problem
    classes = np.unique(labels)
    renamed = np.array([10, 3, 7, 0, 42])[np.searchsorted(classes, labels)]  # another order and other names
    before, after = _all_scores(f, labels, probs), _all_scores(f, renamed, probs)
    for name in scores.SCORES:
        assert after[name] == pytest.approx(before[name], rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize("problem", PROBLEMS)
def test_duplicating_every_row_leaves_leep_nce_and_h_score_unchanged(problem):
    f, labels, probs = problem
    twice = (np.vstack([f, f]), np.concatenate([labels, labels]), np.vstack([probs, probs]))
    assert scores.leep(twice[2], twice[1]) == pytest.approx(scores.leep(probs, labels), rel=1e-12)
    assert scores.nce(twice[2], twice[1]) == pytest.approx(scores.nce(probs, labels), rel=1e-12)
    assert scores.h_score(twice[0], twice[1]) == pytest.approx(scores.h_score(f, labels), rel=1e-9)


def test_better_separated_features_score_higher():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 40)
    noise = rng.normal(size=(120, 4))
    centres = rng.normal(size=(3, 4))
    weak, strong = noise + 0.3 * centres[labels], noise + 3.0 * centres[labels]
    for name in ("logme", "h_score", "regularized_h_score", "gbc", "transrate"):
        function = scores.FUNCTIONS[name]
        assert function(strong, labels) > function(weak, labels), name


# --- bad input: one line naming the argument --------------------------------------------


@pytest.mark.parametrize(("call", "words"), [
    (lambda f, y, p: scores.h_score(f, np.zeros(len(f), int)), "labels: every row is class 0 (one class)"),
    (lambda f, y, p: scores.gbc(np.ones_like(f), y), "features: every column is constant"),
    (lambda f, y, p: scores.transrate(f[:3], np.arange(3)), "labels: 3 rows for 3 classes"),
    (lambda f, y, p: scores.leep(f[:, :2], y), "source_probs: row 0 is not a probability distribution"),
    (lambda f, y, p: scores.nce(p[:, :1] * 3, y), "source_probs: row 0 is not a probability distribution"),
    (lambda f, y, p: scores.logme(f, y + 0.5), "labels: row 0 holds 0.5, not a class label"),
    (lambda f, y, p: scores.h_score(np.where(np.arange(len(f))[:, None] == 4, np.nan, f), y),
     "features: row 4 is not finite"),
    (lambda f, y, p: scores.gbc(f, y[:-1]), "labels: give one class label per row"),
    (lambda f, y, p: scores.transrate(f, y, eps=0), "eps: 0"),
    (lambda f, y, p: scores.h_score(f, np.eye(3)[y]), "labels: an (120, 3) array holds regression targets or one-hot"),
])
def test_bad_input_is_one_line_naming_the_argument(call, words):
    f, labels, probs = PROBLEMS[0]
    with pytest.raises(ScoreInputError) as raised:
        call(f, labels, probs)
    message = str(raised.value)
    assert words in message and "\n" not in message
