"""Confidence intervals for a probe accuracy: a mean over a crossed (support set x item) matrix.

The probe accuracy is the mean of an ``S x n`` correctness matrix: ``S`` support sets (probe
seeds) crossed with the same ``n`` evaluation items. Both are samples: a new benchmark run could
draw other items and other support sets, so an honest interval counts both, and the item and
the support-set noise are not independent draws per cell (every seed sees the same items). Two
estimates are implemented:

* ``two_way_anova``: the variance-components (two-way random effects) estimate of the variance
  of the grand mean, ``(MS_items + MS_seeds - MS_error) / (n S)`` (unbiased; at least the
  per-cell noise's ``MS_error / (n S)``), and a Satterthwaite degrees of freedom for its t
  quantile. With 5 seeds the seed mean square has 4 degrees of freedom; where the support sets
  dominate, the quantile approaches t(4)'s 2.78, not 1.96.
* ``pigeonhole_bootstrap``: items and seeds resampled independently with replacement (Owen's
  pigeonhole bootstrap), percentile interval.

``probe_interval`` uses the variance components by default, chosen on the coverage simulation
of ``tests/test_uncertainty_coverage.py`` (5 seeds; 500 items and 50 classes, 4,500 items and
150 classes; seed-to-seed sd of the accuracy 0.004-0.04; the estimand is the expected accuracy
over new items and new support sets). Coverage of the nominal 95% interval, 2,000 replications
(bootstrap: 500, B = 1,000):

===========================================  ==========  =====  =====  =========
scenario (seed sd)                           components  z      t(4)   bootstrap
===========================================  ==========  =====  =====  =========
500 items, little support-set noise (0.012)  0.953       0.947  0.995  0.992
500 items, strong (0.042)                    0.941       0.908  0.976  0.902
4,500 items, little (0.004)                  0.947       0.944  0.995  0.988
4,500 items, strong (0.028)                  0.948       0.887  0.961  0.864
===========================================  ==========  =====  =====  =========

The pigeonhole bootstrap undercovers where the support sets dominate (5 seeds resampled give a
distribution too narrow by ``(S-1)/S`` in variance, with normal tails where t(4)'s are due) and
overcovers where the per-cell noise does (it counts that term about three times); a normal
quantile undercovers, and a fixed t(S-1) overcovers, in the same places; the Satterthwaite df
follows the mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.uncertainty.bootstrap import joint_pigeonhole_means, pigeonhole_bootstrap
from mteb_finegrain.uncertainty.matrix import as_matrix, check_count, check_level

__all__ = [
    "ClusteringSpread",
    "Method",
    "TwoWayANOVA",
    "as_matrix",
    "clustering_spread",
    "joint_pigeonhole_means",
    "paired_interval",
    "pigeonhole_bootstrap",
    "probe_interval",
    "satterthwaite_df",
    "two_way_anova",
]

Method = Literal["anova", "bootstrap"]
_METHODS = ("anova", "bootstrap")


def _check_method(method: str) -> str:
    if method not in _METHODS:
        raise FineGrainError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    return method


@dataclass(frozen=True)
class TwoWayANOVA:
    """Variance components of a crossed (seed x item) matrix and the standard error of its mean.

    Attributes
    ----------
    mean : float
        The grand mean (the probe accuracy when the matrix is a correctness matrix).
    n_seeds, n_items : int
        The matrix's shape.
    ms_seeds, ms_items, ms_error : float
        Mean squares of the two-way ANOVA without replication, with ``n_seeds - 1``,
        ``n_items - 1`` and ``(n_seeds - 1)(n_items - 1)`` degrees of freedom.
    """

    mean: float
    n_seeds: int
    n_items: int
    ms_seeds: float
    ms_items: float
    ms_error: float

    @property
    def var_seeds(self) -> float:
        """Variance of the seed (support-set) effect, ``(MS_seeds - MS_error) / n``, truncated at 0."""
        return max(0.0, (self.ms_seeds - self.ms_error) / self.n_items)

    @property
    def var_items(self) -> float:
        """Variance of the item effect, ``(MS_items - MS_error) / S``, truncated at 0."""
        return max(0.0, (self.ms_items - self.ms_error) / self.n_seeds)

    @property
    def var_error(self) -> float:
        """Variance of the interaction and per-cell noise, ``MS_error``."""
        return self.ms_error

    def satterthwaite_terms(self) -> list[tuple[float, float]]:
        """(variance term, its degrees of freedom) pairs whose sum is ``variance``, for a Satterthwaite df.

        ``(MS_items + MS_seeds - MS_error) / (n S)``, the unbiased estimate, term by term; when
        it falls below ``MS_error / (n S)`` (the variance the per-cell noise alone gives the
        mean) that floor is used instead. Truncating each component at zero would add
        ``(MS_error - MS_seeds) / (n S)`` whenever the seed mean square falls below the error's
        by chance, which with 4 seed df is often: in the coverage simulation the truncated
        estimate overcovered (0.966 at 4,500 items with little support-set noise, 0.98 for a
        paired difference at 500 items) where the unbiased one stays nearer 0.95.
        """
        cells = self.n_items * self.n_seeds
        floor = self.ms_error / cells
        unbiased = (self.ms_items + self.ms_seeds - self.ms_error) / cells
        if unbiased <= floor:
            return [(floor, (self.n_items - 1) * (self.n_seeds - 1))] if floor > 0 else []
        return [
            (self.ms_items / cells, self.n_items - 1),
            (self.ms_seeds / cells, self.n_seeds - 1),
            (-floor, (self.n_items - 1) * (self.n_seeds - 1)),
        ]

    @property
    def variance(self) -> float:
        """Estimated variance of ``mean`` over new items and new seeds (see ``satterthwaite_terms``)."""
        return max(0.0, sum(term for term, _ in self.satterthwaite_terms()))

    @property
    def se(self) -> float:
        """Standard error of ``mean``: the square root of ``variance``."""
        return math.sqrt(self.variance)


def two_way_anova(values) -> TwoWayANOVA:
    """Two-way random-effects ANOVA (no replication) of a ``(seeds, items)`` matrix.

    Parameters
    ----------
    values : array-like of shape (S, n)
        Any finite numbers: a correctness matrix, or the difference of two on the same items
        and seeds. At least 2 seeds and 2 items.

    Returns
    -------
    TwoWayANOVA
        The grand mean, the mean squares, and from them the variance of the mean
        ``(MS_items + MS_seeds - MS_error) / (n S)``, at least ``MS_error / (n S)``.

    Raises
    ------
    FineGrainError
        When ``values`` is not such a matrix (see ``as_matrix``).
    """
    matrix = as_matrix(values)
    seeds, items = matrix.shape
    mean = float(matrix.mean())
    seed_means = matrix.mean(axis=1)
    item_means = matrix.mean(axis=0)
    residual = matrix - seed_means[:, None] - item_means[None, :] + mean
    return TwoWayANOVA(
        mean=mean,
        n_seeds=seeds,
        n_items=items,
        ms_seeds=float(items * np.sum((seed_means - mean) ** 2) / (seeds - 1)),
        ms_items=float(seeds * np.sum((item_means - mean) ** 2) / (items - 1)),
        ms_error=float(np.sum(residual**2) / ((seeds - 1) * (items - 1))),
    )


def satterthwaite_df(terms) -> float:
    """Satterthwaite's degrees of freedom of a sum of independent variance estimates.

    Parameters
    ----------
    terms : iterable of (float, float)
        ``(variance term, its degrees of freedom)``; a degrees of freedom may be ``inf`` (a term
        treated as known).

    Returns
    -------
    float
        ``(sum of terms)^2 / sum(term^2 / df)``; ``inf`` when every term has infinite df or the
        sum is zero.
    """
    terms = [(float(t), float(df)) for t, df in terms]
    total = sum(t for t, _ in terms)
    denominator = sum(t * t / df for t, df in terms if math.isfinite(df))
    if total == 0.0 or denominator == 0.0:
        return math.inf
    return total * total / denominator


def _t_interval(center: float, variance: float, df: float, level: float) -> tuple[float, float]:
    if variance <= 0.0:
        return center, center
    quantile = stats.norm.ppf(0.5 + level / 2) if math.isinf(df) else stats.t.ppf(0.5 + level / 2, df)
    half = float(quantile) * math.sqrt(variance)
    return center - half, center + half


def _interval(values, *, extra_var: float, extra_df: float, method: str, level: float, n_boot: int, seed: int):
    if method == "anova":
        anova = two_way_anova(values)
        terms = anova.satterthwaite_terms() + ([(extra_var, extra_df)] if extra_var > 0 else [])
        return _t_interval(anova.mean, anova.variance + extra_var, satterthwaite_df(terms), level)
    rng = np.random.default_rng(seed)
    replicates = joint_pigeonhole_means([values], n_boot=check_count(n_boot, "n_boot", 2), rng=rng)[:, 0]
    if extra_var > 0:
        replicates = replicates + rng.normal(0.0, math.sqrt(extra_var), size=replicates.shape)
    low, high = np.quantile(replicates, [0.5 - level / 2, 0.5 + level / 2])
    return float(low), float(high)


def probe_interval(
    correct,
    *,
    runs_sd: float = 0.0,
    n_runs: int = 1,
    runs_df: float | None = None,
    method: Method = "anova",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Confidence interval for a probe accuracy over new items, new support sets and new runs.

    Parameters
    ----------
    correct : array-like of shape (S, n)
        Whether seed ``s``'s probe labelled item ``i`` correctly (booleans or 0/1; a mean over
        several coarse-training runs' matrices, values in [0, 1], is accepted). The probe
        accuracy is its grand mean.
    runs_sd : float, default 0.0
        Standard deviation of the score between coarse-training runs; ``runs_sd**2 / n_runs``
        is added to the squared standard error (a run shifts every cell, so the matrix cannot
        show it). 0 for a pretrained model, which has no training run.
    n_runs : int, default 1
        Number of coarse-training runs the score averages.
    runs_df : float, optional
        Degrees of freedom of ``runs_sd``. Default: ``n_runs - 1`` when ``n_runs >= 2`` (the sd
        estimated from these runs), else infinite (an outside estimate, treated as known).
    method : {"anova", "bootstrap"}, default "anova"
        ``"anova"``: variance components with a Satterthwaite t quantile (chosen on the
        coverage simulation, see the module docstring); ``"bootstrap"``: pigeonhole-bootstrap
        percentile interval, with the runs term added as normal noise to each replicate.
    level : float, default 0.95
        Confidence level.
    n_boot : int, default 2000
        Bootstrap replicates (``method="bootstrap"`` only).
    seed : int, default 0
        Seed of the bootstrap draws (``method="bootstrap"`` only).

    Returns
    -------
    (float, float)
        The interval's ends, clipped to [0, 1].

    Raises
    ------
    FineGrainError
        When ``correct`` is not a matrix of values in [0, 1] with at least 2 seeds and 2 items,
        or an option is out of range.
    """
    matrix = as_matrix(correct, "correct", low=0.0, high=1.0)
    level = check_level(level)
    method = _check_method(method)
    n_runs = check_count(n_runs, "n_runs", 1)
    if isinstance(runs_sd, bool) or not isinstance(runs_sd, (int, float)) or not math.isfinite(runs_sd) or runs_sd < 0:
        raise FineGrainError(f"runs_sd must be a finite number >= 0, got {runs_sd!r}")
    if runs_df is None:
        runs_df = n_runs - 1 if n_runs >= 2 else math.inf
    elif isinstance(runs_df, bool) or not isinstance(runs_df, (int, float)) or not runs_df > 0:
        raise FineGrainError(f"runs_df must be a number > 0 (inf for a known sd), got {runs_df!r}")
    low, high = _interval(
        matrix, extra_var=runs_sd**2 / n_runs, extra_df=float(runs_df), method=method, level=level, n_boot=n_boot, seed=seed
    )
    return max(0.0, low), min(1.0, high)


