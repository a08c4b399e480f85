"""Simultaneous confidence intervals for the ranks of models (Mogstad, Romano, Shaikh & Wilhelm 2024).

"Inference for ranks with applications to mobility across neighbourhoods and academic
achievement across countries" (Review of Economic Studies, 2024): from confidence intervals
for every pairwise difference ``theta_j - theta_k`` that hold simultaneously, model j's rank
(1 = highest score) lies in ``[1 + #{k: theta_k - theta_j significantly > 0},
p - #{k: theta_j - theta_k significantly > 0}]`` for every j at once with the same confidence.
The simultaneous intervals come from the bootstrap distribution of the largest studentised
pairwise deviation (max-|t| over the pairs). Percentiles of the models' bootstrap ranks would
be something else: they are not confidence intervals and undercover near ties.

The replicates come from the pigeonhole bootstrap (``bootstrap_scores``). Its variance is off
for a single difference (see ``paired``), but a rank interval misses only when a pair is
declared ordered the wrong way at the simultaneous critical value, which is rare: five models
(two 0.001 apart) on a 500-item and a 4,500-item task, 5 seeds, 300 replications of B = 1,000,
covered the true rank vector 1.000, 1.000 and 0.997 of the time, from little to strong
model-specific support-set noise.

A coarse-tuned score is the mean over a few coarse-training runs, whose spread the run-averaged
correctness matrix cannot show (a run shifts every cell of it). ``bootstrap_scores`` therefore
adds, to every replicate, an independent normal draw per model and task with the variance
``runs_std**2 / n_runs`` the runs give that task's score (0 for a pretrained-only model), the
same term :func:`~mteb_finegrain.uncertainty.intervals.probe_interval` adds to a score's interval.
``main_score_interval`` is a model's own interval for the mean over tasks, by the same variance
components as each task's stored ``ci95``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.uncertainty.bootstrap import joint_pigeonhole_means
from mteb_finegrain.uncertainty.intervals import satterthwaite_df, two_way_anova
from mteb_finegrain.uncertainty.matrix import as_matrix, check_count, check_level


@dataclass(frozen=True)
class RankInterval:
    """A confidence interval ``[low, high]`` for a model's rank, 1 being the best.

    ``str()`` gives ``"2–3"`` (an en dash), or ``"1"`` when ``low == high``.
    """

    low: int
    high: int

    def __str__(self) -> str:
        return f"{self.low}" if self.low == self.high else f"{self.low}\u2013{self.high}"


def format_rank(interval: RankInterval) -> str:
    """``"2–3"`` for ranks 2 to 3, ``"1"`` for a single rank."""
    return str(interval)


def _check_inputs(estimates, replicates, level) -> tuple[np.ndarray, np.ndarray, float]:
    theta = np.asarray(estimates, dtype=np.float64)
    if theta.ndim != 1 or theta.size < 2:
        raise FineGrainError(f"estimates must be a 1-D array of at least 2 models' scores, got shape {theta.shape}")
    boot = np.asarray(replicates, dtype=np.float64)
    if boot.ndim != 2 or boot.shape[1] != theta.size:
        raise FineGrainError(f"replicates must have shape (n_boot, {theta.size}) to match the estimates, got {boot.shape}")
    if boot.shape[0] < 100:
        raise FineGrainError(f"replicates hold {boot.shape[0]} bootstrap draws; a simultaneous quantile needs at least 100")
    if not (np.isfinite(theta).all() and np.isfinite(boot).all()):
        raise FineGrainError("estimates and replicates must be finite")
    return theta, boot, check_level(level)


def difference_intervals(estimates, replicates, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous confidence intervals for every pairwise difference ``theta_j - theta_k``.

    The critical value is the ``level`` quantile over the replicates of
    ``max over pairs j < k of |(D*_jk - D_jk) / se_jk|`` where ``D`` is the estimated
    difference, ``D*`` its replicate and ``se_jk`` the replicates' standard deviation; each
    interval is ``D_jk +/- c se_jk``. A pair whose difference never varies (``se_jk = 0``)
    gets the point interval ``[D_jk, D_jk]``.

    Parameters
    ----------
    estimates : array-like of shape (p,)
        The models' scores.
    replicates : array-like of shape (B, p)
        Bootstrap replicates of the scores, drawn jointly (the same resampled items and seeds
        for every model in a replicate), B >= 100.
    level : float, default 0.95
        Simultaneous confidence level.

    Returns
    -------
    lower, upper : numpy.ndarray of shape (p, p)
        ``[lower[j, k], upper[j, k]]`` covers ``theta_j - theta_k``; diagonal 0.

    Raises
    ------
    FineGrainError
        When the shapes do not match, a value is not finite, B < 100 or ``level`` is not in (0, 1).
    """
    theta, boot, level = _check_inputs(estimates, replicates, level)
    p = theta.size
    se = np.zeros((p, p))
    largest = np.zeros(boot.shape[0])
    for j in range(p - 1):
        draws = boot[:, [j]] - boot[:, j + 1 :]  # (B, p - j - 1): theta_j - theta_k for k > j
        sd = draws.std(axis=0, ddof=1)
        se[j, j + 1 :] = se[j + 1 :, j] = sd
        varies = sd > 0
        if varies.any():
            deviation = np.abs(draws[:, varies] - (theta[j] - theta[j + 1 :][varies])) / sd[varies]
            np.maximum(largest, deviation.max(axis=1), out=largest)
    critical = float(np.quantile(largest, level))
    difference = theta[:, None] - theta[None, :]
    return difference - critical * se, difference + critical * se


