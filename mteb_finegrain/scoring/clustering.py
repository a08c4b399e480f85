"""Clustering scores of one layer against the labels of one level.

k-means with k = number of classes, one run per seed, on every text; V-measure (the measure of MTEB's
clustering tasks, though MTEB clusters bootstrapped subsets with MiniBatchKMeans instead),
AMI (adjusted mutual information, arithmetic normalisation as scikit-learn's default: the
information-theoretic score corrected for chance, which V-measure is not), ARI (pair-counting,
chance-corrected) and cluster accuracy (best one-to-one cluster -> class matching, Hungarian
algorithm). NMI is not recorded: V-measure is NMI with the arithmetic mean, and the geometric
NMI that protocols up to 3.1 stored never differed from it by more than 0.005 on the board.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, v_measure_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.utils import check_random_state

from mteb_finegrain.protocol import CLUSTERING_METRICS


# Bump when clustering_scores or within_coarse_v_measure compute anything differently: cached
# clustering scores (see embedding_cache.clustering_key) made under other rules are then not used.
CLUSTERING_RULES = 1


def cluster_accuracy(labels: Sequence, clusters: Sequence[int]) -> float:
    """Share of examples whose cluster is matched to their class by the best one-to-one matching."""
    table = contingency_matrix(labels, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels))


def kmeans_plusplus_indices(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The rows that ``KMeans(n_clusters=k, n_init=1, random_state=seed)`` seeds its centres with.

    scikit-learn's k-means++ (on the mean-centred data, as ``KMeans.fit`` runs it), with the same
    arithmetic: distances computed in float64 and rounded to the data's float32. scikit-learn
    upcasts the whole data set again at each of the k steps; here it is upcast once, which makes
    a CLINC150 k-means run (mostly this seeding) about 14% faster. ``tests/test_scoring.py``
    checks that the rows equal those of ``sklearn.cluster.kmeans_plusplus``.

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, n_features)
    k : int
        Number of centres.
    seed : int
        ``random_state`` of the k-means++ draw.

    Returns
    -------
    ndarray of shape (k,)
        Row indices into ``embeddings``.
    """
    random_state = check_random_state(seed)
    centred = embeddings - embeddings.mean(axis=0)
    upcast = centred.astype(np.float64)
    squared_norms = np.einsum("ij,ij->i", upcast, upcast)
    weights = np.ones(len(embeddings), dtype=embeddings.dtype)
    n_local_trials = 2 + int(np.log(k))

    def squared_distances(rows: np.ndarray) -> np.ndarray:
        distances = -2 * (upcast[rows] @ upcast.T)
        distances += squared_norms[rows][:, None]
        distances += squared_norms[None, :]
        distances = distances.astype(embeddings.dtype)
        return np.maximum(distances, 0, out=distances)

    indices = np.empty(k, dtype=int)
    indices[0] = random_state.choice(len(embeddings), p=weights / weights.sum())
    closest = squared_distances(indices[:1])
    potential = closest @ weights
    for c in range(1, k):
        # Candidates drawn with probability proportional to the squared distance to the nearest
        # centre; the one that lowers the potential most is kept.
        draws = random_state.uniform(size=n_local_trials) * potential
        candidates = np.searchsorted(np.cumsum(weights * closest), draws)
        np.clip(candidates, None, closest.size - 1, out=candidates)
        distances = np.minimum(closest, squared_distances(candidates))
        potentials = distances @ weights.reshape(-1, 1)
        best = np.argmin(potentials)
        potential, closest = potentials[best], distances[best]
        indices[c] = candidates[best]
    return indices


def _kmeans(embeddings: np.ndarray, k: int, seed: int, n_init: int = 1, max_iter: int = 300, tol: float = 1e-4) -> np.ndarray:
    # The clusters of KMeans(n_clusters=k, n_init=n_init, random_state=seed, ...). With one run
    # (the protocol's default) and float32 embeddings its k-means++ seeding is done faster here (see
    # kmeans_plusplus_indices; other dtypes are not upcast, so scikit-learn seeds them itself, as it
    # does each of several runs); the Lloyd iterations are scikit-learn's own.
    fast = n_init == 1 and embeddings.dtype == np.float32
    init = embeddings[kmeans_plusplus_indices(embeddings, k, seed)] if fast else "k-means++"
    return KMeans(n_clusters=k, n_init=n_init, init=init, max_iter=max_iter, tol=tol, random_state=seed).fit_predict(embeddings)


