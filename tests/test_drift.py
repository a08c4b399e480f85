import numpy as np
import pytest
from scipy.stats import ortho_group

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.scoring.drift import debiased_linear_cka, layer_cka_matrix, permutation_baseline


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _song_hsic(k, l):
    # Song et al. (2012), eq. (5), from the n x n Gram matrices with zeroed diagonals.
    n = len(k)
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    ones = np.ones(n)
    return (np.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2)) - 2 / (n - 2) * ones @ k @ l @ ones) / (n * (n - 3))


def _song_cka(x, y):
    k, l = x @ x.T, y @ y.T
    return _song_hsic(k, l) / np.sqrt(_song_hsic(k, k) * _song_hsic(l, l))


def _kornblith_cka(x, y):
    # Kornblith et al. (2019), cka(gram_x, gram_y, debiased=True) with center_gram(unbiased=True).
    def center_gram(gram):
        n = len(gram)
        gram = gram.copy()
        np.fill_diagonal(gram, 0)
        means = gram.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
        return gram

    gx, gy = center_gram(x @ x.T), center_gram(y @ y.T)
    return gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy))


def _biased_cka(x, y):
    # The plain (biased) linear CKA on L2-normalised rows, feature-space form.
    x, y = _unit_rows(x), _unit_rows(y)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _related(rng, n, d1, d2, noise=0.5):
    latent = rng.normal(size=(n, 5))
    x = latent @ rng.normal(size=(5, d1)) + noise * rng.normal(size=(n, d1)) + 3.0  # a common offset, like real embeddings
    y = latent @ rng.normal(size=(5, d2)) + noise * rng.normal(size=(n, d2)) - 1.0
    return x, y


@pytest.mark.parametrize(("n", "d1", "d2"), [(4, 3, 2), (60, 10, 7), (40, 80, 30), (150, 24, 24)])
def test_feature_space_form_equals_gram_references(n, d1, d2):
    rng = np.random.default_rng(n + d1)
    x, y = _related(rng, n, d1, d2)
    # Uncentred Gram matrices in the references: the centring done inside must not change the value.
    for l2 in (True, False):
        gx, gy = (_unit_rows(x), _unit_rows(y)) if l2 else (x, y)
        song, kornblith = _song_cka(gx, gy), _kornblith_cka(gx, gy)
        assert song == pytest.approx(kornblith, abs=1e-10)
        assert debiased_linear_cka(x, y, l2_normalize=l2) == pytest.approx(song, abs=1e-10)
    # Unrelated data (values near 0, and negative ones) too, and float32 input (computed in float64).
    z = rng.normal(size=(n, d2)).astype(np.float32)
    assert debiased_linear_cka(x, z) == pytest.approx(_song_cka(_unit_rows(x), _unit_rows(z.astype(np.float64))), abs=1e-10)


def test_rotation_and_isotropic_scaling_leave_cka_at_one():
    rng = np.random.default_rng(1)
    x, _ = _related(rng, 200, 16, 16)
    rotation = ortho_group.rvs(16, random_state=2)
    # A rotation keeps row norms, so it commutes with L2 normalisation: 1 either way.
    assert debiased_linear_cka(x, x @ rotation) == pytest.approx(1.0, abs=1e-12)
    assert debiased_linear_cka(x, x @ rotation, l2_normalize=False) == pytest.approx(1.0, abs=1e-12)
    assert debiased_linear_cka(x, 3.7 * x, l2_normalize=False) == pytest.approx(1.0, abs=1e-12)
    # An anisotropic rescaling changes the geometry: CKA is not invariant to it.
    stretched = x * np.geomspace(0.1, 10.0, 16)
    assert debiased_linear_cka(x, stretched, l2_normalize=False) < 0.95


@pytest.mark.parametrize(("n", "d"), [(499, 384), (4500, 768)])
def test_independent_data_gives_zero_not_the_biased_floor(n, d):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.normal(size=(n, d)).astype(np.float32)
    assert abs(debiased_linear_cka(x, y)) < 0.05
    # The biased estimator sits near d / (n + d) on the same data (0.43 and 0.15 here).
    floor = d / (n + d)
    assert _biased_cka(x.astype(np.float64), y.astype(np.float64)) == pytest.approx(floor, rel=0.1)
    assert floor > 0.1


def test_permutation_baseline_is_near_zero_for_related_data():
    x, y = _related(np.random.default_rng(3), 499, 32, 20)
    assert debiased_linear_cka(x, y) > 0.5
    baseline = permutation_baseline(x, y, seed=0)
    assert abs(baseline) < 0.05
    assert permutation_baseline(x, y, seed=0) == baseline
    assert permutation_baseline(x, y, seed=1) != baseline
    shuffled = y[np.random.default_rng(0).permutation(len(y))]
    assert baseline == debiased_linear_cka(x, shuffled)


def test_layer_cka_matrix_is_the_symmetric_table_of_pairs():
    rng = np.random.default_rng(4)
    x, y = _related(rng, 120, 12, 9)
    layers = [x, y, x @ ortho_group.rvs(12, random_state=5), rng.normal(size=(120, 6))]
    matrix = layer_cka_matrix(layers)
    assert matrix.shape == (4, 4)
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), 1.0)
    for i in range(4):
        for j in range(4):
            if i != j:
                assert matrix[i, j] == pytest.approx(debiased_linear_cka(layers[i], layers[j]), abs=1e-12)
    assert matrix[0, 2] == pytest.approx(1.0, abs=1e-12)
    assert abs(matrix[0, 3]) < 0.1 < matrix[0, 1]
    np.testing.assert_array_equal(layer_cka_matrix([x]), [[1.0]])


def test_bad_input_is_named():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 4))
    with pytest.raises(FineGrainError, match="x has 10 rows and y has 9"):
        debiased_linear_cka(x, x[:9])
    with pytest.raises(FineGrainError, match="3 rows; debiased CKA needs at least 4"):
        debiased_linear_cka(x[:3], x[:3])
    bad = x.copy()
    bad[6, 2] = np.nan
    with pytest.raises(FineGrainError, match="y holds a non-finite value .* at row 6, column 2"):
        debiased_linear_cka(x, bad)
    bad[6, 2] = np.inf
    with pytest.raises(FineGrainError, match="x holds a non-finite value"):
        debiased_linear_cka(bad, x)
    with pytest.raises(FineGrainError, match="2-D"):
        debiased_linear_cka(x[:, 0], x[:, 1])
    # Rows that differ only in length are one point after L2 normalisation.
    same_direction = np.outer(np.arange(1.0, 11.0), [0.3, -1.2, 0.5, 2.0])
    with pytest.raises(FineGrainError, match="y has the same embedding in every row"):
        debiased_linear_cka(x, same_direction)
    assert np.isfinite(debiased_linear_cka(x, same_direction, l2_normalize=False))
    with pytest.raises(FineGrainError, match="layers\\[0\\] has 10 rows and layers\\[2\\] has 9"):
        layer_cka_matrix([x, x, x[:9]])
    with pytest.raises(FineGrainError, match="empty"):
        layer_cka_matrix([])
    with pytest.raises(FineGrainError, match="x has 10 rows and y has 8"):
        permutation_baseline(x, x[:8], seed=0)
