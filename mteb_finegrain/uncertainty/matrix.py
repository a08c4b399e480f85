"""The ``(seeds, items)`` matrix every interval and comparison reads, and the option checks they share."""

from __future__ import annotations

import numpy as np

from mteb_finegrain.errors import FineGrainError


def as_matrix(values, name: str = "values", *, low: float | None = None, high: float | None = None) -> np.ndarray:
    """``values`` as a float64 ``(seeds, items)`` matrix, checked: 2-D, at least 2 x 2, finite, in range.

    Parameters
    ----------
    values : array-like of shape (S, n)
        One row per seed (support set), one column per evaluation item; booleans allowed.
    name : str
        What the caller calls it, for the error message.
    low, high : float, optional
        Inclusive bounds every value must lie within.

    Returns
    -------
    numpy.ndarray of shape (S, n), dtype float64

    Raises
    ------
    FineGrainError
        When ``values`` is not numeric, not 2-D, has fewer than 2 seeds or 2 items, holds a
        non-finite value or one outside ``[low, high]``.
    """
    try:
        matrix = np.asarray(values)
    except (TypeError, ValueError) as error:  # ragged rows
        raise FineGrainError(f"{name} is not a (seeds x items) matrix: {error}") from None
    if matrix.dtype == bool:
        matrix = matrix.astype(np.float64)
    if not (np.issubdtype(matrix.dtype, np.integer) or np.issubdtype(matrix.dtype, np.floating)):
        raise FineGrainError(f"{name} must hold numbers or booleans, got dtype {matrix.dtype}")
    matrix = matrix.astype(np.float64, copy=False)
    if matrix.ndim != 2:
        raise FineGrainError(f"{name} must be a 2-D (seeds x items) matrix, got shape {matrix.shape}")
    seeds, items = matrix.shape
    if seeds < 2:
        raise FineGrainError(
            f"{name} has {seeds} seed row(s) (shape {matrix.shape}): the support-set variance needs at least 2 seeds"
        )
    if items < 2:
        raise FineGrainError(f"{name} has {items} item column(s) (shape {matrix.shape}): the item variance needs at least 2 items")
    bad = ~np.isfinite(matrix)
    if low is not None:
        bad |= matrix < low
    if high is not None:
        bad |= matrix > high
    if bad.any():
        s, i = map(int, np.argwhere(bad)[0])
        where = f" outside [{low}, {high}]" if low is not None or high is not None else " (not finite)"
        raise FineGrainError(f"{name}[{s}, {i}] = {float(matrix[s, i])!r}{where}; {int(bad.sum())} such value(s) in all")
    return matrix


def check_level(level: float) -> float:
    """``level`` as a float, checked to lie strictly between 0 and 1 (a confidence level).

    Raises
    ------
    FineGrainError
        When ``level`` is not a number in ``(0, 1)``.
    """
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise FineGrainError(f"level must be a number strictly between 0 and 1, got {level!r}")
    return float(level)


def check_count(value, name: str, minimum: int) -> int:
    """``value`` as an int, checked to be an integer (not a bool) of at least ``minimum``.

    Raises
    ------
    FineGrainError
        Naming ``name`` and the value, when it is not such an integer.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FineGrainError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
