"""Transferability scores: how well a source model suits a target, from one forward pass.

Each score is a pure function of arrays computed on the target's training rows, with its
paper's definition; higher always means "expected to transfer better". Two read the
source head's class probabilities (`source_probs (N, Z)`), five read features (`(N, D)`,
a layer's output; feature maps are flattened per row):

- `leep`: log expected empirical prediction (Nguyen et al. 2020), natural log;
- `nce`: negative conditional entropy −H(Y | Z) of the target label given the source's
  argmax label (Tran et al. 2019), natural log;
- `logme`: the maximised log evidence of Bayesian linear regression from the features to
  each one-hot class column (or each regression target), per row, averaged over columns
  (You et al. 2021);
- `h_score`: tr(cov(f)⁺ cov(E[f | y])) (Bao et al. 2019);
- `regularized_h_score`: the same with the Ledoit–Wolf shrunk covariance (Ibrahim et al.
  2022): tr(cov_α(f)⁺ (1 − α) cov(E[f | y]));
- `gbc`: −Σ over ordered pairs of classes of the Bhattacharyya coefficient between
  per-class diagonal Gaussians (Pándy et al. 2022);
- `transrate`: the coding rate of the features minus their mean coding rate within each
  class (Huang et al. 2022).

Where the authors' reference code makes a choice the paper leaves open, these functions
make the same one (and say so in their docstrings), so their values are the reference
code's. Classes are the distinct values of `labels`; every class needs a row, and there
must be more rows than classes. A refusal is a `ScoreInputError` naming the argument.
"""

from __future__ import annotations

import math

import numpy as np

from transferlab.errors import ScoreInputError

# every score, in the order tables show them; the first two read class probabilities
SCORES = ("leep", "nce", "logme", "h_score", "regularized_h_score", "gbc", "transrate")
FROM_PROBABILITIES = ("leep", "nce")
# features scores that also apply to a regression target
REGRESSION_SCORES = ("logme",)
# GBC's floor on a class's per-feature variance (the reference code's), so a constant
# feature within a class does not divide by zero
GBC_VARIANCE_FLOOR = 1e-4
# LogME's fixed point stops when α/β changes by less than this fraction (the reference
# stops at 1e-3 after at most 11 steps; iterating to here lands on the maximum itself)
LOGME_TOLERANCE = 1e-10
LOGME_MAX_STEPS = 1000
# past this α/β (times the largest eigenvalue of fᵀf) every weight is shrunk to 0: the limit
LOGME_PRIOR_DOMINATES = 1e12
PROBABILITY_TOLERANCE = 1e-3  # a float32 softmax row sums to 1 within this


# --- checking the arrays ---------------------------------------------------------------


def class_codes(labels, n_rows: int) -> tuple[np.ndarray, int]:
    """`labels` as codes 0 … C−1 (in sorted order of the distinct labels) and C; refused when
    there is one class, a label is not a whole number, or there are no more rows than classes."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and len(labels) == n_rows and labels.shape[1] > 1:
        raise ScoreInputError(f"labels: an {labels.shape} array holds regression targets or one-hot rows; give one "
                              "class index per row (np.argmax of one-hot rows), or for regression targets use "
                              "logme(features, targets, regression=True)", "labels")
    if labels.ndim != 1 or len(labels) != n_rows:
        raise ScoreInputError(f"labels: give one class label per row ({n_rows} rows), got shape {labels.shape}",
                              "labels")
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if len(bad):
            raise ScoreInputError(
                f"labels: row {bad[0]} holds {labels[bad[0]].item()!r}, not a class label; for a regression target only "
                "logme applies (logme(features, targets, regression=True))", "labels")
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ScoreInputError(f"labels: every row is class {classes[0].item()!r} (one class); a score compares classes, so "
                              "give rows of at least two", "labels")
    if n_rows <= len(classes):
        raise ScoreInputError(f"labels: {n_rows} rows for {len(classes)} classes; give more rows than classes "
                              "(several per class)", "labels")
    return codes.astype(np.int64), len(classes)


def checked_features(features) -> np.ndarray:
    """`features` as a float64 `(N, D)` array (feature maps flattened per row); refused when
    not finite, or when every column is constant (nothing to separate classes by)."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim < 2 or len(array) == 0:
        raise ScoreInputError(f"features: give an (N, D) array of N rows, got shape {array.shape}", "features")
    array = array.reshape(len(array), -1)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise ScoreInputError(f"features: row {bad[0]} is not finite (NaN or infinite); the source model diverged "
                              "or the data holds missing values", "features")
    if np.all(array == array[:1]):
        raise ScoreInputError("features: every column is constant on these rows (the layer's units are dead, or "
                              "the rows are identical); choose another layer", "features")
    return array