def paired_interval(
    correct_a, correct_b, *, method: Method = "anova", level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Confidence interval for the difference of two probe accuracies on the same items and seeds.

    The difference matrix ``a - b`` (values -1, 0, 1) is analysed like a correctness matrix:
    pairing removes the item difficulty and support-set effects the two models share.

    Parameters
    ----------
    correct_a, correct_b : array-like of shape (S, n)
        Correctness matrices of models a and b, row ``s`` and column ``i`` being the same
        support set and item in both.
    method, level, n_boot, seed
        As in ``probe_interval``.

    Returns
    -------
    (float, float)
        Interval for ``mean(a) - mean(b)``, clipped to [-1, 1].

    Raises
    ------
    FineGrainError
        When a matrix is invalid or the two shapes differ.
    """
    a = as_matrix(correct_a, "correct_a", low=0.0, high=1.0)
    b = as_matrix(correct_b, "correct_b", low=0.0, high=1.0)
    if a.shape != b.shape:
        raise FineGrainError(f"correct_a has shape {a.shape} and correct_b {b.shape}: a paired difference needs the same seeds and items")
    low, high = _interval(
        a - b, extra_var=0.0, extra_df=math.inf, method=_check_method(method), level=check_level(level), n_boot=n_boot, seed=seed
    )
    return max(-1.0, low), min(1.0, high)


@dataclass(frozen=True)
class ClusteringSpread:
    """The spread of a clustering score over k-means seeds: a description, not a confidence interval.

    k-means clusters all evaluation texts, so the only randomness a run shows is the k-means
    seed; the items' sampling noise is not in it, and no interval for a new set of texts
    follows from it.

    Attributes
    ----------
    n : int
        Number of k-means seeds.
    min, max : float
        Smallest and largest score.
    sd : float
        Standard deviation over seeds (``ddof=0``, the ``std`` of the results' records).
    """

    n: int
    min: float
    max: float
    sd: float

    def to_dict(self) -> dict:
        """JSON-ready, labelled as a spread: ``{"kind": "spread", "over": "k-means seeds", ...}``."""
        return {"kind": "spread", "over": "k-means seeds", "n": self.n, "min": self.min, "max": self.max, "sd": self.sd}

    def __str__(self) -> str:
        return f"spread over {self.n} k-means seeds: {self.min:.4f} to {self.max:.4f} (sd {self.sd:.4f})"


def clustering_spread(values) -> ClusteringSpread:
    """Spread (min, max, sd) of a clustering score over k-means seeds.

    Parameters
    ----------
    values : array-like of shape (k,)
        One score per k-means seed, finite, at least one.

    Returns
    -------
    ClusteringSpread

    Raises
    ------
    FineGrainError
        When ``values`` is not a non-empty 1-D sequence of finite numbers.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise FineGrainError(f"clustering scores must be numbers, got {values!r}") from None
    if array.ndim != 1 or array.size == 0:
        raise FineGrainError(f"clustering scores must be a non-empty 1-D sequence (one per k-means seed), got shape {array.shape}")
    if not np.isfinite(array).all():
        k = int(np.flatnonzero(~np.isfinite(array))[0])
        raise FineGrainError(f"clustering score {k} is {float(array[k])!r}: every score must be finite")
    return ClusteringSpread(n=int(array.size), min=float(array.min()), max=float(array.max()), sd=float(array.std()))
