import math

import numpy as np
import pytest

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.scoring.layer_signals import RANKME_EPSILON, dataset_entropy, effective_rank
from mteb_finegrain.scoring.signal_choice import (
    SignalEntry,
    compare_layer_rules,
    format_table,
    layer_picks,
    layer_spearman,
    signal_directions,
)

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
    assert dataset_entropy(np.full((5, 3), 0.1)) == 0.0  # nothing varies
    # A row at the mean has no direction: it stays zero and adds nothing (here one direction is left).
    assert dataset_entropy([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]) == pytest.approx(0.0, abs=1e-12)


# Whether a signal picks the layer the fine labels pick (mteb_finegrain.scoring.signal_choice).

# Two entries of five layers whose answers are worked out by hand below.
# A: validation peaks at layer 2; B: validation rises to layer 4, but test is best at layer 3.
VAL_A, TEST_A = [0.2, 0.4, 0.6, 0.5, 0.3], [0.25, 0.35, 0.55, 0.6, 0.3]
VAL_B, TEST_B = [0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.45, 0.4]


def _entries():
    def signals(val, depth):
        return {
            "good": list(np.exp(10 * np.asarray(val))),  # monotone in validation accuracy: Spearman 1
            "inverted": [1 - 3 * v for v in val],  # Spearman -1: must be minimised
            "depth": depth,
        }

    # "depth" against validation: A ranks (1, 3, 5, 4, 2) vs (1, 2, 3, 4, 5): sum d^2 = 14,
    # rho = 1 - 6 * 14 / (5 * 24) = 0.3; B: rho = 1. Pooled mean 0.65 > 0: maximise in both,
    # even though reversing "depth" in A alone would give it rho = -0.3 there.
    a = SignalEntry("m", "t", "coarse_tuned", signals(VAL_A, [1, 2, 3, 4, 5]), VAL_A, TEST_A)
    b = SignalEntry("m", "u", "coarse_tuned", signals(VAL_B, [1, 2, 3, 4, 5]), VAL_B, TEST_B)
    return [a, b]


