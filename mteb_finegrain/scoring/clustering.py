"""Clustering scores of one layer against the labels of one level.

k-means with k = number of classes, one run per seed, on every text; V-measure (the measure of MTEB's
clustering tasks, though MTEB clusters bootstrapped subsets with MiniBatchKMeans instead),
NMI (geometric normalisation: the arithmetic one equals V-measure), ARI and cluster accuracy
(best one-to-one cluster -> class matching, Hungarian algorithm).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, v_measure_score
from sklearn.metrics.cluster import contingency_matrix

from mteb_finegrain.protocol import CLUSTERING_METRICS


# Bump when clustering_scores or within_coarse_v_measure compute anything differently: cached
# clustering scores (see embedding_cache.clustering_key) made under other rules are then not used.
CLUSTERING_RULES = 1


def cluster_accuracy(labels: Sequence, clusters: Sequence[int]) -> float:
    """Share of examples whose cluster is matched to their class by the best one-to-one matching."""
    table = contingency_matrix(labels, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels))


def _kmeans(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(embeddings)


def clustering_scores(embeddings: np.ndarray, fine: Sequence[str], seeds: Sequence[int]) -> dict[str, list[float]]:
    """Per-seed clustering scores of ``embeddings`` against ``fine``.

    Returns
    -------
    dict
        Metric name -> one value per seed, for ``CLUSTERING_METRICS``.
    """
    k = len(set(fine))
    scores: dict[str, list[float]] = {m: [] for m in CLUSTERING_METRICS}
    for seed in seeds:
        clusters = _kmeans(embeddings, k, seed)
        scores["v_measure"].append(float(v_measure_score(fine, clusters)))
        scores["nmi"].append(float(normalized_mutual_info_score(fine, clusters, average_method="geometric")))
        scores["ari"].append(float(adjusted_rand_score(fine, clusters)))
        scores["cluster_accuracy"].append(cluster_accuracy(fine, clusters))
    return scores


def within_coarse_v_measure(
    embeddings: np.ndarray, coarse: Sequence[str], fine: Sequence[str], seeds: Sequence[int]
) -> list[float]:
    """V-measure of fine classes inside each coarse class, support-weighted, one value per seed.

    Inside coarse class c, k-means runs on c's examples alone with k = c's number of fine
    classes: how well fine classes separate where the coarse label cannot help. Coarse classes
    with a single fine class have nothing to separate and are left out of the mean.
    """
    coarse_arr, fine_arr = np.asarray(coarse), np.asarray(fine)
    groups = []
    for label in sorted(set(coarse)):
        members = np.flatnonzero(coarse_arr == label)
        k = len(set(fine_arr[members]))
        if k > 1:
            groups.append((members, k))
    if not groups:
        return [float("nan")] * len(seeds)
    weights = np.array([len(m) for m, _ in groups], dtype=float)
    values = []
    for seed in seeds:
        per_group = [v_measure_score(fine_arr[m], _kmeans(embeddings[m], k, seed)) for m, k in groups]
        values.append(float(np.average(per_group, weights=weights)))
    return values
