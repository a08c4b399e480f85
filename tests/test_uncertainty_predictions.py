"""Per-seed predictions: encoding round trip, compactness, correctness matrices and errors that say what is wrong."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.uncertainty.predictions import (
    check_same_split,
    correctness,
    decode_predictions,
    encode_predictions,
    split_sha256,
)

TEXTS = ["how far is the moon", "who wrote hamlet", "what is a quark", "when did rome fall"]
GOLD = ["NUM:dist", "HUM:ind", "DESC:def", "NUM:date"]
SPLIT = split_sha256(TEXTS, GOLD)
PRED = [
    ["NUM:dist", "HUM:ind", "ENTY:other", "NUM:date"],
    ["NUM:dist", "HUM:gr", "DESC:def", "NUM:dist"],
    ["NUM:count", "HUM:ind", "DESC:def", "NUM:date"],
]


def test_round_trip_through_json_gives_the_labels_back():
    encoded = json.loads(json.dumps(encode_predictions(PRED, split_sha256=SPLIT)))
    labels, matrix = decode_predictions(encoded)
    assert encoded["dtype"] == "uint8" and encoded["shape"] == [3, 4]
    assert [[labels[c] for c in row] for row in matrix] == PRED
    assert labels == sorted({p for row in PRED for p in row})
    assert encoded["split_sha256"] == SPLIT


def test_correctness_compares_with_gold_and_a_gold_label_never_predicted_is_wrong():
    decoded = decode_predictions(encode_predictions(PRED, split_sha256=SPLIT))
    expected = np.array([[p == g for p, g in zip(row, GOLD)] for row in PRED])
    assert correctness(decoded, GOLD).dtype == bool
    np.testing.assert_array_equal(correctness(decoded, GOLD), expected)
    np.testing.assert_array_equal(correctness(decoded, ["unseen"] * 4), np.zeros((3, 4), bool))


def test_more_than_256_labels_use_little_endian_uint16():
    labels = [f"class{k:03d}" for k in range(300)]
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 300, size=(5, 40))
    pred = [[labels[c] for c in row] for row in codes]
    encoded = encode_predictions(pred, split_sha256=SPLIT, labels=labels)
    assert encoded["dtype"] == "uint16"
    raw = base64.b64decode(encoded["data"])
    assert len(raw) == 5 * 40 * 2
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<u2").reshape(5, 40), codes)
    decoded_labels, matrix = decode_predictions(encoded)
    assert decoded_labels == labels
    np.testing.assert_array_equal(matrix, codes)


def test_a_given_vocabulary_fixes_the_codes_so_two_models_agree():
    vocabulary = sorted(set(GOLD) | {p for row in PRED for p in row})
    a = encode_predictions(PRED, split_sha256=SPLIT, labels=vocabulary)
    b = encode_predictions([GOLD, GOLD, GOLD], split_sha256=SPLIT, labels=vocabulary)
    assert a["labels"] == b["labels"] == vocabulary
    assert check_same_split(a, b) == SPLIT
    assert correctness(decode_predictions(b), GOLD).all()


def test_clinc_sized_predictions_are_compact():
    labels = [f"intent_{k}" for k in range(150)]
    rng = np.random.default_rng(1)
    pred = [[labels[c] for c in row] for row in rng.integers(0, 150, size=(5, 4500))]
    encoded = encode_predictions(pred, split_sha256=SPLIT)
    assert len(encoded["data"]) == 4 * (5 * 4500 // 3)  # base64 of 22,500 one-byte codes
    assert len(json.dumps(encoded)) < len(json.dumps(pred)) / 5


def test_the_split_hash_depends_on_texts_labels_and_order():
    assert split_sha256(TEXTS, GOLD).startswith("sha256:") and len(SPLIT) == 7 + 64
    assert split_sha256(TEXTS, GOLD) == SPLIT
    assert split_sha256(TEXTS[::-1], GOLD[::-1]) != SPLIT
    assert split_sha256(TEXTS, GOLD[:3] + ["NUM:dist"]) != SPLIT
    assert split_sha256(["ab", "c"], ["x", "y"]) != split_sha256(["a", "bc"], ["x", "y"])


def test_the_split_hash_is_fixed_for_given_rows():
    # sha256 of one JSON line [text, label] per item, UTF-8 and not ASCII-escaped: recorded hashes stay comparable.
    rows = ["h\u00e9llo", "w\u00f6rld \u2013 x", "a\nb"], ["A", "B", "C"]
    assert split_sha256(*rows) == "sha256:1867b5de3c2f77e9dd19c9ec6fff5950c6bb99212a758c25bb3e4fe5ae557b42"


def test_predictions_for_different_splits_are_not_paired():
    other = split_sha256(TEXTS[:3], GOLD[:3])
    a = encode_predictions(PRED, split_sha256=SPLIT)
    b = encode_predictions([row[:3] for row in PRED], split_sha256=other)
    with pytest.raises(FineGrainError, match="different evaluation splits"):
        check_same_split(a, b)


@pytest.mark.parametrize(
    ("predictions", "kwargs", "message"),
    [
        ([], {}, "at least one seed row"),
        ([["a", "b"], ["a"]], {}, "row 1 has 1 items, row 0 has 2"),
        ([["a", 3]], {}, r"predictions\[0\]\[1\] = 3 is not a label string"),
        ([["a", "z"]], {"labels": ["a", "b"]}, r"predictions\[0\]\[1\] = 'z' is not in labels"),
        ([["a"]], {"labels": ["a", "a"]}, r"labels\[1\] = 'a' repeats"),
        ([["a"]], {"split_sha256": "abc"}, "split_sha256 'abc' is not 'sha256:<64 hex>'"),
    ],
)
def test_encode_errors_name_the_offending_value(predictions, kwargs, message):
    kwargs = {"split_sha256": SPLIT, **kwargs}
    with pytest.raises(FineGrainError, match=message):
        encode_predictions(predictions, **kwargs)


def test_more_labels_than_uint16_holds_is_an_error():
    with pytest.raises(FineGrainError, match="65537 labels do not fit uint16"):
        encode_predictions([["a"]], split_sha256=SPLIT, labels=["a"] + [f"x{k}" for k in range(65536)])


def _tamper(**changes):
    encoded = encode_predictions(PRED, split_sha256=SPLIT)
    encoded.update(changes)
    return encoded


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ([1, 2], "must be a mapping, got list"),
        ({"format": "x"}, "lack key"),
        (_tamper(format="other/2"), "format 'other/2'"),
        (_tamper(dtype="int32"), "dtype 'int32'"),
        (_tamper(shape=[3]), r"shape \[3\]"),
        (_tamper(shape=[2, 4]), "holds 12 bytes; shape"),
        (_tamper(data="@@@"), "not valid base64"),
        (_tamper(labels=["NUM:dist"]), r"code 6 at \[0, 0\] is past the 1 labels"),
        (_tamper(split_sha256="sha256:xyz"), "split_sha256 'sha256:xyz'"),
    ],
)
def test_decode_errors_name_the_offending_key(encoded, message):
    with pytest.raises(FineGrainError, match=message):
        decode_predictions(encoded)


def test_correctness_needs_one_gold_label_per_item():
    decoded = decode_predictions(encode_predictions(PRED, split_sha256=SPLIT))
    with pytest.raises(FineGrainError, match="3 gold labels for 4 predicted items"):
        correctness(decoded, GOLD[:3])
    with pytest.raises(FineGrainError, match="gold label 0 = 1 is not a string"):
        correctness(decoded, [1, "a", "b", "c"])