def rank_intervals(estimates, replicates, *, level: float = 0.95) -> list[RankInterval]:
    """Simultaneous confidence intervals for every model's rank (1 = highest score).

    Parameters
    ----------
    estimates : array-like of shape (p,)
        The models' scores.
    replicates : array-like of shape (B, p)
        Joint bootstrap replicates of the scores (see ``bootstrap_scores``).
    level : float, default 0.95
        The probability that every model's interval holds its true rank at once.

    Returns
    -------
    list of RankInterval
        In the order of ``estimates``.
    """
    lower, _ = difference_intervals(estimates, replicates, level=level)
    p = lower.shape[0]
    above = lower > 0  # above[j, k]: theta_j - theta_k significantly > 0
    return [RankInterval(low=1 + int(above[:, j].sum()), high=p - int(above[j, :].sum())) for j in range(p)]


def _run_variances(run_variance, models: list[str], tasks: list[str]) -> np.ndarray:
    """``(tasks, models)`` array of the runs' variance of each task's score; 0 where not given."""
    out = np.zeros((len(tasks), len(models)))
    for m, model in enumerate(models):
        given = (run_variance or {}).get(model) or {}
        for t, task in enumerate(tasks):
            value = given.get(task, 0.0)
            value = 0.0 if value is None else value
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise FineGrainError(f"run_variance of {model!r} on {task!r} must be a finite number >= 0, got {value!r}")
            out[t, m] = value
    return out