def test_layer_spearman_known_value_and_constants():
    # ranks (1, 2, 3, 4) vs (1, 3, 2, 4): sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert layer_spearman([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4]) == pytest.approx(0.8)
    assert math.isnan(layer_spearman([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(layer_spearman([1, 2, 3], [0.5, 0.5, 0.5]))
    with pytest.raises(FineGrainError, match="equal length"):
        layer_spearman([1, 2, 3], [1, 2])


def test_directions_are_pooled_over_entries():
    entries = _entries()
    assert signal_directions(entries) == {"good": 1, "inverted": -1, "depth": 1}
    # Reversed in A only: rho -0.3 in A, 1 in B; the pooled sign still says maximise.
    mixed = [SignalEntry(e.model, e.task, e.stage, {"depth": d}, e.validation_accuracy, e.test_accuracy) for e, d in zip(entries, ([5, 4, 3, 2, 1], [1, 2, 3, 4, 5]))]
    assert signal_directions(mixed) == {"depth": 1}
    picks = {(p.task, p.rule): p for p in layer_picks(mixed)}
    assert picks["t", "depth"].layer == 0 and picks["t", "depth"].spearman == pytest.approx(-0.3)
    assert picks["u", "depth"].layer == 4


def test_picks_losses_and_summary_rows_by_hand():
    entries = _entries()
    picks = {(p.task, p.rule): p for p in layer_picks(entries)}
    assert [p.rule for p in layer_picks(entries)[:6]] == ["good", "inverted", "depth", "last layer", "second-to-last layer", "middle layer"]
    assert picks["t", "good"].layer == picks["t", "inverted"].layer == picks["t", "good"].chosen_layer == 2
    assert picks["u", "good"].layer == picks["u", "inverted"].layer == picks["u", "good"].chosen_layer == 4
    assert picks["t", "depth"].layer == 4
    assert picks["t", "depth"].validation_loss == pytest.approx(0.6 - 0.3)
    assert picks["t", "depth"].test_loss == pytest.approx(0.55 - 0.3)
    # Second-to-last does better on test than the validation choice in both entries: negative loss.
    assert picks["t", "second-to-last layer"].test_loss == pytest.approx(-0.05)
    assert picks["u", "second-to-last layer"].test_loss == pytest.approx(-0.05)
    assert math.isnan(picks["t", "middle layer"].spearman)

    rows = {row.rule: row for row in compare_layer_rules(entries)}
    assert list(rows) == ["good", "inverted", "depth", "last layer", "second-to-last layer", "middle layer"]
    expected = {
        # rule: (direction, mean Spearman, agreement, mean val loss, mean test loss, max test loss)
        "good": ("maximise", 1.0, 1.0, 0.0, 0.0, 0.0),
        "inverted": ("minimise", -1.0, 1.0, 0.0, 0.0, 0.0),
        "depth": ("maximise", 0.65, 0.5, 0.15, 0.125, 0.25),
        "last layer": ("fixed", math.nan, 0.5, 0.15, 0.125, 0.25),  # layer 4: A loses 0.3 / 0.25, B nothing
        "second-to-last layer": ("fixed", math.nan, 0.0, 0.1, -0.05, -0.05),  # layer 3
        "middle layer": ("fixed", math.nan, 0.5, 0.1, 0.05, 0.1),  # layer 2: A nothing, B loses 0.2 / 0.1
    }
    for rule, (direction, rho, agreement, val_loss, test_loss, worst) in expected.items():
        row = rows[rule]
        assert row.direction == direction and row.n_entries == 2
        assert (math.isnan(row.mean_spearman) and math.isnan(rho)) or row.mean_spearman == pytest.approx(rho)
        assert row.agreement == pytest.approx(agreement)
        assert row.mean_validation_loss == pytest.approx(val_loss, abs=1e-12)
        assert row.mean_test_loss == pytest.approx(test_loss, abs=1e-12)
        assert row.max_test_loss == pytest.approx(worst, abs=1e-12)


def test_layer_numbers_ties_and_even_counts():
    # Layers 0, 3, ..., 12; validation tied at layers 3 and 6: the lowest (3) is the selected one,
    # as the protocol selects; the signal is tied at 3 and 6 too and picks 3.
    entry = SignalEntry("m", "t", "pretrained", {"s": [1, 2, 2, 0, 0]}, [0.3, 0.5, 0.5, 0.4, 0.2], [0.3, 0.4, 0.6, 0.4, 0.2], layers=[0, 3, 6, 9, 12])
    picks = {p.rule: p for p in layer_picks([entry])}
    assert {rule: p.layer for rule, p in picks.items()} == {"s": 3, "last layer": 12, "second-to-last layer": 9, "middle layer": 6}
    assert all(p.chosen_layer == 3 for p in picks.values())
    assert picks["middle layer"].validation_loss == 0.0 and picks["middle layer"].test_loss == pytest.approx(-0.2)
    # Four layers: the middle is the upper of the two central ones.
    even = SignalEntry("m", "t", "pretrained", {"s": [0, 1, 2, 3]}, [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])
    assert {p.rule: p.layer for p in layer_picks([even])}["middle layer"] == 2


def test_undefined_correlations_are_left_out_of_the_direction():
    flat = SignalEntry("m", "a", "pretrained", {"s": [1, 1, 1]}, [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    falling = SignalEntry("m", "b", "pretrained", {"s": [3, 2, 1]}, [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert signal_directions([flat, falling]) == {"s": -1}
    row = compare_layer_rules([flat, falling])[0]
    assert row.mean_spearman == pytest.approx(-1.0) and row.n_entries == 2
    with pytest.raises(FineGrainError, match="signal 's' has no direction"):
        signal_directions([flat])


def test_format_table():
    text = format_table(compare_layer_rules(_entries()))
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 2 + 6
    assert lines[0].startswith("| rule | direction | mean Spearman (val) | agreement |")
    assert "| depth | maximise | 0.650 | 0.500 | 0.150 | 0.125 | 0.250 | 2 |" in lines
    assert "| second-to-last layer | fixed | – | 0.000 | 0.100 | -0.050 | -0.050 | 2 |" in lines
    assert "| depth | maximise | 0.6 | 0.5 |" in format_table(compare_layer_rules(_entries()), digits=1)


def test_bad_entries_are_named():
    with pytest.raises(FineGrainError, match=r"entry \(m, t, s\) test_accuracy must hold one value per layer \(3\)"):
        SignalEntry("m", "t", "s", {"x": [1, 2, 3]}, [0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(FineGrainError, match="signal 'x' holds a non-finite value at layer position 1"):
        SignalEntry("m", "t", "s", {"x": [1, np.nan, 3]}, [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    with pytest.raises(FineGrainError, match="at least 2"):
        SignalEntry("m", "t", "s", {"x": [1]}, [0.1], [0.1])
    with pytest.raises(FineGrainError, match="strictly increasing"):
        SignalEntry("m", "t", "s", {"x": [1, 2]}, [0.1, 0.2], [0.1, 0.2], layers=[3, 3])
    with pytest.raises(FineGrainError, match="no signals"):
        SignalEntry("m", "t", "s", {}, [0.1, 0.2], [0.1, 0.2])
    a = SignalEntry("m", "t", "s", {"x": [1, 2]}, [0.1, 0.2], [0.1, 0.2])
    b = SignalEntry("m", "u", "s", {"y": [1, 2]}, [0.1, 0.2], [0.1, 0.2])
    with pytest.raises(FineGrainError, match="every entry needs the same signals"):
        compare_layer_rules([a, b])
    with pytest.raises(FineGrainError, match="appears twice"):
        compare_layer_rules([a, a])
    with pytest.raises(FineGrainError, match="no entries"):
        compare_layer_rules([])
    clash = SignalEntry("m", "t", "s", {"last layer": [1, 2]}, [0.1, 0.2], [0.1, 0.2])
    with pytest.raises(FineGrainError, match="name of a fixed rule"):
        layer_picks([clash])
