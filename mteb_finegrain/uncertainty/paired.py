"""Paired comparison of two models over tasks, from their correctness matrices on the same items and seeds.

Per task the difference of the two main scores (probe accuracies) is paired: both models are
scored on the same evaluation items with the same support sets, so what they share (an item's
difficulty, a support set's luck) cancels. The primary statistic is the mean over tasks of these
differences, tested two-sided; each task's difference gets a secondary test, Holm-adjusted over
the tasks. Two ways, both on the per-task difference matrices ``a - b``:

* ``method="anova"`` (default): each task's variance components (``intervals.two_way_anova``),
  summed over tasks, with a Satterthwaite t quantile; the p-value is the t test's.
* ``method="bootstrap"``: the pigeonhole bootstrap at compare time, ``n_boot >= 10,000``
  replicates; within each task items and seeds are resampled independently with replacement,
  the same indices for both models, tasks independently; the percentile interval and its
  inversion as p-value.

A model scored as the mean over several coarse-training runs (its matrix averaged over runs)
also varies with the runs, which no cell of the matrix shows: per task and model,
``runs_std**2 / n_runs`` (``n_runs - 1`` degrees of freedom) is added, for each model, to the
task's Satterthwaite terms (with the bootstrap, as normal noise on each replicate). The two
models' runs are independent, so both terms add to the difference's variance.

The default is chosen on a coverage simulation: four tasks (500 to 4,500 items, 28 to 150
classes, 5 seeds), two models sharing item difficulty and support-set luck, each with its own
item and support-set effects; 300 replications, B = 1,000. Coverage of the 95% interval for the
mean difference, components / bootstrap: 0.980 / 1.000 where the difference is mostly per-cell
noise (the pigeonhole bootstrap counts that term about three times, so its test loses power),
0.947 / 0.950 with moderate model-specific support-set effects, and 0.943 / 0.897 where each
model's own support-set luck dominates (5 resampled seeds give too narrow a distribution).
``tests/test_uncertainty_paired.py`` checks the components test's level and the bootstrap's
excess width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.uncertainty.bootstrap import joint_pigeonhole_means
from mteb_finegrain.uncertainty.intervals import satterthwaite_df, two_way_anova
from mteb_finegrain.uncertainty.matrix import as_matrix, check_count

MIN_BOOT = 10_000
Method = Literal["anova", "bootstrap"]


@dataclass(frozen=True)
class TaskDifference:
    """One task's paired difference ``score(a) - score(b)`` and its secondary test.

    Attributes
    ----------
    task : str
        The task's name.
    difference : float
        Difference of the two probe accuracies (means of the correctness matrices).
    ci95 : (float, float)
        95% interval (t interval or bootstrap percentile interval, by the comparison's method).
    p_value : float
        Two-sided p-value of "no difference", unadjusted.
    p_holm : float
        ``p_value`` after Holm's adjustment over the compared tasks.
    """

    task: str
    difference: float
    ci95: tuple[float, float]
    p_value: float
    p_holm: float


@dataclass(frozen=True)
class Comparison:
    """Model a against model b over tasks: the primary test and the per-task ones.

    Attributes
    ----------
    mean_difference : float
        Mean over tasks of the paired differences ``score(a) - score(b)``.
    ci95 : (float, float)
        95% interval for it.
    p_value : float
        Two-sided p-value of "no mean difference".
    tasks : tuple of TaskDifference
        Per task, in the order given.
    method : str
        ``"anova"`` or ``"bootstrap"``.
    n_boot : int or None
        Bootstrap replicates drawn (None with ``"anova"``).
    """

    mean_difference: float
    ci95: tuple[float, float]
    p_value: float
    tasks: tuple[TaskDifference, ...]
    method: str
    n_boot: int | None

    def summary_line(self) -> str:
        """The primary result on one line, as ``format_comparison`` writes it."""
        return format_comparison(self.mean_difference, self.ci95, self.p_value)


def format_comparison(mean_difference: float, ci95: tuple[float, float], p_value: float) -> str:
    """``mean_difference=+0.0040 ci95=[-0.0100,+0.0180] p=0.57``.

    Parameters
    ----------
    mean_difference : float
        Signed, written with 4 decimals and its sign.
    ci95 : (float, float)
        Its interval, likewise.
    p_value : float
        In [0, 1]; two decimals from 0.01 up, else one significant digit (``p=0.003``), which
        the bootstrap's ``1 / (B + 1)`` resolution supports.

    Returns
    -------
    str

    Raises
    ------
    FineGrainError
        When a number is not finite or ``p_value`` lies outside [0, 1].
    """
    low, high = ci95
    for name, value in (("mean_difference", mean_difference), ("ci95 low", low), ("ci95 high", high), ("p_value", p_value)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
            raise FineGrainError(f"format_comparison: {name} must be a finite number, got {value!r}")
    if not 0 <= p_value <= 1:
        raise FineGrainError(f"format_comparison: p_value must lie in [0, 1], got {p_value!r}")
    p = f"{p_value:.2f}" if p_value >= 0.01 or p_value == 0 else f"{p_value:.1g}"
    return f"mean_difference={_signed(mean_difference)} ci95=[{_signed(low)},{_signed(high)}] p={p}"


def _signed(value: float) -> str:
    text = f"{value:+.4f}"
    return "+0.0000" if text == "-0.0000" else text


def bootstrap_p_value(replicates: np.ndarray) -> float:
    """Two-sided p-value of "the statistic is 0" from its bootstrap replicates.

    ``2 * min(#{T* <= 0} + 1, #{T* >= 0} + 1) / (B + 1)``, at most 1: the percentile interval's
    inversion, so ``p < alpha`` when 0 lies outside the ``1 - alpha`` percentile interval.

    Parameters
    ----------
    replicates : numpy.ndarray of shape (B,)

    Returns
    -------
    float
    """
    replicates = np.asarray(replicates, dtype=np.float64)
    below = int(np.count_nonzero(replicates <= 0))
    above = int(np.count_nonzero(replicates >= 0))
    return min(1.0, 2 * (min(below, above) + 1) / (replicates.size + 1))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of p-values (family-wise error over the family given).

    Parameters
    ----------
    p_values : array-like of shape (m,)

    Returns
    -------
    numpy.ndarray of shape (m,)
        Adjusted p-values, in the input's order: the ``k``-th smallest becomes
        ``max over j <= k of min(1, (m - j + 1) p_(j))``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or (p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1)):
        raise FineGrainError(f"holm: p-values must be a 1-D array of numbers in [0, 1], got {p_values!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted


def task_differences(correct_a: Mapping[str, object], correct_b: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Per task the difference matrix ``a - b``, checked to pair: the same tasks, and per task the same shape.

    Parameters
    ----------
    correct_a, correct_b : mapping of str to array-like of shape (S, n)
        Each model's correctness matrix per task, row and column ``(s, i)`` being the same
        support set and item for both.

    Returns
    -------
    dict of str to numpy.ndarray
        In ``correct_a``'s task order.

    Raises
    ------
    FineGrainError
        When no task is given, the task sets differ, a matrix is invalid, or two shapes differ.
    """
    if not correct_a:
        raise FineGrainError("compare needs at least one task, got none")
    if set(correct_a) != set(correct_b):
        only_a, only_b = sorted(set(correct_a) - set(correct_b)), sorted(set(correct_b) - set(correct_a))
        raise FineGrainError(f"the two models are scored on different tasks: only a has {only_a}, only b has {only_b}")
    out = {}
    for task in correct_a:
        a = as_matrix(correct_a[task], f"model a's {task} correctness", low=0.0, high=1.0)
        b = as_matrix(correct_b[task], f"model b's {task} correctness", low=0.0, high=1.0)
        if a.shape != b.shape:
            raise FineGrainError(f"{task}: model a's matrix has shape {a.shape}, model b's {b.shape}: they must share seeds and items")
        out[task] = a - b
    return out


def runs_terms(runs_std: float | None, n_runs: int) -> list[tuple[float, float]]:
    """The Satterthwaite term of a score averaged over coarse-training runs.

    Parameters
    ----------
    runs_std : float or None
        Standard deviation (ddof=1) of the score over the runs; None without runs (pretrained).
    n_runs : int
        How many runs the score averages.

    Returns
    -------
    list of (float, float)
        ``[(runs_std**2 / n_runs, n_runs - 1)]``, or ``[]`` when there is a single run or no spread.

    Raises
    ------
    FineGrainError
        When ``runs_std`` is not a finite number >= 0 (or None), or ``n_runs`` not an integer >= 1.
    """
    if runs_std is not None and (isinstance(runs_std, bool) or not isinstance(runs_std, (int, float, np.floating)) or not math.isfinite(runs_std) or runs_std < 0):
        raise FineGrainError(f"runs_std must be a finite number >= 0 or None, got {runs_std!r}")
    check_count(n_runs, "n_runs", 1)
    if not runs_std or n_runs < 2:
        return []
    return [(float(runs_std) ** 2 / n_runs, float(n_runs - 1))]


def _runs_by_task(tasks, runs_a, runs_b) -> dict[str, list[tuple[float, float]]]:
    """Per task the run terms of both models (empty where a model has no runs)."""
    out = {task: [] for task in tasks}
    for name, runs in (("runs_a", runs_a), ("runs_b", runs_b)):
        runs = runs or {}
        unknown = sorted(set(runs) - set(out))
        if unknown:
            raise FineGrainError(f"{name} names task(s) {unknown} that are not compared")
        for task, spread in runs.items():
            if not (isinstance(spread, (tuple, list)) and len(spread) == 2):
                raise FineGrainError(f"{name}[{task!r}] must be (runs_std, n_runs), got {spread!r}")
            out[task] += runs_terms(*spread)
    return out


def compare(
    correct_a: Mapping[str, object],
    correct_b: Mapping[str, object],
    *,
    runs_a: Mapping[str, tuple[float | None, int]] | None = None,
    runs_b: Mapping[str, tuple[float | None, int]] | None = None,
    method: Method = "anova",
    n_boot: int = MIN_BOOT,
    seed: int = 0,
) -> Comparison:
    """Compare model a with model b over tasks: the mean paired difference, and each task's.

    Parameters
    ----------
    correct_a, correct_b : mapping of str to array-like of shape (S, n)
        Per task, each model's correctness matrix on the same items and seeds (averaged over
        coarse-training runs where the score is).
    runs_a, runs_b : mapping of str to (float or None, int), optional
        Per task, the model's ``(runs_std, n_runs)``: the spread of its score over the
        coarse-training runs its matrix averages. ``runs_std**2 / n_runs`` (``n_runs - 1``
        degrees of freedom) is added to the task's variance. A task left out, ``runs_std``
        None or a single run adds nothing (a pretrained model has no run).
    method : {"anova", "bootstrap"}, default "anova"
        How the uncertainty is computed (see the module docstring for why "anova" is the default).
    n_boot : int, default 10000
        Bootstrap replicates, at least 10,000 (``method="bootstrap"`` only; the p-value's
        resolution is ``1 / (n_boot + 1)``).
    seed : int, default 0
        Seed of the resampling (``method="bootstrap"`` only): the same seed gives the same result.

    Returns
    -------
    Comparison
        ``summary_line()`` gives ``mean_difference=+0.0040 ci95=[-0.0100,+0.0180] p=0.57``.

    Raises
    ------
    FineGrainError
        When the matrices do not pair (see ``task_differences``), ``method`` is unknown,
        ``n_boot`` < 10,000 with the bootstrap, or a runs entry is invalid or names a task that
        is not compared.
    """
    if method not in ("anova", "bootstrap"):
        raise FineGrainError(f"method must be 'anova' or 'bootstrap', got {method!r}")
    if method == "bootstrap":
        n_boot = check_count(n_boot, "n_boot", MIN_BOOT)
    differences = task_differences(correct_a, correct_b)
    extra = _runs_by_task(differences, runs_a, runs_b)
    if method == "anova":
        per_task, mean_ci, mean_p = _by_components(differences, extra)
    else:
        per_task, mean_ci, mean_p = _by_bootstrap(differences, extra, int(n_boot), np.random.default_rng(seed))
    adjusted = holm([p for _, _, p in per_task])
    tasks = tuple(
        TaskDifference(task, difference, ci, p, float(adjusted[k]))
        for k, (task, (difference, ci, p)) in enumerate(zip(differences, per_task))
    )
    return Comparison(
        mean_difference=float(np.mean([t.difference for t in tasks])),
        ci95=mean_ci,
        p_value=mean_p,
        tasks=tasks,
        method=method,
        n_boot=int(n_boot) if method == "bootstrap" else None,
    )


def _t_test(estimate: float, terms: list[tuple[float, float]]) -> tuple[tuple[float, float], float]:
    """95% t interval and two-sided p-value of "the mean is 0" from Satterthwaite terms."""
    variance = max(0.0, sum(term for term, _ in terms))
    if variance == 0.0:  # the difference does not vary at all: known exactly
        return (estimate, estimate), 1.0 if estimate == 0 else 0.0
    df = satterthwaite_df(terms)
    se = math.sqrt(variance)
    distribution = stats.norm if math.isinf(df) else stats.t(df)
    half = float(distribution.ppf(0.975)) * se
    return (estimate - half, estimate + half), float(2 * distribution.sf(abs(estimate) / se))


def _by_components(differences: dict[str, np.ndarray], extra: dict[str, list[tuple[float, float]]]):
    per_task, mean_terms = [], []
    for task, d in differences.items():
        anova = two_way_anova(d)
        terms = anova.satterthwaite_terms() + extra[task]
        per_task.append((anova.mean, *_t_test(anova.mean, terms)))
        # tasks are independent samples: the mean's variance is the sum over tasks / T^2
        mean_terms += [(term / len(differences) ** 2, df) for term, df in terms]
    mean = float(np.mean([difference for difference, _, _ in per_task]))
    return per_task, *_t_test(mean, mean_terms)


def _by_bootstrap(differences: dict[str, np.ndarray], extra: dict[str, list[tuple[float, float]]], n_boot: int, rng: np.random.Generator):
    # A difference matrix resampled is both models resampled with the same indices.
    replicates = []
    for task, d in differences.items():
        draws = joint_pigeonhole_means([d], n_boot=n_boot, rng=rng)[:, 0]
        runs_variance = sum(term for term, _ in extra[task])
        replicates.append(draws + rng.normal(0.0, math.sqrt(runs_variance), n_boot) if runs_variance > 0 else draws)
    per_task = [(float(d.mean()), _percentile(r), bootstrap_p_value(r)) for d, r in zip(differences.values(), replicates)]
    mean_replicates = np.mean(replicates, axis=0)
    return per_task, _percentile(mean_replicates), bootstrap_p_value(mean_replicates)


def _percentile(replicates: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(replicates, [0.025, 0.975])
    return float(low), float(high)
