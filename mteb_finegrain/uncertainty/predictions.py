"""Compact, JSON-ready storage of a probe's predicted labels: one row per seed, one column per item.

A result keeps ``pred[seed][item]`` so that intervals and paired comparisons can be computed
later without re-running a model. Labels are stored once in a vocabulary and the matrix as
base64 of little-endian unsigned integers (uint8 when the vocabulary has at most 256 labels,
else uint16): 5 seeds x 4,500 items take 30 kB of text instead of a few hundred kB of label
strings. The ``split_sha256`` of the evaluation split as scored (texts and gold labels in
order) travels with it: two models' predictions pair item by item only when their hashes agree.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence

import numpy as np

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.store import sha256_chunks

FORMAT = "mteb-finegrain-predictions/1"
_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2")}
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def split_sha256(texts: Sequence[str], gold: Sequence[str]) -> str:
    """Hash of an evaluation split as scored: its texts and gold labels, in order.

    Parameters
    ----------
    texts : sequence of str
        The evaluation texts in the order the predictions' columns follow.
    gold : sequence of str
        Their gold labels at the level scored.

    Returns
    -------
    str
        ``"sha256:<64 hex>"`` of one JSON line ``[text, label]`` per item (UTF-8, not
        ASCII-escaped), the same rows giving the same hash on every machine.

    Raises
    ------
    FineGrainError
        When the lengths differ or an entry is not a string.
    """
    if len(texts) != len(gold):
        raise FineGrainError(f"split_sha256: {len(texts)} texts but {len(gold)} gold labels")

    def rows():
        for i, (text, label) in enumerate(zip(texts, gold)):
            if not isinstance(text, str) or not isinstance(label, str):
                raise FineGrainError(f"split_sha256: item {i} has text {text!r} and label {label!r}; both must be strings")
            yield json.dumps([text, label], ensure_ascii=False).encode() + b"\n"

    return "sha256:" + sha256_chunks(rows())


def encode_predictions(predictions: Sequence[Sequence[str]], *, split_sha256: str, labels: Sequence[str] | None = None) -> dict:
    """Encode per-seed predicted labels as a JSON-ready dict.

    Parameters
    ----------
    predictions : sequence of sequences of str
        ``predictions[s][i]``: seed ``s``'s predicted label for evaluation item ``i``; every
        seed predicts the same items.
    split_sha256 : str
        ``split_sha256(texts, gold)`` of the evaluation split the predictions are for.
    labels : sequence of str, optional
        The label vocabulary, in the order its codes take (for example every class of the
        level, so that two models' vocabularies agree). Default: the sorted predicted labels.

    Returns
    -------
    dict
        ``{"format", "labels", "dtype", "shape": [S, n], "data", "split_sha256"}``; ``data`` is
        the base64 of the ``S x n`` code matrix, row-major, little-endian ``dtype``.

    Raises
    ------
    FineGrainError
        When the rows are ragged or empty, a prediction is not a string or not in ``labels``,
        ``labels`` repeats a label or holds more than 65,536, or the hash is malformed.
    """
    _check_hash(split_sha256, "split_sha256")
    rows = [list(row) for row in predictions]
    if not rows or not rows[0]:
        raise FineGrainError("predictions must hold at least one seed row with at least one item")
    for s, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise FineGrainError(f"predictions row {s} has {len(row)} items, row 0 has {len(rows[0])}: every seed predicts the same items")
        for i, label in enumerate(row):
            if not isinstance(label, str):
                raise FineGrainError(f"predictions[{s}][{i}] = {label!r} is not a label string")
    vocabulary = sorted({label for row in rows for label in row}) if labels is None else _check_labels(labels)
    if len(vocabulary) > 65536:
        raise FineGrainError(f"{len(vocabulary)} labels do not fit uint16 codes (at most 65,536)")
    code = {label: k for k, label in enumerate(vocabulary)}
    dtype = "uint8" if len(vocabulary) <= 256 else "uint16"
    matrix = np.empty((len(rows), len(rows[0])), dtype=_DTYPES[dtype])
    for s, row in enumerate(rows):
        for i, label in enumerate(row):
            if label not in code:
                raise FineGrainError(f"predictions[{s}][{i}] = {label!r} is not in labels ({len(vocabulary)} labels)")
            matrix[s, i] = code[label]
    return {
        "format": FORMAT,
        "labels": list(vocabulary),
        "dtype": dtype,
        "shape": [int(matrix.shape[0]), int(matrix.shape[1])],
        "data": base64.b64encode(matrix.tobytes()).decode("ascii"),
        "split_sha256": split_sha256,
    }


def decode_predictions(encoded: Mapping) -> tuple[list[str], np.ndarray]:
    """Decode ``encode_predictions``'s dict.

    Parameters
    ----------
    encoded : mapping
        As returned by ``encode_predictions`` (or read back from JSON).

    Returns
    -------
    labels : list of str
        The vocabulary.
    matrix : numpy.ndarray of shape (S, n)
        Codes into ``labels`` (native-endian uint8 or uint16): ``labels[matrix[s, i]]`` is seed
        ``s``'s prediction for item ``i``.

    Raises
    ------
    FineGrainError
        Naming the key that is missing or wrong: format, labels, dtype, shape, data (not
        base64, wrong length, a code past the vocabulary) or split_sha256.
    """
    if not isinstance(encoded, Mapping):
        raise FineGrainError(f"encoded predictions must be a mapping, got {type(encoded).__name__}")
    missing = [key for key in ("format", "labels", "dtype", "shape", "data", "split_sha256") if key not in encoded]
    if missing:
        raise FineGrainError(f"encoded predictions lack key(s) {', '.join(missing)}")
    if encoded["format"] != FORMAT:
        raise FineGrainError(f"encoded predictions have format {encoded['format']!r}; this version reads {FORMAT!r}")
    labels = _check_labels(encoded["labels"])
    dtype = encoded["dtype"]
    if dtype not in _DTYPES:
        raise FineGrainError(f"encoded predictions have dtype {dtype!r}; expected 'uint8' or 'uint16'")
    shape = encoded["shape"]
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in shape)
    ):
        raise FineGrainError(f"encoded predictions have shape {shape!r}; expected [seeds, items], two positive integers")
    _check_hash(encoded["split_sha256"], "encoded predictions' split_sha256")
    data = encoded["data"]
    if not isinstance(data, str):
        raise FineGrainError(f"encoded predictions' data must be a base64 string, got {type(data).__name__}")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as error:
        raise FineGrainError(f"encoded predictions' data is not valid base64: {error}") from None
    expected = shape[0] * shape[1] * _DTYPES[dtype].itemsize
    if len(raw) != expected:
        raise FineGrainError(f"encoded predictions' data holds {len(raw)} bytes; shape {shape} of {dtype} needs {expected}")
    matrix = np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape).astype(_DTYPES[dtype].newbyteorder("="))
    if matrix.size and int(matrix.max()) >= len(labels):
        s, i = map(int, np.argwhere(matrix >= len(labels))[0])
        raise FineGrainError(f"encoded predictions' code {int(matrix[s, i])} at [{s}, {i}] is past the {len(labels)} labels")
    return labels, matrix


def correctness(decoded: tuple[Sequence[str], np.ndarray], gold: Sequence[str]) -> np.ndarray:
    """Whether each seed's prediction for each item equals its gold label.

    Parameters
    ----------
    decoded : (labels, matrix)
        As returned by ``decode_predictions``.
    gold : sequence of str
        The gold labels of the items, in the matrix's column order (the split whose
        ``split_sha256`` the predictions carry). A gold label outside the vocabulary is never
        predicted, so it counts as wrong for every seed.

    Returns
    -------
    numpy.ndarray of bool, shape (S, n)

    Raises
    ------
    FineGrainError
        When ``gold`` has another length than the matrix has items, or holds a non-string.
    """
    labels, matrix = decoded
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise FineGrainError(f"decoded predictions must be a 2-D (seeds x items) matrix, got shape {matrix.shape}")
    if len(gold) != matrix.shape[1]:
        raise FineGrainError(f"{len(gold)} gold labels for {matrix.shape[1]} predicted items: they must be the same items")
    code = {label: k for k, label in enumerate(labels)}
    gold_codes = np.empty(len(gold), dtype=np.int64)
    for i, label in enumerate(gold):
        if not isinstance(label, str):
            raise FineGrainError(f"gold label {i} = {label!r} is not a string")
        gold_codes[i] = code.get(label, -1)
    return matrix.astype(np.int64) == gold_codes[None, :]


def check_same_split(*encoded: Mapping) -> str:
    """The common ``split_sha256`` of several encoded predictions; an error when they differ.

    Parameters
    ----------
    *encoded : mapping
        Encoded predictions (``encode_predictions``) to be paired item by item.

    Returns
    -------
    str
        Their shared ``split_sha256``.

    Raises
    ------
    FineGrainError
        When none is given, one lacks a valid hash, or two hashes differ (the predictions
        were made on different evaluation splits and cannot be paired).
    """
    if not encoded:
        raise FineGrainError("check_same_split needs at least one set of encoded predictions")
    hashes = []
    for k, item in enumerate(encoded):
        value = item.get("split_sha256") if isinstance(item, Mapping) else None
        _check_hash(value, f"encoded predictions {k}'s split_sha256")
        hashes.append(value)
    for k, value in enumerate(hashes[1:], start=1):
        if value != hashes[0]:
            raise FineGrainError(
                f"encoded predictions {k} are for split {value}, predictions 0 for {hashes[0]}: "
                "different evaluation splits cannot be paired"
            )
    return hashes[0]


def _check_hash(value, name: str) -> None:
    if not isinstance(value, str) or not _HASH_RE.match(value):
        raise FineGrainError(f"{name} {value!r} is not 'sha256:<64 hex>' (use split_sha256(texts, gold))")


def _check_labels(labels) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise FineGrainError(f"labels must be a list of strings, got {labels!r}")
    labels = list(labels)
    seen: set[str] = set()
    for k, label in enumerate(labels):
        if not isinstance(label, str):
            raise FineGrainError(f"labels[{k}] = {label!r} is not a string")
        if label in seen:
            raise FineGrainError(f"labels[{k}] = {label!r} repeats an earlier label")
        seen.add(label)
    if not labels:
        raise FineGrainError("labels is empty: the vocabulary needs at least one label")
    return labels