def clustering_scores(
    embeddings: np.ndarray, fine: Sequence[str], seeds: Sequence[int], *, n_init: int = 1, max_iter: int = 300, tol: float = 1e-4
) -> dict[str, list[float]]:
    """Per-seed clustering scores of ``embeddings`` against ``fine``.

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, n_features)
    fine : sequence of str
        The labels; k is their number of classes.
    seeds : sequence of int
        One k-means (``random_state``) per seed.
    n_init, max_iter, tol : int, int, float
        ``KMeans``'s (``Protocol.kmeans_n_init``, ``kmeans_max_iter``, ``kmeans_tol``).

    Returns
    -------
    dict
        Metric name -> one value per seed, for ``CLUSTERING_METRICS``.
    """
    k = len(set(fine))
    scores: dict[str, list[float]] = {m: [] for m in CLUSTERING_METRICS}
    for seed in seeds:
        clusters = _kmeans(embeddings, k, seed, n_init, max_iter, tol)
        scores["v_measure"].append(float(v_measure_score(fine, clusters)))
        scores["ami"].append(float(adjusted_mutual_info_score(fine, clusters, average_method="arithmetic")))
        scores["ari"].append(float(adjusted_rand_score(fine, clusters)))
        scores["cluster_accuracy"].append(cluster_accuracy(fine, clusters))
    return scores


def within_coarse_scores(
    embeddings: np.ndarray,
    coarse: Sequence[str],
    fine: Sequence[str],
    seeds: Sequence[int],
    *,
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> dict[str, list[float]]:
    """V-measure and AMI of fine classes inside each coarse class, support-weighted, one value per seed.

    Inside coarse class c, k-means runs on c's examples alone with k = c's number of fine
    classes: how well fine classes separate where the coarse label cannot help. Coarse classes
    with a single fine class have nothing to separate and are left out of the mean. Both
    metrics score the same clusterings. ``n_init``, ``max_iter``, ``tol``: as for
    ``clustering_scores``.

    Returns
    -------
    dict
        ``{"within_coarse_v_measure": [...], "within_coarse_ami": [...]}``, one value per seed.
    """
    coarse_arr, fine_arr = np.asarray(coarse), np.asarray(fine)
    groups = []
    for label in sorted(set(coarse)):
        members = np.flatnonzero(coarse_arr == label)
        k = len(set(fine_arr[members]))
        if k > 1:
            groups.append((members, k))
    if not groups:
        return {"within_coarse_v_measure": [float("nan")] * len(seeds), "within_coarse_ami": [float("nan")] * len(seeds)}
    weights = np.array([len(m) for m, _ in groups], dtype=float)
    values: dict[str, list[float]] = {"within_coarse_v_measure": [], "within_coarse_ami": []}
    for seed in seeds:
        clusterings = [(fine_arr[m], _kmeans(embeddings[m], k, seed, n_init, max_iter, tol)) for m, k in groups]
        values["within_coarse_v_measure"].append(float(np.average([v_measure_score(t, c) for t, c in clusterings], weights=weights)))
        values["within_coarse_ami"].append(float(np.average([adjusted_mutual_info_score(t, c, average_method="arithmetic") for t, c in clusterings], weights=weights)))
    return values


def within_coarse_v_measure(embeddings: np.ndarray, coarse: Sequence[str], fine: Sequence[str], seeds: Sequence[int], **kmeans) -> list[float]:
    """``within_coarse_scores(...)["within_coarse_v_measure"]``."""
    return within_coarse_scores(embeddings, coarse, fine, seeds, **kmeans)["within_coarse_v_measure"]