def bootstrap_scores(
    correct: Mapping[str, Mapping[str, object]],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    run_variance: Mapping[str, Mapping[str, float | None]] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Main scores (mean over tasks of the probe accuracy) and their joint bootstrap replicates.

    Within each task every model's matrix is resampled with the same items and seeds (the
    pigeonhole bootstrap), tasks independently; then each model's coarse-training run variance
    for the task is added as independent normal noise; a replicate's score is the mean over tasks.

    Parameters
    ----------
    correct : mapping of model name to mapping of task name to array-like of shape (S, n)
        Every model's correctness matrix per task (for a coarse-tuned model, averaged over its
        runs); every model has the same tasks, and per task the same shape (same seeds and items).
    n_boot : int, default 10000
        Replicates.
    seed : int, default 0
        Seed of the resampling: the same inputs and seed give the same replicates.
    run_variance : mapping of model name to mapping of task name to float, optional
        The variance the coarse-training runs add to a task's score, ``runs_std**2 / n_runs``.
        A model or task left out (or None) adds nothing: a pretrained-only model has no run.

    Returns
    -------
    models : list of str
        In ``correct``'s order.
    estimates : numpy.ndarray of shape (p,)
    replicates : numpy.ndarray of shape (n_boot, p)

    Raises
    ------
    FineGrainError
        When fewer than 2 models are given, their tasks differ, a task's matrices do not pair,
        or a run variance is negative or not finite.
    """
    n_boot = check_count(n_boot, "n_boot", 100)
    models = list(correct)
    if len(models) < 2:
        raise FineGrainError(f"ranking needs at least 2 models, got {models}")
    tasks = list(correct[models[0]])
    if not tasks:
        raise FineGrainError(f"model {models[0]!r} has no task")
    for model in models[1:]:
        if set(correct[model]) != set(tasks):
            raise FineGrainError(f"model {model!r} is scored on tasks {sorted(correct[model])}, model {models[0]!r} on {sorted(tasks)}")
    variances = _run_variances(run_variance, models, tasks)
    rng = np.random.default_rng(seed)
    estimates = np.zeros(len(models))
    replicates = np.zeros((n_boot, len(models)))
    for t, task in enumerate(tasks):
        matrices = [as_matrix(correct[model][task], f"{model}'s {task} correctness", low=0.0, high=1.0) for model in models]
        for model, matrix in zip(models, matrices):
            if matrix.shape != matrices[0].shape:
                raise FineGrainError(
                    f"{task}: {model}'s matrix has shape {matrix.shape}, {models[0]}'s {matrices[0].shape}: they must share seeds and items"
                )
        estimates += [matrix.mean() for matrix in matrices]
        replicates += joint_pigeonhole_means(matrices, n_boot=n_boot, rng=rng)
        if variances[t].any():  # drawn only when needed: boards without runs keep their replicates
            replicates += rng.normal(size=(n_boot, len(models))) * np.sqrt(variances[t])[None, :]
    return models, estimates / len(tasks), replicates / len(tasks)


def main_score_interval(
    matrices: Sequence[object], runs: Sequence[tuple[float | None, int]] | None = None, *, level: float = 0.95
) -> tuple[float, float]:
    """Confidence interval for a model's main score, the mean over tasks of its probe accuracies.

    Tasks are independent samples: the mean's variance is the sum over tasks of each task's
    variance components (items, support sets and ``runs_std**2 / n_runs`` for the runs, with
    ``n_runs - 1`` degrees of freedom) over ``T**2``, with a Satterthwaite t quantile. For one
    task it is the task's own ``ci95`` (:func:`~mteb_finegrain.uncertainty.evidence.runs_interval`).

    Parameters
    ----------
    matrices : sequence of array-like of shape (S, n)
        One correctness matrix per task (averaged over coarse-training runs where there are several).
    runs : sequence of (float or None, int), optional
        Per task ``(runs_std, n_runs)``; None or ``runs_std`` None: no run term (pretrained).
    level : float, default 0.95
        Confidence level.

    Returns
    -------
    (float, float)
        The interval's ends, clipped to [0, 1].

    Raises
    ------
    FineGrainError
        When no matrix is given, a matrix is invalid, ``runs`` does not have one entry per
        task, or ``level`` is not in (0, 1).
    """
    level = check_level(level)
    if not matrices:
        raise FineGrainError("main_score_interval needs at least one task's correctness matrix")
    runs = list(runs) if runs is not None else [(None, 1)] * len(matrices)
    if len(runs) != len(matrices):
        raise FineGrainError(f"runs has {len(runs)} entries for {len(matrices)} tasks")
    squared = len(matrices) ** 2
    means, terms = [], []
    for k, (values, (runs_std, n_runs)) in enumerate(zip(matrices, runs)):
        anova = two_way_anova(as_matrix(values, f"task {k}'s correctness", low=0.0, high=1.0))
        means.append(anova.mean)
        terms += [(term / squared, df) for term, df in anova.satterthwaite_terms()]
        if runs_std and n_runs > 1:
            terms.append((runs_std**2 / n_runs / squared, n_runs - 1))
    center = float(np.mean(means))
    variance = max(0.0, sum(term for term, _ in terms))
    if variance == 0.0:
        return center, center
    df = satterthwaite_df(terms)
    quantile = stats.norm.ppf(0.5 + level / 2) if math.isinf(df) else stats.t.ppf(0.5 + level / 2, df)
    half = float(quantile) * math.sqrt(variance)
    return max(0.0, center - half), min(1.0, center + half)
