"""Owen's pigeonhole bootstrap of a crossed (seed x item) matrix: items and seeds resampled
independently with replacement, several matrices with the same draws to keep their pairing."""

from __future__ import annotations

import numpy as np

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.uncertainty.matrix import as_matrix, check_count

# At most this many float64 resampling weights (items x replicates) are held at once.
_CHUNK_CELLS = 4_000_000


def _item_counts(rng: np.random.Generator, replicates: int, items: int) -> np.ndarray:
    """How often each item is drawn in each of ``replicates`` resamples of ``items`` items with replacement."""
    draws = rng.integers(0, items, size=(replicates, items))
    draws += np.arange(replicates)[:, None] * items
    return np.bincount(draws.ravel(), minlength=replicates * items).reshape(replicates, items).astype(np.float64)


def joint_pigeonhole_means(matrices, *, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Pigeonhole-bootstrap replicates of the means of several matrices resampled with the same indices.

    Each replicate draws ``n`` items and ``S`` seeds independently with replacement, the same
    draws for every matrix (the matrices are models scored on the same items and seeds, so the
    pairing is kept), and takes each resampled matrix's grand mean.

    Parameters
    ----------
    matrices : sequence of array-like, each of shape (S, n)
        Checked with ``as_matrix``; all of one shape.
    n_boot : int
        Number of replicates, at least 1.
    rng : numpy.random.Generator
        The source of the resampling draws.

    Returns
    -------
    numpy.ndarray of shape (n_boot, len(matrices))

    Raises
    ------
    FineGrainError
        When a matrix is invalid, the shapes differ, or ``n_boot`` is not a positive integer.
    """
    n_boot = check_count(n_boot, "n_boot", 1)
    stack = [as_matrix(m, f"matrix {k}") for k, m in enumerate(matrices)]
    if not stack:
        raise FineGrainError("joint_pigeonhole_means needs at least one matrix, got none")
    shape = stack[0].shape
    for k, matrix in enumerate(stack):
        if matrix.shape != shape:
            raise FineGrainError(f"matrix {k} has shape {matrix.shape}, matrix 0 has {shape}: they must share items and seeds")
    seeds, items = shape
    # (M * S, n): every model's seed rows, so one product gives each replicate's weighted item sums.
    rows = np.concatenate(stack, axis=0)
    out = np.empty((n_boot, len(stack)))
    chunk = max(1, _CHUNK_CELLS // items)
    for start in range(0, n_boot, chunk):
        count = min(chunk, n_boot - start)
        item_weights = _item_counts(rng, count, items)
        seed_weights = _item_counts(rng, count, seeds)
        sums = (item_weights @ rows.T).reshape(count, len(stack), seeds)
        out[start : start + count] = np.einsum("cms,cs->cm", sums, seed_weights) / (items * seeds)
    return out


def pigeonhole_bootstrap(values, *, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Pigeonhole-bootstrap replicates of a ``(seeds, items)`` matrix's grand mean.

    Parameters
    ----------
    values : array-like of shape (S, n)
        Checked with ``as_matrix``.
    n_boot : int, default 2000
        Number of replicates.
    seed : int, default 0
        Seed of the resampling.

    Returns
    -------
    numpy.ndarray of shape (n_boot,)
    """
    return joint_pigeonhole_means([values], n_boot=n_boot, rng=np.random.default_rng(seed))[:, 0]
