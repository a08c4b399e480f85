"""Few-shot linear probe: logistic regression on n frozen-layer embeddings per fine class.

This is SetFit's head stage without its contrastive body tuning: ``LogisticRegression`` (L-BFGS,
``max_iter``, ``tol`` and ``C`` from the protocol) on the layer's embeddings (the classifier MTEB's
classification tasks use), after per-feature standardisation fitted on the few-shot examples
(hidden states have a few huge dimensions, which makes lbfgs crawl without it). MTEB samples and
scales differently, so the scores are not MTEB classification scores. The few-shot samples depend
on the seed only, never on the layer, so layers are compared on identical training sets.

Each n-shot probe may start from the probe one rung below it on the ladder 1, 2, 4, 8, ... (same
seed, so a subset of its examples; ``warm_start_from``) instead of from zero: the same optimum,
reached in about a fifth fewer L-BFGS iterations. The rung depends on n alone, so a probe's score
does not depend on which other shot counts a run asks for.

A probe that stops at ``max_iter`` is not hidden: ``fit_probe`` counts scikit-learn's
``ConvergenceWarning`` and the results report the count per stage.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import nullcontext
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mteb_finegrain.protocol import PROBE_METRICS  # noqa: F401  (the metric names this module scores)


def fewshot_indices(labels: Sequence[str], shots: Sequence[int], seed: int) -> dict[int, list[int]]:
    """Indices of ``n`` examples per class for each ``n`` in ``shots``, nested across ``n``.

    Each class is shuffled once with ``seed`` and the first ``n`` are taken, so the 2-shot set
    contains the 1-shot set and so on. A class with fewer than ``n`` examples gives all it has.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    order = {label: rng.permutation(members).tolist() for label, members in sorted(by_class.items())}
    return {n: sorted(i for members in order.values() for i in members[:n]) for n in shots}


def warm_start_from(shots: int) -> int | None:
    """The shot count whose probe the ``shots``-shot probe starts from: the largest power of two below it.

    None for 1 shot (started from zero). 16 starts from 8, 8 from 4, 6 from 4, 3 from 2.
    """
    if not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive integer, got {shots!r}")
    return None if shots == 1 else 1 << ((shots - 1).bit_length() - 1)


def warm_start_ladder(shots: Sequence[int]) -> list[int]:
    """Every shot count a run fits to score ``shots``: those asked for and the rungs they start from, ascending."""
    needed: set[int] = set()
    for n in shots:
        while n is not None and n not in needed:
            needed.add(n)
            n = warm_start_from(n)
    return sorted(needed)


# scikit-learn's guess that integer labels with more classes than half the samples are a
# regression target: every 1-shot probe of a task with over 20 classes meets it, and it is wrong.
_REGRESSION_GUESS = "The number of unique classes is greater than 50% of the number of samples"


def fit_counting_convergence_warnings(estimator, x: np.ndarray, y: Sequence) -> int:
    """``estimator.fit(x, y)``; return how many ``ConvergenceWarning`` warnings it raised.

    Those are counted instead of shown (a probe at its iteration cap is expected, and reported
    per stage in the results); scikit-learn's wrong regression guess for many-class few-shot
    labels is dropped; every other warning is shown as usual.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=_REGRESSION_GUESS, category=UserWarning)
        estimator.fit(x, y)
    count = 0
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            count += 1
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno, source=warning.source)
    return count


def fit_probe(
    train_x: np.ndarray,
    train_y: Sequence,
    seed: int,
    limit_threads: bool = True,
    start: Pipeline | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    C: float = 1.0,  # noqa: N803  (scikit-learn's name)
    standardize: bool = True,
) -> tuple[Pipeline, int]:
    """The probe: per-feature standardisation and logistic regression, fitted on ``train_x``.

    Parameters
    ----------
    train_x : ndarray of shape (n_samples, n_features)
    train_y : sequence
        Labels: strings or their ranks among the sorted labels (integers). Both give the same
        classes in the same order, hence the same model, and integers are faster to compare.
    seed : int
        ``random_state`` of the logistic regression.
    limit_threads : bool, default=True
        False when the caller already runs under ``threadpool_limits(1)`` (setting the limits
        costs milliseconds, more than a small fit).
    start : Pipeline or None
        A fitted probe whose coefficients L-BFGS starts from (see ``warm_start_from``; left
        unused when its classes differ); the standardisation is always fitted afresh.
    max_iter, tol, C : int, float, float
        ``LogisticRegression``'s (``Protocol.probe_max_iter``, ``probe_tol``, ``probe_c``).
    standardize : bool, default=True
        Standardise each feature first (``Protocol.probe_standardize``).

    Returns
    -------
    classifier : Pipeline
    convergence_warnings : int
        1 when L-BFGS stopped at ``max_iter`` before converging, else 0.
    """
    if start is not None and np.array_equal(start[-1].classes_, np.unique(train_y)):
        classifier = copy.deepcopy(start)  # warm_start=True: fit() starts from the copied coefficients
    else:
        regression = LogisticRegression(C=C, tol=tol, max_iter=max_iter, random_state=seed, warm_start=True)
        classifier = make_pipeline(StandardScaler(), regression) if standardize else make_pipeline(regression)
    # One BLAS thread: these problems are small, and threads make them several times slower.
    with threadpool_limits(1) if limit_threads else nullcontext():
        return classifier, fit_counting_convergence_warnings(classifier, train_x, train_y)


def probe_accuracy_f1(classifier: Pipeline, test_x: np.ndarray, test_y: Sequence) -> tuple[float, float]:
    """Accuracy and macro-F1 of a fitted probe on ``test_x``."""
    predicted = classifier.predict(test_x)
    return float(accuracy_score(test_y, predicted)), float(f1_score(test_y, predicted, average="macro"))


def probe_scores(
    train_x: np.ndarray, train_y: Sequence, test_x: np.ndarray, test_y: Sequence, seed: int, limit_threads: bool = True
) -> tuple[float, float]:
    """Accuracy and macro-F1 of a logistic-regression probe trained on ``train_x`` (see ``fit_probe``)."""
    classifier, _ = fit_probe(train_x, train_y, seed, limit_threads)
    with threadpool_limits(1) if limit_threads else nullcontext():
        return probe_accuracy_f1(classifier, test_x, test_y)
