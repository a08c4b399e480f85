"""Label-free signals of one layer's pooled embeddings: effective rank (RankMe) and dataset entropy.

Both are computed from the embeddings alone, so they can rank layers without any fine labels; whether
they pick the layer the fine labels would pick is measured by :mod:`mteb_finegrain.scoring.signal_choice`.
"""

from __future__ import annotations

import numpy as np

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.scoring.embedding_checks import finite_float64, real_matrix


# Garrido et al. (2023) add this to every normalised singular value, so that log p is finite.
RANKME_EPSILON = 1e-7


def _as_embeddings(z, name: str = "z") -> np.ndarray:
    array = real_matrix(z, name)
    if array.size == 0:
        raise FineGrainError(f"{name} is empty (shape {array.shape})")
    return finite_float64(array, name)


def effective_rank(z) -> float:
    """RankMe (Garrido et al., 2023): the exponential of the entropy of the normalised singular values.

    sigma = singular values of the uncentred matrix Z; p_k = sigma_k / sum(sigma) + 1e-7;
    RankMe = exp(-sum_k p_k log p_k).

    Parameters
    ----------
    z : array-like of shape (n_texts, dim)
        Pooled embeddings of one layer, as they are (not centred, not normalised).

    Returns
    -------
    float
        Between about 1 (rank one) and min(n_texts, dim) (all singular values equal).

    Raises
    ------
    FineGrainError
        If ``z`` is not a non-empty 2-D array of finite numbers, or is all zeros.
    """
    array = _as_embeddings(z)
    sigma = np.linalg.svd(array, compute_uv=False)
    total = sigma.sum()
    if not total > 0:
        raise FineGrainError("z is all zeros: its singular values cannot be normalised")
    p = sigma / total + RANKME_EPSILON
    return float(np.exp(-np.sum(p * np.log(p))))


def dataset_entropy(z) -> float:
    """Matrix entropy of the centred, row-normalised embeddings of a data set.

    The rows of Z are centred (the column mean is subtracted), then each row is L2-normalised;
    K = Z Z^T, lambda = eigenvalues of K / tr(K) clamped at 0, and the entropy is
    -sum lambda log lambda (with 0 log 0 = 0). The eigenvalues are those of the smaller of the two
    Gram matrices Z^T Z (dim x dim) and Z Z^T, which share their non-zero eigenvalues.

    Parameters
    ----------
    z : array-like of shape (n_texts, dim)
        Pooled embeddings of one layer.

    Returns
    -------
    float
        In nats, between 0 (all variance in one direction) and log(min(n_texts - 1, dim)).

    Raises
    ------
    FineGrainError
        If ``z`` is not a 2-D array of finite numbers with at least 2 rows.

    Notes
    -----
    A row equal to the column mean (duplicate texts can make one, in a tiny split) has no
    direction after centring: it is left at zero, as the clustering's normalisation leaves an
    all-zero row, and adds nothing to K. When every row is the same (a CLS vector at the
    embedding layer is one vector for every text), nothing varies: the entropy is 0.
    """
    array = _as_embeddings(z)
    if array.shape[0] < 2:
        raise FineGrainError(f"z has {array.shape[0]} row; dataset_entropy needs at least 2 texts to centre")
    scale = np.linalg.norm(array, axis=1).max()
    array -= array.mean(axis=0)
    norms = np.linalg.norm(array, axis=1)
    # Relative to the data's scale: a row equal to the mean leaves rounding noise, not exact zeros.
    zero = norms <= 1e-12 * scale
    if zero.all():
        return 0.0
    array[zero] = 0.0
    array[~zero] /= norms[~zero, None]
    gram = array.T @ array if array.shape[1] <= array.shape[0] else array @ array.T
    eigenvalues = np.linalg.eigvalsh(gram)
    lam = np.clip(eigenvalues / np.trace(gram), 0.0, None)
    lam = lam[lam > 0]
    return float(-np.sum(lam * np.log(lam)))
