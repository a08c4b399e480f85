"""Few-shot linear probe: logistic regression on n frozen-layer embeddings per fine class.

This is SetFit's head stage without its contrastive body tuning: ``LogisticRegression(max_iter=100)``
on the layer's embeddings (the classifier MTEB's classification tasks use), after per-feature
standardisation fitted on the few-shot examples (hidden states have a few huge dimensions, which
makes lbfgs crawl without it). MTEB samples and scales differently, so the scores are not MTEB
classification scores. The few-shot samples depend on the seed only, never on the layer, so
layers are compared on identical training sets.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
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


def fit_probe(train_x: np.ndarray, train_y: Sequence, seed: int, limit_threads: bool = True) -> Pipeline:
    """The probe: per-feature standardisation and logistic regression, fitted on ``train_x``.

    Labels may be strings or their ranks among the sorted labels (integers): both give the same
    classes in the same order, hence the same model, and integers are faster to compare.
    ``limit_threads=False`` when the caller already runs under ``threadpool_limits(1)`` (setting
    the limits costs milliseconds, more than a small fit).
    """
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=100, random_state=seed))
    # One BLAS thread: these problems are small, and threads make them several times slower.
    with threadpool_limits(1) if limit_threads else nullcontext(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 1-shot: "more classes than 50% of samples"; max_iter
        classifier.fit(train_x, train_y)
    return classifier


def probe_accuracy_f1(classifier: Pipeline, test_x: np.ndarray, test_y: Sequence) -> tuple[float, float]:
    """Accuracy and macro-F1 of a fitted probe on ``test_x``."""
    predicted = classifier.predict(test_x)
    return float(accuracy_score(test_y, predicted)), float(f1_score(test_y, predicted, average="macro"))


def probe_scores(
    train_x: np.ndarray, train_y: Sequence, test_x: np.ndarray, test_y: Sequence, seed: int, limit_threads: bool = True
) -> tuple[float, float]:
    """Accuracy and macro-F1 of a logistic-regression probe trained on ``train_x`` (see ``fit_probe``)."""
    classifier = fit_probe(train_x, train_y, seed, limit_threads)
    with threadpool_limits(1) if limit_threads else nullcontext():
        return probe_accuracy_f1(classifier, test_x, test_y)
