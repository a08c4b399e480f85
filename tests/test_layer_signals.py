import numpy as np
import pytest

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.scoring.layer_signals import RANKME_EPSILON, dataset_entropy, effective_rank

# Columns 2-4 of the 4 x 4 Hadamard matrix, scaled by 3, 2 and 1:
#   Z = [[ 3,  2,  1],
#        [-3,  2, -1],
#        [ 3, -2, -1],
#        [-3, -2,  1]]
# The columns are orthogonal (each pair of sign patterns agrees in two rows and differs in two), with
# norms 2*3, 2*2, 2*1, so Z^T Z = diag(36, 16, 4) and the singular values are 6, 4, 2.
# Every column sums to 0, so centring leaves Z as it is, and every row has norm sqrt(9 + 4 + 1) = sqrt(14).
HADAMARD = np.array([[3.0, 2, 1], [-3, 2, -1], [3, -2, -1], [-3, -2, 1]])


def test_rankme_golden():
    # sigma = (6, 4, 2), sum 12: p = (1/2, 1/3, 1/6) + 1e-7.
    p = np.array([1 / 2, 1 / 3, 1 / 6]) + 1e-7
    expected = np.exp(-(p[0] * np.log(p[0]) + p[1] * np.log(p[1]) + p[2] * np.log(p[2])))  # ~ 2.7495
    assert effective_rank(HADAMARD) == pytest.approx(expected, abs=1e-9)
    assert 2.749 < expected < 2.750
    # Rank one, uncentred: the 4 x 3 matrix of ones has sigma = (sqrt(12), 0, 0), p = (1 + e, e, e) with
    # e = 1e-7, so RankMe = exp(-((1 + e) log(1 + e) + 2 e log e)) = 1.0000031..., not 1: the epsilon counts.
    e = RANKME_EPSILON
    assert effective_rank(np.ones((4, 3))) == pytest.approx(np.exp(-((1 + e) * np.log1p(e) + 2 * e * np.log(e))), abs=1e-9)
    assert effective_rank(np.ones((4, 3))) - 1 > 3e-6
    # Uncentred: the same rows moved by a common offset have other singular values.
    assert effective_rank(HADAMARD + 10) < 2.0
    assert effective_rank(7.5 * HADAMARD) == pytest.approx(effective_rank(HADAMARD), abs=1e-12)


def test_dataset_entropy_golden():
    # Rows already centred; divided by sqrt(14): Z^T Z / 14 = diag(36, 16, 4) / 14, trace 56 / 14 = 4 = n,
    # so lambda = (36, 16, 4) / 56 = (9/14, 2/7, 1/14) and the entropy is -sum lambda log lambda (~ 0.8305).
    lam = np.array([9 / 14, 2 / 7, 1 / 14])
    expected = -(lam[0] * np.log(lam[0]) + lam[1] * np.log(lam[1]) + lam[2] * np.log(lam[2]))
    assert dataset_entropy(HADAMARD) == pytest.approx(expected, abs=1e-9)
    assert 0.830 < expected < 0.831
    # Centred first: a common offset changes nothing.
    assert dataset_entropy(HADAMARD + [5.0, -2.0, 40.0]) == pytest.approx(expected, abs=1e-9)
    # Points on one line: mean (7/3, 5), centred rows (-4/3, 0), (-1/3, 0), (5/3, 0) are +-e1 after
    # normalisation, so K has one non-zero eigenvalue, lambda = (1, 0, 0) and the entropy is 0.
    assert dataset_entropy([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]]) == pytest.approx(0.0, abs=1e-9)


def _gram_rankme(z):
    # Singular values from the n x n Gram matrix Z Z^T: the square roots of its min(n, d) largest eigenvalues.
    eigenvalues = np.sort(np.linalg.eigvalsh(z @ z.T))[::-1][: min(z.shape)]
    sigma = np.sqrt(np.clip(eigenvalues, 0, None))
    p = sigma / sigma.sum() + 1e-7
    return np.exp(-np.sum(p * np.log(p)))


def _gram_entropy(z):
    z = z - z.mean(axis=0)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    k = z @ z.T
    lam = np.clip(np.linalg.eigvalsh(k) / np.trace(k), 0, None)
    lam = lam[lam > 0]
    return -np.sum(lam * np.log(lam))


@pytest.mark.parametrize(("n", "d"), [(80, 20), (30, 50), (40, 40)])
def test_signals_equal_n_by_n_gram_implementations(n, d):
    rng = np.random.default_rng(n * d)
    # Anisotropic, with an offset, so that neither signal is near its extreme.
    z = rng.normal(size=(n, d)) * np.geomspace(0.05, 3.0, d) + rng.normal(size=d)
    assert effective_rank(z) == pytest.approx(_gram_rankme(z), abs=1e-9)
    assert dataset_entropy(z) == pytest.approx(_gram_entropy(z), abs=1e-9)
    assert dataset_entropy(z.astype(np.float32)) == pytest.approx(_gram_entropy(z.astype(np.float32).astype(np.float64)), abs=1e-9)
    assert 1 < effective_rank(z) < min(n, d)
    assert 0 < dataset_entropy(z) < np.log(min(n - 1, d))


def test_bad_input_is_named():
    with pytest.raises(FineGrainError, match="2-D"):
        effective_rank(np.ones(4))
    with pytest.raises(FineGrainError, match="empty"):
        dataset_entropy(np.ones((0, 3)))
    bad = HADAMARD.copy()
    bad[2, 1] = np.nan
    with pytest.raises(FineGrainError, match="non-finite value .* at row 2, column 1"):
        effective_rank(bad)
    with pytest.raises(FineGrainError, match="non-finite"):
        dataset_entropy(bad)
    with pytest.raises(FineGrainError, match="all zeros"):
        effective_rank(np.zeros((4, 3)))
    with pytest.raises(FineGrainError, match="at least 2 texts"):
        dataset_entropy(HADAMARD[:1])
    with pytest.raises(FineGrainError, match="row 0 of z equals the column mean"):
        dataset_entropy(np.full((5, 3), 0.1))
    with pytest.raises(FineGrainError, match="row 2 of z equals the column mean"):
        dataset_entropy([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
