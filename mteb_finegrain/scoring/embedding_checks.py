"""Checks of a layer's embedding matrix, shared by the computations that read one (representation
drift, label-free layer signals); each caller adds the size its estimator needs."""

from __future__ import annotations

import numpy as np

from mteb_finegrain.errors import FineGrainError


def real_matrix(x, name: str) -> np.ndarray:
    """``x`` as an array, checked to be 2-D ``(n_texts, dim)`` and to hold real numbers.

    Parameters
    ----------
    x : array-like of shape (n_texts, dim)
        Integers or floats.
    name : str
        What the caller calls it, for the error message.

    Returns
    -------
    numpy.ndarray
        ``np.asarray(x)``, not converted: the caller checks its size, then ``finite_float64``.

    Raises
    ------
    FineGrainError
        When ``x`` is not 2-D or its dtype is neither integer nor floating.
    """
    array = np.asarray(x)
    if array.ndim != 2:
        raise FineGrainError(f"{name} must be a 2-D array (n_texts, dim), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise FineGrainError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array


def finite_float64(array: np.ndarray, name: str) -> np.ndarray:
    """A float64 copy of ``array``, checked to hold no NaN or infinity.

    Raises
    ------
    FineGrainError
        Naming the first non-finite value and its row and column.
    """
    finite = np.isfinite(array)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise FineGrainError(f"{name} holds a non-finite value ({array[row, col]}) at row {row}, column {col}")
    return array.astype(np.float64)
