"""Simultaneous rank intervals: formatting, separated and tied models, and coverage of the true rank vector."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.uncertainty.evidence import runs_interval
from mteb_finegrain.uncertainty.ranks import (
    RankInterval,
    bootstrap_scores,
    difference_intervals,
    format_rank,
    main_score_interval,
    rank_intervals,
)

SEEDS = 5
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(101)


def test_rank_interval_format():
    assert format_rank(RankInterval(2, 3)) == "2\u20133" == str(RankInterval(2, 3))
    assert format_rank(RankInterval(1, 1)) == "1"


def _board(rng, shifts, sizes=((500, 50), (1500, 150)), own_item=0.7, own_seed=0.15):
    """Correctness of several models on the same items and support sets, per task."""
    correct = {f"model{m}": {} for m in range(len(shifts))}
    for n, classes in sizes:
        shared = 1.8 + rng.normal(0, 2.0, n)[None, :] + rng.normal(0, 0.2, (SEEDS, classes))[:, np.arange(n) % classes]
        for m, shift in enumerate(shifts):
            own = rng.normal(0, own_item, n)[None, :] + rng.normal(0, own_seed, SEEDS)[:, None]
            correct[f"model{m}"][f"{n} items"] = rng.random((SEEDS, n)) < expit(shared + shift + own)
    return correct


def _expected_score(shift: float, own_item=0.7, own_seed=0.15) -> float:
    total = math.sqrt(2.0**2 + 0.2**2 + own_item**2 + own_seed**2)
    return float(np.sum(_WEIGHTS * expit(1.8 + shift + total * _NODES)) / math.sqrt(2 * math.pi))


def test_well_separated_models_get_single_ranks():
    correct = _board(np.random.default_rng(0), [1.5, 0.0, 3.0, -1.5])
    models, estimates, replicates = bootstrap_scores(correct, n_boot=2000, seed=1)
    assert models == ["model0", "model1", "model2", "model3"]
    assert [str(r) for r in rank_intervals(estimates, replicates)] == ["2", "3", "1", "4"]


def test_near_identical_models_share_two_ranks():
    correct = _board(np.random.default_rng(2), [2.0, 0.5, 0.5, -1.5])
    _, estimates, replicates = bootstrap_scores(correct, n_boot=2000, seed=3)
    assert [str(r) for r in rank_intervals(estimates, replicates)] == ["1", "2\u20133", "2\u20133", "4"]


def test_identical_predictions_tie_without_uncertainty():
    correct = _board(np.random.default_rng(4), [1.0, -1.0])
    correct["copy of model0"] = correct["model0"]
    _, estimates, replicates = bootstrap_scores(correct, n_boot=500, seed=5)
    lower, upper = difference_intervals(estimates, replicates)
    assert lower[0, 2] == upper[0, 2] == 0.0
    assert [str(r) for r in rank_intervals(estimates, replicates)] == ["1\u20132", "3", "1\u20132"]


def test_difference_intervals_are_symmetric_and_use_the_max_t_quantile():
    rng = np.random.default_rng(6)
    replicates = rng.normal(size=(20_000, 2)) * [0.01, 0.02] + [0.5, 0.6]
    lower, upper = difference_intervals([0.5, 0.6], replicates)
    np.testing.assert_allclose(lower, -upper.T)
    se = math.sqrt(0.01**2 + 0.02**2)
    assert upper[0, 1] - lower[0, 1] == pytest.approx(2 * 1.96 * se, rel=0.03)  # one pair: max-|t| is |t|
    wide_lower, _ = difference_intervals([0.5, 0.6, 0.7, 0.8], rng.normal(size=(20_000, 4)) * 0.01 + 0.5)
    assert -wide_lower[0, 1] > 2.5 * math.sqrt(2) * 0.01  # six pairs: a larger simultaneous quantile


def test_rank_intervals_cover_the_true_ranks_simultaneously():
    shifts = [0.6, 0.3, 0.28, 0.0, -0.3]
    truth = np.array([_expected_score(s) for s in shifts])
    true_ranks = [1 + int(np.sum(truth > t)) for t in truth]
    rng = np.random.default_rng(7)
    covered, single = 0, 0
    replications = 100
    for k in range(replications):
        _, estimates, replicates = bootstrap_scores(_board(rng, shifts), n_boot=1000, seed=k)
        intervals = rank_intervals(estimates, replicates)
        covered += all(r.low <= t <= r.high for r, t in zip(intervals, true_ranks))
        single += intervals[4].low == intervals[4].high
    assert covered / replications >= 0.95
    assert single / replications > 0.5  # not covering by giving every model every rank


def test_run_variance_enters_each_replicate():
    correct = _board(np.random.default_rng(8), [1.0, 0.0])
    plain = bootstrap_scores(correct, n_boot=4000, seed=9)
    zero = bootstrap_scores(correct, n_boot=4000, seed=9, run_variance={"model0": {"500 items": 0.0}, "model1": {}})
    np.testing.assert_array_equal(plain[2], zero[2])  # nothing to add: the same replicates
    variance = {"model0": {"500 items": 0.02**2, "1500 items": 0.01**2}}  # model1: pretrained only
    _, estimates, replicates = bootstrap_scores(correct, n_boot=4000, seed=9, run_variance=variance)
    np.testing.assert_array_equal(estimates, plain[1])  # the point estimates do not move
    # The mean over 2 tasks gains (0.02^2 + 0.01^2) / 4 of variance; model1's spread is unchanged.
    added = replicates[:, 0].var() - plain[2][:, 0].var()
    assert added == pytest.approx((0.02**2 + 0.01**2) / 4, rel=0.15)
    assert replicates[:, 1].var() == pytest.approx(plain[2][:, 1].var(), rel=0.1)


def test_run_variance_turns_a_settled_order_into_a_tie():
    correct = _board(np.random.default_rng(10), [0.6, 0.0, -2.0])
    _, estimates, replicates = bootstrap_scores(correct, n_boot=2000, seed=11)
    assert [str(r) for r in rank_intervals(estimates, replicates)] == ["1", "2", "3"]
    noisy = {"model0": {task: 0.05**2 for task in correct["model0"]}}  # coarse-training runs disagree a lot
    _, estimates, replicates = bootstrap_scores(correct, n_boot=2000, seed=11, run_variance=noisy)
    assert [str(r) for r in rank_intervals(estimates, replicates)] == ["1\u20132", "1\u20132", "3"]


def test_main_score_interval_of_one_task_is_its_stored_interval():
    rng = np.random.default_rng(12)
    runs = [rng.random((SEEDS, 300)) < p for p in (0.6, 0.64, 0.62)]
    found = runs_interval(runs)
    assert main_score_interval([found.matrix], [(found.runs_std, found.n_runs)]) == pytest.approx(found.ci95, abs=1e-12)
    pretrained = runs_interval(runs[:1])
    assert main_score_interval([pretrained.matrix]) == pytest.approx(pretrained.ci95, abs=1e-12)


def test_main_score_interval_over_tasks_adds_the_tasks_variances():
    correct = _board(np.random.default_rng(13), [0.5])["model0"]
    matrices = list(correct.values())
    low, high = main_score_interval(matrices)
    assert low < np.mean([m.mean() for m in matrices]) < high
    halves = [(h - l) / 2 for l, h in (main_score_interval([m]) for m in matrices)]
    # Independent tasks: the mean's half-width is about sqrt(sum of squared half-widths) / T.
    assert (high - low) / 2 == pytest.approx(math.sqrt(sum(h * h for h in halves)) / len(halves), rel=0.05)
    wider = main_score_interval(matrices, [(0.03, 3), (None, 1)])
    assert wider[1] - wider[0] > high - low


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: difference_intervals([0.1], np.zeros((200, 1))), "at least 2 models"),
        (lambda: difference_intervals([0.1, 0.2], np.zeros((200, 3))), r"shape \(n_boot, 2\).*got \(200, 3\)"),
        (lambda: difference_intervals([0.1, 0.2], np.zeros((50, 2))), "50 bootstrap draws"),
        (lambda: difference_intervals([0.1, np.nan], np.zeros((200, 2))), "finite"),
        (lambda: rank_intervals([0.1, 0.2], np.zeros((200, 2)), level=1.0), "level must be"),
        (lambda: bootstrap_scores({"a": {"t": np.ones((5, 4))}}), "at least 2 models"),
        (lambda: bootstrap_scores({"a": {"t": np.ones((5, 4))}, "b": {"u": np.ones((5, 4))}}), r"'b' is scored on tasks \['u'\]"),
        (lambda: bootstrap_scores({"a": {"t": np.ones((5, 4))}, "b": {"t": np.ones((5, 3))}}), r"t: b's matrix has shape \(5, 3\)"),
        (lambda: bootstrap_scores({"a": {"t": np.ones((5, 4))}, "b": {"t": np.ones((5, 4))}}, n_boot=10), "n_boot must be"),
        (lambda: bootstrap_scores({"a": {"t": np.ones((5, 4))}, "b": {"t": np.ones((5, 4))}}, run_variance={"a": {"t": -1.0}}),
         r"run_variance of 'a' on 't' must be a finite number >= 0, got -1.0"),
        (lambda: main_score_interval([]), "at least one task"),
        (lambda: main_score_interval([np.ones((5, 4))], [(0.1, 3), (0.1, 3)]), "2 entries for 1 tasks"),
    ],
)
def test_errors_name_the_offending_value(call, message):
    with pytest.raises(FineGrainError, match=message):
        call()
