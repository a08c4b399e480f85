"""Variance components, Satterthwaite df, the pigeonhole bootstrap and the interval functions' contracts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.uncertainty.intervals import (
    clustering_spread,
    joint_pigeonhole_means,
    paired_interval,
    pigeonhole_bootstrap,
    probe_interval,
    satterthwaite_df,
    two_way_anova,
)

MATRIX = np.array([[1, 0, 1, 1, 0, 1], [1, 1, 1, 0, 0, 1], [0, 1, 1, 1, 0, 1]], dtype=bool)


def test_two_way_anova_mean_squares_by_hand():
    x = MATRIX.astype(float)
    anova = two_way_anova(MATRIX)
    s, n = x.shape
    grand = x.mean()
    seed_means, item_means = x.mean(axis=1), x.mean(axis=0)
    assert anova.mean == pytest.approx(grand)
    assert anova.ms_seeds == pytest.approx(n * sum((m - grand) ** 2 for m in seed_means) / (s - 1))
    assert anova.ms_items == pytest.approx(s * sum((m - grand) ** 2 for m in item_means) / (n - 1))
    residual = sum(
        (x[i, j] - seed_means[i] - item_means[j] + grand) ** 2 for i in range(s) for j in range(n)
    )
    assert anova.ms_error == pytest.approx(residual / ((s - 1) * (n - 1)))


def test_variance_is_the_unbiased_combination_floored_at_the_cell_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 40)) + rng.normal(size=40)[None, :] + 0.5 * rng.normal(size=5)[:, None]
    anova = two_way_anova(x)
    assert anova.ms_items > anova.ms_error and anova.ms_seeds > anova.ms_error
    assert anova.variance == pytest.approx((anova.ms_items + anova.ms_seeds - anova.ms_error) / 200)
    assert anova.variance == pytest.approx(anova.var_items / 40 + anova.var_seeds / 5 + anova.var_error / 200)
    # Rows equal up to noise and a constant: MS_seeds < MS_error, so the seed component reads 0,
    # but the variance keeps the unbiased combination (truncating would overcover).
    flat = rng.normal(size=(1, 40)) + 0.1 * rng.normal(size=(5, 40))
    flat -= flat.mean(axis=1, keepdims=True)
    low_seeds = two_way_anova(flat)
    assert low_seeds.var_seeds == 0.0
    assert low_seeds.variance == pytest.approx((low_seeds.ms_items + low_seeds.ms_seeds - low_seeds.ms_error) / 200)
    # Pure interaction (every row and column mean equal): the floor MS_error / (n S).
    noise = rng.normal(size=(5, 40))
    noise -= noise.mean(axis=1, keepdims=True) + noise.mean(axis=0, keepdims=True) - noise.mean()
    floored = two_way_anova(noise)
    assert floored.variance == pytest.approx(floored.ms_error / 200)
    assert floored.satterthwaite_terms() == [(pytest.approx(floored.ms_error / 200), 4 * 39)]


def test_variance_estimate_is_unbiased_for_a_gaussian_crossed_model():
    rng = np.random.default_rng(1)
    means, estimates = [], []
    for _ in range(4000):
        x = 0.8 * rng.normal(size=50)[None, :] + 0.3 * rng.normal(size=5)[:, None] + rng.normal(size=(5, 50))
        anova = two_way_anova(x)
        means.append(anova.mean)
        estimates.append((anova.ms_items + anova.ms_seeds - anova.ms_error) / 250)
    true_variance = 0.64 / 50 + 0.09 / 5 + 1 / 250
    assert np.var(means) == pytest.approx(true_variance, rel=0.06)
    assert np.mean(estimates) == pytest.approx(true_variance, rel=0.03)


def test_satterthwaite_df():
    assert satterthwaite_df([(2.0, 4)]) == pytest.approx(4)
    assert satterthwaite_df([(1.0, 4), (1.0, 4)]) == pytest.approx(8)
    assert satterthwaite_df([(1.0, 4), (1.0, math.inf)]) == pytest.approx(16)
    assert satterthwaite_df([(1.0, math.inf)]) == math.inf
    assert satterthwaite_df([]) == math.inf


def test_probe_interval_is_a_t_interval_around_the_accuracy():
    anova = two_way_anova(MATRIX)
    df = satterthwaite_df(anova.satterthwaite_terms())
    half = stats.t.ppf(0.975, df) * anova.se
    low, high = probe_interval(MATRIX)
    assert (low, high) == pytest.approx((anova.mean - half, min(1.0, anova.mean + half)))
    assert probe_interval(MATRIX, level=0.5)[0] > low


def test_runs_sd_widens_the_interval_by_its_variance_and_degrees_of_freedom():
    rng = np.random.default_rng(2)
    correct = rng.random((5, 500)) < 0.8
    base = probe_interval(correct)
    known = probe_interval(correct, runs_sd=0.02)
    estimated = probe_interval(correct, runs_sd=0.02 * math.sqrt(3), n_runs=3)  # same variance, 2 df
    assert known[1] - known[0] > base[1] - base[0]
    assert estimated[1] - estimated[0] > known[1] - known[0]
    anova = two_way_anova(correct)
    assert (known[1] - known[0]) / 2 == pytest.approx(
        stats.t.ppf(0.975, satterthwaite_df(anova.satterthwaite_terms() + [(0.0004, math.inf)])) * math.sqrt(anova.variance + 0.0004)
    )


def test_interval_ends_stay_in_range():
    assert probe_interval(np.ones((5, 30), bool)) == (1.0, 1.0)
    low, high = probe_interval(np.eye(5, 30, dtype=bool) | (np.arange(30) >= 2)[None, :])
    assert 0 <= low < high <= 1.0
    assert paired_interval(MATRIX, MATRIX) == (0.0, 0.0)
    low, high = paired_interval(np.ones((3, 6)), np.zeros((3, 6)))
    assert (low, high) == (1.0, 1.0)


def test_paired_interval_removes_shared_item_difficulty():
    rng = np.random.default_rng(3)
    easy = rng.random(400) < 0.7
    a = easy[None, :] | (rng.random((5, 400)) < 0.1)
    b = easy[None, :] | (rng.random((5, 400)) < 0.05)
    low, high = paired_interval(a, b)
    separate = probe_interval(a)[1] - probe_interval(a)[0] + probe_interval(b)[1] - probe_interval(b)[0]
    assert low < a.mean() - b.mean() < high
    assert high - low < separate / 3


def test_joint_bootstrap_uses_the_same_indices_for_every_matrix():
    rng = np.random.default_rng(4)
    a = rng.random((5, 60)) < 0.7
    replicates = joint_pigeonhole_means([a, a, ~a], n_boot=300, rng=np.random.default_rng(5))
    np.testing.assert_allclose(replicates[:, 0], replicates[:, 1])
    np.testing.assert_allclose(replicates[:, 0] + replicates[:, 2], 1.0)
    assert replicates[:, 0].std() > 0.01


def test_pigeonhole_bootstrap_variance_matches_its_expectation():
    """Var* for independent row and column resampling, exactly: row, column and interaction parts."""
    rng = np.random.default_rng(6)
    x = (rng.random((5, 80)) < 0.75).astype(float)
    replicates = pigeonhole_bootstrap(x, n_boot=20_000, seed=7)
    s, n = x.shape
    seed_means, item_means = x.mean(axis=1), x.mean(axis=0)
    interaction = x - seed_means[:, None] - item_means[None, :] + x.mean()
    expected = seed_means.var() / s + item_means.var() / n + (interaction**2).mean() / (s * n)
    assert replicates.var() == pytest.approx(expected, rel=0.05)
    assert pigeonhole_bootstrap(x, n_boot=50, seed=1).tolist() == pigeonhole_bootstrap(x, n_boot=50, seed=1).tolist()


def test_bootstrap_method_is_seeded_and_near_the_anova_interval_when_items_dominate():
    rng = np.random.default_rng(8)
    correct = (rng.random(2000) < 0.8)[None, :] ^ (rng.random((5, 2000)) < 0.03)
    boot = probe_interval(correct, method="bootstrap", seed=3)
    assert boot == probe_interval(correct, method="bootstrap", seed=3)
    anova = probe_interval(correct)
    assert boot == pytest.approx(anova, abs=0.004)


def test_clustering_spread_is_labelled_a_spread():
    spread = clustering_spread([0.41, 0.44, 0.43, 0.40, 0.42])
    assert (spread.n, spread.min, spread.max) == (5, 0.40, 0.44)
    assert spread.sd == pytest.approx(np.std([0.41, 0.44, 0.43, 0.40, 0.42]))
    assert spread.to_dict()["kind"] == "spread" and spread.to_dict()["over"] == "k-means seeds"
    assert str(spread) == "spread over 5 k-means seeds: 0.4000 to 0.4400 (sd 0.0141)"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: probe_interval(np.ones((1, 10))), "1 seed row"),
        (lambda: probe_interval(np.ones((5, 1))), "1 item column"),
        (lambda: probe_interval(np.ones(10)), "must be a 2-D"),
        (lambda: probe_interval([[1, 0], [1]]), "not a .seeds x items. matrix"),
        (lambda: probe_interval([["a", "b"], ["c", "d"]]), "numbers or booleans"),
        (lambda: probe_interval([[1, 0], [1, 2]]), r"correct\[1, 1\] = 2.0 outside \[0.0, 1.0\]"),
        (lambda: probe_interval([[1, 0], [1, np.nan]]), r"correct\[1, 1\] = nan"),
        (lambda: probe_interval(MATRIX, method="bca"), "method must be one of 'anova', 'bootstrap', got 'bca'"),
        (lambda: probe_interval(MATRIX, level=95), "level must be .* got 95"),
        (lambda: probe_interval(MATRIX, runs_sd=-0.1), "runs_sd must be .* got -0.1"),
        (lambda: probe_interval(MATRIX, n_runs=0), "n_runs must be an integer >= 1, got 0"),
        (lambda: probe_interval(MATRIX, runs_df=0), "runs_df must be .* got 0"),
        (lambda: probe_interval(MATRIX, method="bootstrap", n_boot=1), "n_boot must be an integer >= 2, got 1"),
        (lambda: paired_interval(MATRIX, MATRIX[:, :4]), r"correct_a has shape \(3, 6\) and correct_b \(3, 4\)"),
        (lambda: joint_pigeonhole_means([], n_boot=10, rng=np.random.default_rng()), "at least one matrix"),
        (lambda: clustering_spread([]), "non-empty 1-D"),
        (lambda: clustering_spread([0.1, float("inf")]), "clustering score 1 is inf"),
    ],
)
def test_errors_name_the_offending_value(call, message):
    with pytest.raises(FineGrainError, match=message):
        call()
