"""Paired comparison over tasks: the summary line, Holm's adjustment, pairing, and calibration on synthetic pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.uncertainty.intervals import two_way_anova
from mteb_finegrain.uncertainty.paired import bootstrap_p_value, compare, format_comparison, holm

SEEDS = 5


def test_summary_line_format():
    assert format_comparison(0.004, (-0.01, 0.018), 0.57) == "mean_difference=+0.0040 ci95=[-0.0100,+0.0180] p=0.57"
    assert format_comparison(-0.0213, (-0.03, -0.01249), 0.0031) == "mean_difference=-0.0213 ci95=[-0.0300,-0.0125] p=0.003"
    assert format_comparison(-0.00001, (-0.00004, 0.0), 1.0) == "mean_difference=+0.0000 ci95=[+0.0000,+0.0000] p=1.00"
    assert format_comparison(0.1, (0.05, 0.15), 0.0099) == "mean_difference=+0.1000 ci95=[+0.0500,+0.1500] p=0.01"


@pytest.mark.parametrize(
    ("args", "message"),
    [((float("nan"), (0, 1), 0.5), "mean_difference must be a finite number"), ((0.0, (0, 1), 1.5), "p_value must lie in")],
)
def test_summary_line_rejects_bad_numbers(args, message):
    with pytest.raises(FineGrainError, match=message):
        format_comparison(*args)


def test_holm_step_down():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.001]), [0.5, 0.002])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])  # capped at 1, and monotone
    assert holm([]).size == 0
    with pytest.raises(FineGrainError, match="p-values must be"):
        holm([0.5, 2.0])


def test_bootstrap_p_value_is_the_percentile_inversion():
    assert bootstrap_p_value(np.zeros(999)) == 1.0
    assert bootstrap_p_value(np.arange(1, 1000)) == pytest.approx(2 / 1000)
    assert bootstrap_p_value(np.arange(-24, 975)) == pytest.approx(2 * 26 / 1000)


def _tasks(rng, advantage=0.0, sizes=((500, 50), (4500, 150)), own_seed=0.2):
    """Two models on the same items and support sets, per task: shared difficulty and luck, plus their own."""
    a, b = {}, {}
    for n, classes in sizes:
        shared = 1.8 + rng.normal(0, 2.0, n)[None, :] + rng.normal(0, 0.2, (SEEDS, classes))[:, np.arange(n) % classes]
        for out, shift in ((a, advantage), (b, 0.0)):
            logit = shared + shift + rng.normal(0, 0.7, n)[None, :] + rng.normal(0, own_seed, SEEDS)[:, None]
            out[f"{n} items"] = rng.random((SEEDS, n)) < expit(logit)
    return a, b


def test_identical_models_differ_by_exactly_nothing():
    a, _ = _tasks(np.random.default_rng(0))
    for method in ("anova", "bootstrap"):
        result = compare(a, a, method=method)
        assert result.mean_difference == 0.0 and result.ci95 == (0.0, 0.0) and result.p_value == 1.0
        assert result.summary_line() == "mean_difference=+0.0000 ci95=[+0.0000,+0.0000] p=1.00"


def test_components_interval_is_the_t_interval_of_the_summed_task_variances():
    a, b = _tasks(np.random.default_rng(1), advantage=0.1)
    result = compare(a, b)
    anovas = [two_way_anova(a[t].astype(float) - b[t]) for t in a]
    terms = [(term / 4, df) for an in anovas for term, df in an.satterthwaite_terms()]
    variance = sum(term for term, _ in terms)
    df = variance**2 / sum(term**2 / df for term, df in terms)
    half = stats.t.ppf(0.975, df) * math.sqrt(variance)
    mean = np.mean([an.mean for an in anovas])
    assert result.mean_difference == pytest.approx(mean)
    assert result.ci95 == pytest.approx((mean - half, mean + half))
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(mean) / math.sqrt(variance), df))
    assert [t.task for t in result.tasks] == list(a)
    assert all(t.p_holm >= t.p_value for t in result.tasks)
    np.testing.assert_allclose([t.p_holm for t in result.tasks], holm([t.p_value for t in result.tasks]))


def test_bootstrap_pairs_the_resampling_and_is_seeded():
    """Models differing on one item only: with the same indices for both, only that item's draws move the difference."""
    rng = np.random.default_rng(2)
    a = {"t": rng.random((SEEDS, 400)) < 0.8}
    b = {"t": a["t"].copy()}
    b["t"][:, 0] = ~a["t"][:, 0]
    result = compare(a, b, method="bootstrap", seed=3)
    assert result.n_boot == 10_000 and result.method == "bootstrap"
    assert result.ci95[1] - result.ci95[0] < 0.01  # the item drawn 0-4 times; unpaired resampling: ~0.05
    assert result == compare(a, b, method="bootstrap", seed=3)


