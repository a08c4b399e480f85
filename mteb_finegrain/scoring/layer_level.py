"""One job of a stage's scoring: every score of one layer at one level of the hierarchy.

It runs in a worker process, so this module imports only what scoring needs (numpy, scikit-learn):
a worker that imported torch and mteb would start slower and hold half a gigabyte more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from threadpoolctl import threadpool_limits

from mteb_finegrain.protocol import CLUSTERING_METRICS, WITHIN_PARENT_METRICS
from mteb_finegrain.scoring.clustering import clustering_scores, within_coarse_scores
from mteb_finegrain.scoring.fewshot_probe import fit_probe, warm_start_from, warm_start_ladder


def _record(stage: str, level: str, layer: int, metric: str, values: list[float], shots: int | None = None) -> dict:
    return {
        "stage": stage,
        "level": level,
        "layer": layer,
        "metric": metric,
        "shots": shots,
        "value": float(np.mean(values)),
        "std": float(np.std(values)),
    }


def _normalise(embeddings: np.ndarray) -> np.ndarray:
    # Cosine geometry for every layer: raw hidden-state norms differ a lot between layers. The
    # floor only keeps an all-zero row at zero instead of dividing by zero.
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


@dataclass
class LevelJob:
    """What one (layer, level) job needs, and nothing more (it is sent to a worker process).

    The fields from ``kmeans_l2_normalize`` on are the protocol's settings of the same names
    (``Protocol.clustering_options()`` and ``Protocol.probe_options()``); their defaults are the
    protocol's defaults.
    """

    stage: str
    layer: int
    level: str
    truth: list[str]  # evaluation labels at this level
    parents: list[str] | None  # evaluation labels one level coarser (None at the coarsest)
    eval_x: np.ndarray
    pool_rows: dict[tuple[int, int], np.ndarray]  # (seed, shots) -> few-shot embeddings, warm-start rungs included (validation seeds too)
    pool_labels: dict[tuple[int, int], list[str]]
    valid_x: np.ndarray | None  # finest level only: the validation probes choose the layer
    valid_truth: list[str] | None
    shots: tuple[int, ...]
    main_shots: int
    warm_start: bool  # each probe starts from the one below it on the shot ladder (see fewshot_probe)
    probe_seeds: list[int]  # the probes scored on the evaluation split
    clustering_seeds: list[int]
    validation_seeds: list[int] | None = None  # the probes that score the validation split (finest level); disjoint from probe_seeds
    clustering_values: dict[str, list[float]] | None = None  # from the score cache: k-means is not run
    kmeans_l2_normalize: bool = True
    kmeans_n_init: int = 1
    kmeans_max_iter: int = 300
    kmeans_tol: float = 1e-4
    probe_max_iter: int = 100
    probe_tol: float = 1e-4
    probe_c: float = 1.0
    probe_standardize: bool = True


@dataclass
class LevelScores:
    clustering: list[dict]  # k-means and within-parent records
    probes: list[dict]
    validation: float | None  # mean validation accuracy of the validation seeds' main-shot probes (finest level only)
    clustering_values: dict[str, list[float]]  # per-seed clustering scores (what the score cache keeps)
    convergence_warnings: int = 0  # probe fits (rungs included) that stopped at probe_max_iter
    # shots -> (probe seeds x evaluation items) correctness, for the intervals of probe_accuracy.
    correct: dict[int, np.ndarray] | None = None
    # Finest level only: the main-shot probes' predicted label per (seed, item), and the labels the codes index.
    predicted: np.ndarray | None = None
    labels: list[str] | None = None
    # Finest level only: validation accuracy of the evaluation seeds' own main-shot probes (the
    # choice protocols up to 3.1 made), kept to measure what the disjoint seeds change.
    validation_with_scoring_seeds: float | None = None


def score_layer_level(job: LevelJob) -> LevelScores:
    """Every score of one layer at one level of the hierarchy (one job of ``score_stage``)."""
    with threadpool_limits(1):
        values = job.clustering_values
        if values is None:
            # k-means on cosine geometry by default; the probes standardise their own inputs.
            points = _normalise(job.eval_x) if job.kmeans_l2_normalize else job.eval_x
            kmeans = {"n_init": job.kmeans_n_init, "max_iter": job.kmeans_max_iter, "tol": job.kmeans_tol}
            values = clustering_scores(points, job.truth, job.clustering_seeds, **kmeans)
            if job.parents is not None:
                values.update(within_coarse_scores(points, job.parents, job.truth, job.clustering_seeds, **kmeans))
        clustering = [_record(job.stage, job.level, job.layer, metric, values[metric]) for metric in (*CLUSTERING_METRICS, *WITHIN_PARENT_METRICS) if metric in values]
        # Labels as their rank among the level's sorted labels: the same classes in the same order
        # as the strings (so the same fits and predictions), and much faster to compare.
        labels = sorted({*job.truth, *(job.valid_truth or ()), *(y for ys in job.pool_labels.values() for y in ys)})
        rank = {label: i for i, label in enumerate(labels)}

        def ranks(names):
            return np.array([rank[y] for y in names])

        truth = ranks(job.truth)
        finest = job.valid_x is not None
        valid_truth = ranks(job.valid_truth) if finest else None
        probe = {"max_iter": job.probe_max_iter, "tol": job.probe_tol, "C": job.probe_c, "standardize": job.probe_standardize}
        not_converged = 0

        def fit_ladder(seed: int, shots) -> dict:
            # Fewest shots first: each probe starts from the one it warm-starts from.
            nonlocal not_converged
            fitted = {}
            for n in warm_start_ladder(shots) if job.warm_start else sorted(shots):
                start = fitted.get(warm_start_from(n)) if job.warm_start else None
                fitted[n], warned = fit_probe(job.pool_rows[(seed, n)], ranks(job.pool_labels[(seed, n)]), seed, limit_threads=False, start=start, **probe)
                not_converged += warned
            return fitted

        predicted = {n: [] for n in job.shots}
        same_seed_validation = []
        for seed in job.probe_seeds:
            fitted = fit_ladder(seed, job.shots)
            for n in job.shots:
                predicted[n].append(fitted[n].predict(job.eval_x))
            if finest:
                same_seed_validation.append(float(accuracy_score(valid_truth, fitted[job.main_shots].predict(job.valid_x))))
        probes, correct = [], {}
        for n in job.shots:
            rows = np.array(predicted[n])
            correct[n] = rows == truth[None, :]
            accuracies = correct[n].mean(axis=1).tolist()
            f1s = [float(f1_score(truth, row, average="macro")) for row in rows]
            probes.append(_record(job.stage, job.level, job.layer, "probe_accuracy", accuracies, n))
            probes.append(_record(job.stage, job.level, job.layer, "probe_f1_macro", f1s, n))
        validation = validation_same = None
        if finest:
            # The layer is chosen by other support sets than those that score the evaluation split.
            validation_scores = []
            for seed in job.validation_seeds or job.probe_seeds:
                fitted = fit_ladder(seed, [job.main_shots])
                validation_scores.append(float(accuracy_score(valid_truth, fitted[job.main_shots].predict(job.valid_x))))
            validation = float(np.mean(validation_scores))
            validation_same = float(np.mean(same_seed_validation))
        main_predicted = np.array(predicted[job.main_shots]) if finest else None
    return LevelScores(clustering, probes, validation, values, not_converged, correct, main_predicted, labels if finest else None, validation_same)