def checked_probabilities(source_probs) -> np.ndarray:
    """The source head's class probabilities as float64 `(N, Z)`; one column is read as a
    sigmoid unit's p(class 1) and becomes `[1 − p, p]` (as Keras' binary accuracy reads it).
    Refused unless every row is a probability distribution: a regression source has none."""
    probs = np.asarray(source_probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = probs[:, None]
    if probs.ndim != 2 or len(probs) == 0:
        raise ScoreInputError(f"source_probs: give an (N, Z) array of class probabilities, got shape {probs.shape}",
                              "source_probs")
    if probs.shape[1] == 1:
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(~np.isfinite(sums) | (probs.min(axis=1) < 0) | (np.abs(sums - 1) > PROBABILITY_TOLERANCE))
    if len(bad):
        row = bad[0]
        raise ScoreInputError(
            f"source_probs: row {row} is not a probability distribution (sums to {sums[row]:.4g}, smallest "
            f"{probs[row].min():.4g}); LEEP and NCE need a classification source's softmax or sigmoid outputs — a "
            "regression source has no class probabilities", "source_probs")
    return probs


# --- from the source head's probabilities ----------------------------------------------


def leep(source_probs, labels) -> float:
    """LEEP (Nguyen et al. 2020): the mean log-likelihood of the target labels under the
    "empirical predictor" P(y | x) = Σ_z P(y | z) θ(x)_z, where P(y | z) comes from the
    joint P(y, z) = 1/N Σ_i θ(x_i)_z [y_i = y]. At most 0; higher is better."""
    probs = checked_probabilities(source_probs)
    codes, n_classes = class_codes(labels, len(probs))
    joint = np.zeros((n_classes, probs.shape[1]))
    np.add.at(joint, codes, probs / len(probs))
    marginal = joint.sum(axis=0, keepdims=True)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    predicted = np.einsum("nz,nz->n", probs, conditional[codes])
    return float(np.mean(np.log(predicted)))


def nce(source_probs, labels) -> float:
    """NCE (Tran et al. 2019): −H(Y | Z), Z the source head's argmax label, from their
    empirical joint distribution (0 log 0 = 0). At most 0; higher is better."""
    probs = checked_probabilities(source_probs)
    codes, n_classes = class_codes(labels, len(probs))
    joint = np.zeros((n_classes, probs.shape[1]))
    np.add.at(joint, (codes, np.argmax(probs, axis=1)), 1.0 / len(probs))
    marginal = joint.sum(axis=0, keepdims=True)
    ratio = np.divide(joint, marginal, out=np.ones_like(joint), where=joint > 0)
    return float(np.sum(joint * np.log(ratio)))


# --- from features ---------------------------------------------------------------------


def logme(features, labels, regression: bool = False) -> float:
    """LogME (You et al. 2021): for each one-hot class column (or, with `regression`, each
    column of `labels (N,)` or `(N, T)`), the log evidence of Bayesian linear regression
    y = f w + noise (prior w ~ N(0, α⁻¹I), noise precision β), maximised over α and β by
    the fixed-point updates of You et al. 2022, divided by N; the mean over columns.

    The evidence counts every one of the D prior directions, so a feature column of zeros
    changes nothing; the reference code drops the zero singular values from log|A| but
    not from (D/2) log α, which differs from this only when the features' rank is below D.
    Where the evidence grows as α → ∞ (the column is best explained by w = 0), its limit
    is the value."""
    f = checked_features(features)
    targets = _logme_targets(labels, len(f), regression)
    n_rows = len(f)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2  # the non-zero eigenvalues of fᵀf (the others add nothing: see above)
    evidences = []
    for y in targets.T:
        x2 = (u.T @ y) ** 2
        outside = max(float(y @ y - x2.sum()), 0.0)  # the part of y no feature direction reaches
        t, beta = _logme_fixed_point(sigma, x2, outside, n_rows)
        if math.isinf(t):  # w = 0: the prior terms vanish, the residual is y itself
            evidence = n_rows / 2 * math.log(beta) - n_rows / 2
        else:
            m2 = float(np.sum(sigma * x2 / (t + sigma) ** 2))
            res2 = float(np.sum(x2 * (t / (t + sigma)) ** 2)) + outside
            # (D/2) log α − ½ log|αI + β fᵀf| written as −½ Σ log(1 + σ/t), stable for any α
            evidence = (n_rows / 2 * math.log(beta) - 0.5 * float(np.sum(np.log1p(sigma / t)))
                        - beta / 2 * res2 - t * beta / 2 * m2)
        evidences.append(evidence / n_rows - math.log(2 * math.pi) / 2)
    return float(np.mean(evidences))


def _logme_targets(labels, n_rows: int, regression: bool) -> np.ndarray:
    """The columns LogME regresses on: one-hot classes, or the regression targets."""
    if not regression:
        codes, n_classes = class_codes(labels, n_rows)
        return np.eye(n_classes)[codes]
    targets = np.asarray(labels, dtype=np.float64)
    if targets.ndim not in (1, 2) or targets.shape[0] != n_rows or not np.isfinite(targets).all():
        raise ScoreInputError(f"labels: give {n_rows} rows of finite regression targets, got shape "
                              f"{targets.shape}", "labels")
    return targets.reshape(n_rows, -1)


def _logme_fixed_point(sigma: np.ndarray, x2: np.ndarray, outside: float, n_rows: int) -> tuple[float, float]:
    """t = α/β and β where the evidence is largest: γ = Σ σ/(σ + t), α = γ / mᵀm,
    β = (N − γ) / ‖y − f m‖², iterated from α = β = 1 (You et al. 2022, Algorithm 2).
    t = inf where α grows without bound (every direction's weight shrinks to 0)."""
    total = outside + float(x2.sum())
    if total <= 0:
        raise ScoreInputError("labels: a target column is all zeros; LogME's evidence has no maximum there", "labels")
    alpha, beta = 1.0, 1.0
    for _ in range(LOGME_MAX_STEPS):
        t = alpha / beta
        if t > LOGME_PRIOR_DOMINATES * max(float(sigma.max()), 1.0):
            return math.inf, n_rows / total
        gamma = float(np.sum(sigma / (sigma + t)))
        m2 = float(np.sum(sigma * x2 / (t + sigma) ** 2))
        res2 = float(np.sum(x2 * (t / (t + sigma)) ** 2)) + outside
        if res2 <= 1e-300:
            raise ScoreInputError("labels: the features reproduce a label column exactly; LogME's evidence has no "
                                  "finite maximum there", "labels")
        if m2 <= 0:
            return math.inf, n_rows / total
        alpha, beta = gamma / m2, (n_rows - gamma) / res2
        if abs(alpha / beta - t) <= LOGME_TOLERANCE * t:
            break
    return alpha / beta, beta


def h_score(features, labels) -> float:
    """H-score (Bao et al. 2019): tr(cov(f)⁺ cov(g)), g(x) = E[f | y(x)] the class means;
    both covariances with N − 1 and the pseudo-inverse with rcond 1e-15, as the reference
    code. Higher is better."""
    f = checked_features(features)
    codes, _ = class_codes(labels, len(f))
    g = _class_means(f, codes)[codes]
    return float(np.trace(np.linalg.pinv(_covariance(f), rcond=1e-15) @ _covariance(g)))


def regularized_h_score(features, labels) -> float:
    """Shrinkage H-score (Ibrahim et al. 2022): tr(cov_α(f)⁺ (1 − α) cov(g)), cov_α the
    Ledoit–Wolf shrunk covariance of the centred features (`ledoit_wolf`, over N) and
    cov(g) the class means' covariance over N − 1, as the reference code computes it."""
    f = checked_features(features)
    codes, _ = class_codes(labels, len(f))
    f = f - f.mean(axis=0, keepdims=True)
    shrunk, alpha = ledoit_wolf(f)
    g = _class_means(f, codes)[codes]
    return float(np.trace(np.linalg.pinv(shrunk, rcond=1e-15) @ ((1 - alpha) * _covariance(g))))


def ledoit_wolf(f: np.ndarray) -> tuple[np.ndarray, float]:
    """The Ledoit–Wolf (2004) shrunk covariance (1 − α) S + α (tr S / D) I of `f (N, D)`,
    S the empirical covariance over N, and the shrinkage α that minimises its expected
    squared error; one feature is not shrunk (α = 0)."""
    centred = f - f.mean(axis=0, keepdims=True)
    n_rows, n_features = centred.shape
    empirical = centred.T @ centred / n_rows
    if n_features == 1:
        return empirical, 0.0
    mu = np.trace(empirical) / n_features
    squares = centred**2
    beta_sum = float(np.sum(squares.T @ squares))  # Σ_ij Σ_k x_ki² x_kj²
    delta_sum = float(np.sum((centred.T @ centred) ** 2)) / n_rows**2
    beta = (beta_sum / n_rows - delta_sum) / (n_features * n_rows)
    delta = (delta_sum - 2 * mu * np.sum(np.diag(empirical)) + n_features * mu**2) / n_features
    alpha = 0.0 if beta == 0 else min(beta, delta) / delta
    return (1 - alpha) * empirical + alpha * mu * np.eye(n_features), float(alpha)


def gbc(features, labels, gaussian: str = "diagonal") -> float:
    """GBC (Pándy et al. 2022): each class a Gaussian with its mean and per-feature
    variance (over its rows, floored at `GBC_VARIANCE_FLOOR`; `gaussian="spherical"`: one
    variance, their mean, whose log enters D_B once, as in the reference code); minus the
    sum over ordered pairs of classes of exp(−D_B), D_B their Bhattacharyya distance.
    At most 0; higher (classes apart) is better."""
    if gaussian not in ("diagonal", "spherical"):
        raise ScoreInputError(f"gaussian: {gaussian!r} is not a GBC Gaussian; use 'diagonal' or 'spherical'",
                              "gaussian")
    f = checked_features(features)
    codes, n_classes = class_codes(labels, len(f))
    means = _class_means(f, codes)
    variances = np.stack([np.maximum(f[codes == c].var(axis=0), GBC_VARIANCE_FLOOR) for c in range(n_classes)])
    if gaussian == "spherical":  # one variance per class, kept as a scalar as the reference code keeps it
        variances = variances.mean(axis=1, keepdims=True)
    total = 0.0
    for first in range(n_classes):
        for second in range(n_classes):
            if first != second:
                total += math.exp(-bhattacharyya_distance(means[first], means[second], variances[first],
                                                          variances[second]))
    return -total


def bhattacharyya_distance(mean_a, mean_b, variance_a, variance_b) -> float:
    """D_B between two Gaussians with diagonal covariances: ⅛ Δμᵀ Σ⁻¹ Δμ + ½ log(|Σ| /
    √(|Σ_a| |Σ_b|)), Σ = (Σ_a + Σ_b) / 2."""
    average = (variance_a + variance_b) / 2
    spread = float(np.sum((mean_a - mean_b) ** 2 / average)) / 8
    return spread + 0.5 * float(np.sum(np.log(average)) - 0.5 * np.sum(np.log(variance_a))
                                - 0.5 * np.sum(np.log(variance_b)))


def transrate(features, labels, eps: float = 1e-4) -> float:
    """TransRate (Huang et al. 2022): R(f) − 1/C Σ_c R(f_c), with the coding rate
    R(Z) = ½ log det(I + ZᵀZ / (n ε)) of the features centred on their overall mean (n:
    the rows of Z); the reference code's form. Higher is better."""
    if not eps > 0:
        raise ScoreInputError(f"eps: {eps!r}; TransRate's distortion must be positive (the paper uses 1e-4)", "eps")
    f = checked_features(features)
    codes, n_classes = class_codes(labels, len(f))
    f = f - f.mean(axis=0, keepdims=True)
    within = sum(coding_rate(f[codes == c], eps) for c in range(n_classes))
    return coding_rate(f, eps) - within / n_classes


def coding_rate(z: np.ndarray, eps: float) -> float:
    """½ log det(I + zᵀz / (n ε)) for `z (n, D)`."""
    n_rows, n_features = z.shape
    _, log_det = np.linalg.slogdet(np.eye(n_features) + z.T @ z / (n_rows * eps))
    return 0.5 * float(log_det)


def _class_means(f: np.ndarray, codes: np.ndarray) -> np.ndarray:
    counts = np.bincount(codes)
    sums = np.zeros((len(counts), f.shape[1]))
    np.add.at(sums, codes, f)
    return sums / counts[:, None]


def _covariance(f: np.ndarray) -> np.ndarray:
    """The sample covariance over N − 1 (`np.cov`), always `(D, D)`."""
    return np.atleast_2d(np.cov(f, rowvar=False))


def score(name: str, reads, labels, regression: bool = False) -> float:
    """Score `name` of `reads` (source probabilities for LEEP and NCE, else features);
    `regression`: `labels` are regression targets (LogME alone scores them)."""
    if name == "logme":
        return logme(reads, labels, regression=regression)
    if regression:
        raise ScoreInputError(f"{name}: scores classes; for regression targets only logme applies", "labels")
    return FUNCTIONS[name](reads, labels)


FUNCTIONS = {"leep": leep, "nce": nce, "logme": logme, "h_score": h_score,
             "regularized_h_score": regularized_h_score, "gbc": gbc, "transrate": transrate}
