import numpy as np
import pytest
from sklearn.cluster import KMeans, kmeans_plusplus

from mteb_finegrain.scoring.clustering import _kmeans, cluster_accuracy, clustering_scores, kmeans_plusplus_indices, within_coarse_v_measure
from mteb_finegrain.scoring.fewshot_probe import fewshot_indices, probe_scores


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = {"ant": (0, 10), "bee": (0, 12), "oak": (10, 0), "elm": (12, 0)}
    fine = [f for f in centres for _ in range(20)]
    x = np.array([centres[f] for f in fine], dtype=float) + rng.normal(scale=0.2, size=(80, 2))
    coarse = ["animal" if f in ("ant", "bee") else "plant" for f in fine]
    return x, coarse, fine


def test_cluster_accuracy_uses_best_matching():
    assert cluster_accuracy(["a", "a", "b", "b"], [1, 1, 0, 0]) == 1.0
    assert cluster_accuracy(["a", "a", "b", "b"], [0, 0, 0, 0]) == 0.5


def test_separable_blobs_score_high_and_noise_low():
    x, coarse, fine = _blobs()
    scores = clustering_scores(x, fine, seeds=[0, 1])
    assert set(scores) == {"v_measure", "nmi", "ari", "cluster_accuracy"}
    assert min(scores["v_measure"]) > 0.95 and min(scores["cluster_accuracy"]) > 0.95
    noise = np.random.default_rng(1).normal(size=x.shape)
    assert max(clustering_scores(noise, fine, seeds=[0])["v_measure"]) < 0.3


@pytest.mark.parametrize(("n", "dim", "k"), [(200, 8, 4), (600, 64, 30), (450, 384, 150)])
def test_kmeans_seeding_is_scikit_learns(n, dim, k):
    # The faster k-means++ must pick the rows scikit-learn picks, so that clusters (and every score
    # on the leaderboard) stay those of KMeans(n_init=1, random_state=seed).
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[: n // 2] += 3 * rng.normal(size=dim).astype(np.float32)  # uneven density: many local trials matter
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for seed in (0, 42, 7):
        _, expected = kmeans_plusplus(x - x.mean(axis=0), k, random_state=seed)
        np.testing.assert_array_equal(kmeans_plusplus_indices(x, k, seed), expected)
        reference = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(x)
        np.testing.assert_array_equal(_kmeans(x, k, seed), reference)
    # Other dtypes are left to scikit-learn's own seeding.
    np.testing.assert_array_equal(_kmeans(x.astype(np.float64), k, 0), KMeans(n_clusters=k, n_init=1, random_state=0).fit_predict(x.astype(np.float64)))


def test_within_coarse_ignores_what_coarse_labels_explain():
    x, coarse, fine = _blobs()
    assert min(within_coarse_v_measure(x, coarse, fine, seeds=[0, 1])) > 0.9
    # fine classes merged inside each coarse class: globally still 2 clean groups, within nothing
    merged = x.copy()
    merged[:40] = [0, 11]
    merged[40:] = [11, 0]
    merged += np.random.default_rng(0).normal(scale=0.2, size=merged.shape)
    assert max(within_coarse_v_measure(merged, coarse, fine, seeds=[0])) < 0.2


def test_fewshot_samples_are_nested_seeded_and_per_class():
    labels = [c for c in "abcd" for _ in range(10)] + ["e"]
    s = fewshot_indices(labels, [1, 2, 4], seed=0)
    assert s == fewshot_indices(labels, [1, 2, 4], seed=0)
    assert s != fewshot_indices(labels, [1, 2, 4], seed=1)
    assert set(s[1]) <= set(s[2]) <= set(s[4])
    assert len(s[4]) == 4 * 4 + 1  # 'e' has one example only: all of it
    assert sorted(labels[i] for i in s[2]).count("a") == 2


def test_probe_learns_separable_classes():
    x, _, fine = _blobs()
    idx = fewshot_indices(fine, [4], seed=0)[4]
    accuracy, f1 = probe_scores(x[idx], [fine[i] for i in idx], x, fine, seed=0)
    assert accuracy > 0.95 and f1 > 0.95