def test_a_clear_improvement_is_significant_on_every_task():
    a, b = _tasks(np.random.default_rng(4), advantage=0.6)
    for method in ("anova", "bootstrap"):
        result = compare(a, b, method=method)
        assert result.mean_difference > 0.03 and result.ci95[0] > 0 and result.p_value < 0.01
        assert all(t.p_holm < 0.05 for t in result.tasks)


def test_components_test_holds_its_level_and_covers():
    """Four tasks, 5 seeds, no true difference: rejections near 5% and the mean's interval covers 0."""
    rng = np.random.default_rng(5)
    sizes = ((500, 50), (4500, 150), (3000, 60), (2000, 28))
    rejections = 0
    for _ in range(300):
        a, b = _tasks(rng, sizes=sizes, own_seed=0.3)
        result = compare(a, b)
        rejections += result.p_value < 0.05
        assert (result.ci95[0] > 0 or result.ci95[1] < 0) == (result.p_value < 0.05)
    assert 0.02 <= rejections / 300 <= 0.08


def test_bootstrap_is_wider_where_the_difference_is_mostly_cell_noise():
    """Pigeonhole resampling counts the per-cell term about three times: much wider than the components interval."""
    rng = np.random.default_rng(6)
    ratios = []
    for _ in range(5):
        a, b = _tasks(rng, sizes=((2000, 50),), own_seed=0.0)
        anova = compare(a, b).ci95
        boot = compare(a, b, method="bootstrap").ci95
        ratios.append((boot[1] - boot[0]) / (anova[1] - anova[0]))
    assert np.mean(ratios) > 1.3, ratios


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"b": {"other": np.ones((5, 4))}}, r"different tasks: only a has \['t'\], only b has \['other'\]"),
        ({"b": {"t": np.ones((5, 3))}}, r"t: model a's matrix has shape \(5, 4\), model b's \(5, 3\)"),
        ({"method": "permutation"}, "method must be 'anova' or 'bootstrap', got 'permutation'"),
        ({"method": "bootstrap", "n_boot": 999}, "n_boot must be an integer >= 10000, got 999"),
        ({"a": {}}, "at least one task"),
        ({"b": {"t": np.full((5, 4), 2)}}, r"model b's t correctness\[0, 0\] = 2.0 outside"),
    ],
)
def test_compare_errors_name_the_offending_value(kwargs, message):
    a = kwargs.pop("a", {"t": np.ones((5, 4))})
    b = kwargs.pop("b", {"t": np.zeros((5, 4))})
    with pytest.raises(FineGrainError, match=message):
        compare(a, b, **kwargs)


# -- coarse-training runs: each model's run variance joins the task's terms -------------------------


def _with_runs(rng, run_sd, runs=3, sizes=((300, 30), (600, 60))):
    """Two equally good models, each scored as the mean over ``runs`` coarse-training runs that shift every cell."""
    a, b, runs_a, runs_b = {}, {}, {}, {}
    for n, classes in sizes:
        shared = 1.0 + rng.normal(0, 1.5, n)[None, :] + rng.normal(0, 0.2, (SEEDS, classes))[:, np.arange(n) % classes]
        for out, spread in ((a, runs_a), (b, runs_b)):
            own = shared + rng.normal(0, 0.5, n)[None, :] + rng.normal(0, 0.1, SEEDS)[:, None]
            matrices = [rng.random((SEEDS, n)) < expit(own + rng.normal(0, run_sd)) for _ in range(runs)]
            out[f"{n} items"] = np.mean(matrices, axis=0)
            spread[f"{n} items"] = (float(np.std([m.mean() for m in matrices], ddof=1)), runs)
    return a, b, runs_a, runs_b


