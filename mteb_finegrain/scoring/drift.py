"""Representation drift between two embeddings of the same texts: debiased linear CKA.

Linear CKA (Kornblith et al., 2019) with the unbiased HSIC estimator of Song et al. (2012), i.e.
Kornblith's ``cka(gram_x, gram_y, debiased=True)`` on linear kernels. The biased estimator has a
floor: on independent data of n texts and d dimensions it is about d / (n + d) (0.43 at n = 499,
d = 384), so it cannot tell "unrelated" from "somewhat similar" at the benchmark's sizes; the
debiased one is about 0 there.

Everything is computed from d x d feature-space products (``X.T @ Y``), never from the n x n Gram
matrices, so a full evaluation split (n = 4,500, d = 768) needs no subsampling.

Derivation. With K = X X^T, L = Y Y^T and K~, L~ the same with zeroed diagonals, the unbiased
estimator is

    HSIC_u(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n - 1)(n - 2)) - 2 / (n - 2) 1^T K~ L~ 1] / (n (n - 3)).

Write r_i = ||x_i||^2 (the diagonal of K), s_i = ||y_i||^2, u = X^T 1 and v = Y^T 1. Then

    tr(K~ L~)   = sum_{i != j} K_ij L_ij = ||X^T Y||_F^2 - r . s
    1^T K~ 1    = ||X^T 1||^2 - sum_i r_i = ||u||^2 - sum(r)
    K~ 1        = X u - r,  so  1^T K~ L~ 1 = (X u - r) . (Y v - s)

which costs O(n d1 d2). The factor 1 / (n (n - 3)) cancels in CKA and is left out.

HSIC_u only sees the off-diagonal entries of the U-centred Gram matrices, which ignore adding a
constant vector to every row, so the columns are mean-centred first: the value is the same, but the
terms above no longer cancel each other to many digits when all embeddings share a large common
direction, as L2-normalised transformer embeddings do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.scoring.embedding_checks import finite_float64, real_matrix


# Rows with a smaller norm are left as they are instead of being divided by it, as the clustering
# scores do (mteb_finegrain.scoring.layer_level), so that the CKA sees the embeddings k-means sees.
_NORM_FLOOR = 1e-12


@dataclass(frozen=True)
class _Side:
    """One embedding matrix with the quantities the feature-space HSIC terms need."""

    centred: np.ndarray  # (n, d) float64, columns mean-centred
    row_norms: np.ndarray  # r_i = ||x_i||^2
    k_ones: np.ndarray  # K~ 1 = X (X^T 1) - r
    ones_k_ones: float  # 1^T K~ 1
    self_hsic: float  # n (n - 3) HSIC_u(K, K)


def _as_embeddings(x, name: str) -> np.ndarray:
    array = real_matrix(x, name)
    if array.shape[0] < 4:
        # n (n - 3) in the estimator's denominator: it is undefined for fewer than 4 texts.
        raise FineGrainError(f"{name} has {array.shape[0]} rows; debiased CKA needs at least 4 texts")
    if array.shape[1] < 1:
        raise FineGrainError(f"{name} has no columns (shape {array.shape})")
    return finite_float64(array, name)


def _scaled_hsic(a: _Side, b: _Side, cross_squared: float) -> float:
    """n (n - 3) HSIC_u(K, L), given ``cross_squared`` = ||X^T Y||_F^2."""
    n = a.centred.shape[0]
    trace = cross_squared - float(a.row_norms @ b.row_norms)
    return trace + a.ones_k_ones * b.ones_k_ones / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a.k_ones @ b.k_ones)


def _prepare(x, name: str, l2_normalize: bool) -> _Side:
    array = _as_embeddings(x, name)
    if l2_normalize:
        array /= np.maximum(np.linalg.norm(array, axis=1, keepdims=True), _NORM_FLOOR)
    scale = np.abs(array).max()
    array -= array.mean(axis=0)
    # Relative to the data's scale: identical rows leave rounding noise after centring, not zeros.
    if not np.abs(array).max() > 1e-12 * scale:
        raise FineGrainError(f"{name} has the same embedding in every row: CKA is undefined without variance")
    row_norms = np.einsum("ij,ij->i", array, array)
    column_sums = array.sum(axis=0)
    k_ones = array @ column_sums - row_norms
    gram = array.T @ array
    side = _Side(array, row_norms, k_ones, float(column_sums @ column_sums - row_norms.sum()), 0.0)
    self_hsic = _scaled_hsic(side, side, float(np.vdot(gram, gram)))
    if not self_hsic > 0:
        raise FineGrainError(f"{name} has no variance the unbiased HSIC estimator can see (HSIC_u(K, K) = {self_hsic})")
    return _Side(side.centred, row_norms, k_ones, side.ones_k_ones, self_hsic)


def _cka(a: _Side, b: _Side) -> float:
    cross = a.centred.T @ b.centred
    return _scaled_hsic(a, b, float(np.vdot(cross, cross))) / np.sqrt(a.self_hsic * b.self_hsic)


def _check_same_texts(x, y, names=("x", "y")) -> None:
    nx, ny = np.shape(x)[0] if np.ndim(x) else 0, np.shape(y)[0] if np.ndim(y) else 0
    if nx != ny:
        raise FineGrainError(f"{names[0]} has {nx} rows and {names[1]} has {ny}: CKA compares two embeddings of the same texts")


def debiased_linear_cka(x, y, *, l2_normalize: bool = True) -> float:
    """Debiased linear CKA between two embeddings of the same n texts.

    HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L)) with linear kernels K = X X^T, L = Y Y^T and the
    unbiased HSIC estimator of Song et al. (2012), as Kornblith et al. (2019) ``cka(..., debiased=True)``.
    Computed in float64 from d x d products in O(n d1 d2) time and O(d1 d2) extra memory; the n x n
    Gram matrices are never formed (see the module docstring for the derivation).

    Parameters
    ----------
    x : array-like of shape (n_texts, d1)
        Pooled embeddings of one layer (or one model).
    y : array-like of shape (n_texts, d2)
        Pooled embeddings of the same texts, in the same order, from another layer or model.
    l2_normalize : bool, default=True
        L2-normalise every row first, as the clustering scores do before k-means, so the CKA
        compares the geometry k-means sees (cosine). Rows with norm below 1e-12 are left as they are.

    Returns
    -------
    float
        About 1 when ``y`` is a rotation or isotropic rescaling of ``x``, about 0 (it can be
        slightly negative) when the two are unrelated.

    Raises
    ------
    FineGrainError
        If the arrays are not 2-D, differ in their number of rows, have fewer than 4 rows, hold a
        non-finite value, or have no variance.
    """
    _check_same_texts(x, y)
    return _cka(_prepare(x, "x", l2_normalize), _prepare(y, "y", l2_normalize))


def permutation_baseline(x, y, seed: int, *, l2_normalize: bool = True) -> float:
    """Debiased linear CKA of ``x`` against ``y`` with its rows shuffled: the value for unrelated texts.

    Parameters
    ----------
    x : array-like of shape (n_texts, d1)
    y : array-like of shape (n_texts, d2)
    seed : int
        Seed of the row permutation (``numpy.random.default_rng(seed).permutation``).
    l2_normalize : bool, default=True
        As in :func:`debiased_linear_cka`.

    Returns
    -------
    float
        Close to 0 for any pair of embeddings; a value far from 0 means the CKA of the pair is not
        to be trusted at this n.

    Raises
    ------
    FineGrainError
        As :func:`debiased_linear_cka`.
    """
    _check_same_texts(x, y)
    y = real_matrix(y, "y")
    shuffled = y[np.random.default_rng(seed).permutation(y.shape[0])]
    return debiased_linear_cka(x, shuffled, l2_normalize=l2_normalize)


def layer_cka_matrix(layers: Sequence, *, l2_normalize: bool = True) -> np.ndarray:
    """Debiased linear CKA between every pair of layers of one model state (one stage).

    Parameters
    ----------
    layers : sequence of array-like, each of shape (n_texts, d_l)
        Pooled embeddings of the same texts, one array per layer.
    l2_normalize : bool, default=True
        As in :func:`debiased_linear_cka`.

    Returns
    -------
    ndarray of shape (n_layers, n_layers)
        Symmetric, with ones on the diagonal; entry (i, j) is ``debiased_linear_cka(layers[i], layers[j])``.

    Raises
    ------
    FineGrainError
        If ``layers`` is empty, the layers differ in their number of rows, or any layer fails the
        checks of :func:`debiased_linear_cka`.
    """
    if len(layers) == 0:
        raise FineGrainError("layers is empty: layer_cka_matrix needs at least one layer")
    for i in range(1, len(layers)):
        _check_same_texts(layers[0], layers[i], names=("layers[0]", f"layers[{i}]"))
    sides = [_prepare(layer, f"layers[{i}]", l2_normalize) for i, layer in enumerate(layers)]
    matrix = np.eye(len(sides))
    for i in range(len(sides)):
        for j in range(i + 1, len(sides)):
            matrix[i, j] = matrix[j, i] = _cka(sides[i], sides[j])
    return matrix