def test_run_terms_are_added_per_model_with_their_degrees_of_freedom():
    a, b, runs_a, runs_b = _with_runs(np.random.default_rng(7), run_sd=0.2)
    result = compare(a, b, runs_a=runs_a, runs_b=runs_b)
    terms = []
    for task in a:
        task_terms = two_way_anova(a[task] - b[task]).satterthwaite_terms()
        task_terms += [(runs_a[task][0] ** 2 / 3, 2), (runs_b[task][0] ** 2 / 3, 2)]
        terms += [(term / 4, df) for term, df in task_terms]
        variance = sum(term for term, _ in task_terms)
        df = variance**2 / sum(term**2 / df for term, df in task_terms)
        half = stats.t.ppf(0.975, df) * math.sqrt(variance)
        own = next(t for t in result.tasks if t.task == task)
        assert own.ci95 == pytest.approx((own.difference - half, own.difference + half))
    variance = sum(term for term, _ in terms)
    df = variance**2 / sum(term**2 / df for term, df in terms)
    half = stats.t.ppf(0.975, df) * math.sqrt(variance)
    assert result.ci95 == pytest.approx((result.mean_difference - half, result.mean_difference + half))
    wider = compare(a, b).ci95
    assert result.ci95[1] - result.ci95[0] > wider[1] - wider[0]


def test_no_runs_is_the_comparison_without_them():
    a, b, runs_a, _ = _with_runs(np.random.default_rng(8), run_sd=0.2)
    plain = compare(a, b)
    pretrained = {task: (None, 1) for task in a} | {next(iter(a)): (0.05, 1)}  # one run: no spread to add
    assert compare(a, b, runs_a=pretrained, runs_b={}) == plain
    assert compare(a, b, runs_a=runs_a) != plain
    identical = compare(a, a, runs_a=runs_a, runs_b=runs_a)
    assert identical.mean_difference == 0.0 and identical.ci95[0] < 0 < identical.ci95[1] and identical.p_value == 1.0


def test_with_run_terms_the_test_holds_its_level():
    """Equally good models, run-to-run shifts: near 5% rejections with the run terms, far more without."""
    rng = np.random.default_rng(9)
    with_runs = without = 0
    for _ in range(200):
        a, b, runs_a, runs_b = _with_runs(rng, run_sd=0.12)
        with_runs += compare(a, b, runs_a=runs_a, runs_b=runs_b).p_value < 0.05
        without += compare(a, b).p_value < 0.05
    assert 0.01 <= with_runs / 200 <= 0.09 and without / 200 > 0.1


def test_bootstrap_adds_the_run_variance_as_noise():
    a, b, runs_a, runs_b = _with_runs(np.random.default_rng(10), run_sd=0.3, sizes=((300, 30),))
    plain = compare(a, b, method="bootstrap", seed=1).ci95
    noisy = compare(a, b, runs_a=runs_a, runs_b=runs_b, method="bootstrap", seed=1).ci95
    assert noisy[1] - noisy[0] > plain[1] - plain[0]


@pytest.mark.parametrize(
    ("runs_a", "message"),
    [
        ({"other": (0.01, 3)}, r"runs_a names task\(s\) \['other'\] that are not compared"),
        ({"t": (-0.01, 3)}, "runs_std must be a finite number >= 0 or None, got -0.01"),
        ({"t": (0.01, 0)}, "n_runs must be an integer >= 1, got 0"),
        ({"t": 0.01}, r"runs_a\['t'\] must be \(runs_std, n_runs\), got 0.01"),
    ],
)
def test_bad_runs_are_named(runs_a, message):
    with pytest.raises(FineGrainError, match=message):
        compare({"t": np.ones((5, 4))}, {"t": np.zeros((5, 4))}, runs_a=runs_a)
