"""Coverage of the probe-accuracy intervals on synthetic data shaped like the benchmark's.

Correctness is drawn from a crossed model, ``logit p_si = mu + a_i + b_s + c_s,class(i)``: item
difficulty ``a_i ~ N(0, sigma_item^2)``, support-set quality ``b_s ~ N(0, sigma_seed^2)`` and,
because a support set is drawn class by class, a support-set x class effect
``c_sk ~ N(0, sigma_seed_class^2)``. Sizes are TREC's (500 items, 50 fine classes) and
CLINC150's (4,500 items, 150 classes) with the protocol's 5 seeds; the parameters give
accuracies of 0.78-0.83 and seed-to-seed standard deviations of the accuracy from 0.004 to 0.04,
the range the leaderboard's finest-level 8-shot probe records show. The estimand is the expected
accuracy over new items and new support sets, ``E[expit(mu + Z * total_sd)]``.

Every draw is seeded, so each coverage figure is a fixed number; the bounds leave room for the
Monte Carlo error of the replications (about 0.007 at 1,000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from mteb_finegrain.uncertainty.intervals import paired_interval, probe_interval, two_way_anova

SEEDS = 5
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(101)


def expected_accuracy(mu: float, total_sd: float) -> float:
    """``E[expit(mu + Z total_sd)]`` for ``Z ~ N(0, 1)``, by Gauss-Hermite quadrature."""
    return float(np.sum(_WEIGHTS * expit(mu + total_sd * _NODES)) / math.sqrt(2 * math.pi))


@dataclass(frozen=True)
class Crossed:
    name: str
    items: int
    classes: int
    mu: float
    sigma_item: float
    sigma_seed: float
    sigma_seed_class: float

    @property
    def total_sd(self) -> float:
        return math.hypot(self.sigma_item, self.sigma_seed, self.sigma_seed_class)

    @property
    def truth(self) -> float:
        return expected_accuracy(self.mu, self.total_sd)

    def logits(self, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
        item = rng.normal(0.0, self.sigma_item, self.items)
        seed = rng.normal(0.0, self.sigma_seed, SEEDS)
        seed_class = rng.normal(0.0, self.sigma_seed_class, (SEEDS, self.classes))
        return self.mu + shift + item[None, :] + seed[:, None] + seed_class[:, np.arange(self.items) % self.classes]

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return rng.random((SEEDS, self.items)) < expit(self.logits(rng))


SCENARIOS = [
    # Seed noise near the floor that 500 items' per-cell noise sets (seed sd ~0.012).
    Crossed("TREC-sized, little support-set noise", 500, 50, 2.2, 2.0, 0.0, 0.1),
    # The support set dominates: seed sd ~0.04, the largest the board's main-score records show.
    Crossed("TREC-sized, strong support-set noise", 500, 50, 2.2, 2.0, 0.45, 0.2),
    Crossed("CLINC150-sized, little support-set noise", 4500, 150, 2.5, 2.0, 0.0, 0.1),
    Crossed("CLINC150-sized, strong support-set noise", 4500, 150, 2.5, 2.0, 0.35, 0.2),
]
IDS = [s.name for s in SCENARIOS]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_scenarios_look_like_the_leaderboard(scenario):
    rng = np.random.default_rng(7)
    draws = [scenario.draw(rng) for _ in range(40)]
    accuracy = np.mean([d.mean() for d in draws])
    seed_sd = np.mean([d.mean(axis=1).std() for d in draws])
    assert abs(accuracy - scenario.truth) < 0.01
    assert 0.75 <= accuracy <= 0.9
    assert 0.003 <= seed_sd <= 0.045


def _coverage(scenario: Crossed, replications: int, seed: int, **interval_options) -> float:
    rng = np.random.default_rng(seed)
    truth = scenario.truth
    hits = 0
    for _ in range(replications):
        low, high = probe_interval(scenario.draw(rng), **interval_options)
        hits += low <= truth <= high
    return hits / replications


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_probe_interval_covers_95_percent(scenario):
    coverage = _coverage(scenario, 1000, seed=11)
    assert 0.92 <= coverage <= 0.98, f"{scenario.name}: coverage {coverage:.3f}"


def test_five_seeds_need_the_satterthwaite_t_quantile():
    """A normal quantile undercovers where support sets dominate; t(S-1) overcovers where they do not."""
    quantile_z = stats.norm.ppf(0.975)
    quantile_t4 = stats.t.ppf(0.975, SEEDS - 1)
    found = {}
    for scenario in (SCENARIOS[2], SCENARIOS[3]):
        rng = np.random.default_rng(13)
        hits_z = hits_t4 = 0
        for _ in range(1000):
            anova = two_way_anova(scenario.draw(rng))
            error = abs(anova.mean - scenario.truth)
            hits_z += error <= quantile_z * anova.se
            hits_t4 += error <= quantile_t4 * anova.se
        found[scenario.name] = (hits_z / 1000, hits_t4 / 1000)
    z_little, t4_little = found[SCENARIOS[2].name]
    z_strong, t4_strong = found[SCENARIOS[3].name]
    assert z_strong < 0.92, found  # 1.96 with a seed variance estimated on 4 df
    assert t4_little > 0.98, found  # 2.78 where the item term (499 or 4499 df) dominates
    assert 0.93 <= z_little and 0.93 <= t4_strong, found


def test_pigeonhole_bootstrap_undercovers_when_support_sets_dominate():
    """The evidence for the default: resampling 5 seeds gives too narrow an interval."""
    scenario = SCENARIOS[3]
    rng = np.random.default_rng(17)
    truth = scenario.truth
    hits_boot = hits_anova = 0
    replications = 150
    for k in range(replications):
        correct = scenario.draw(rng)
        low, high = probe_interval(correct, method="bootstrap", n_boot=400, seed=k)
        hits_boot += low <= truth <= high
        low, high = probe_interval(correct)
        hits_anova += low <= truth <= high
    assert hits_boot / replications < 0.92 <= hits_anova / replications, (hits_boot, hits_anova)


def test_runs_sd_is_folded_in():
    """A coarse-training run shifts every logit; the interval covers only with ``runs_sd`` folded in."""
    scenario = SCENARIOS[0]
    run_sigma = 0.25  # on the logit scale
    rng = np.random.default_rng(19)
    shifts = rng.normal(0.0, run_sigma, 20_000)
    # sd over runs of the expected accuracy a run reaches: the runs_sd a caller would supply
    runs_sd = float(np.std([expected_accuracy(scenario.mu + r, scenario.total_sd) for r in shifts[:2000]]))
    truth = expected_accuracy(scenario.mu, math.hypot(scenario.total_sd, run_sigma))
    hits_with = hits_without = 0
    for k in range(1000):
        correct = rng.random((SEEDS, scenario.items)) < expit(scenario.logits(rng, shift=shifts[k]))
        low, high = probe_interval(correct, runs_sd=runs_sd)
        hits_with += low <= truth <= high
        low, high = probe_interval(correct)
        hits_without += low <= truth <= high
    assert 0.015 < runs_sd < 0.04
    assert 0.93 <= hits_with / 1000 <= 0.975
    assert hits_without / 1000 < 0.85


@dataclass(frozen=True)
class Pair:
    """Two models on the same items and support sets, sharing item difficulty and support-set luck."""

    base: Crossed
    advantage: float  # model a's logit shift over model b
    sigma_model_item: float  # items one model finds easier than the other does
    sigma_model_seed: float  # support sets that suit one model more than the other

    def truth(self) -> float:
        total = math.hypot(self.base.total_sd, self.sigma_model_item, self.sigma_model_seed)
        return expected_accuracy(self.base.mu + self.advantage, total) - expected_accuracy(self.base.mu, total)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        shared = self.base.logits(rng)
        out = []
        for shift in (self.advantage, 0.0):
            own_item = rng.normal(0.0, self.sigma_model_item, self.base.items)
            own_seed = rng.normal(0.0, self.sigma_model_seed, SEEDS)
            out.append(rng.random(shared.shape) < expit(shared + shift + own_item[None, :] + own_seed[:, None]))
        return out[0], out[1]


PAIRS = [Pair(SCENARIOS[1], 0.05, 0.7, 0.2), Pair(SCENARIOS[3], 0.05, 0.7, 0.2)]


@pytest.mark.parametrize("pair", PAIRS, ids=[p.base.name for p in PAIRS])
def test_paired_interval_covers_95_percent(pair):
    rng = np.random.default_rng(23)
    truth = pair.truth()
    hits = 0
    for _ in range(600):
        low, high = paired_interval(*pair.draw(rng))
        hits += low <= truth <= high
    assert 0.92 <= hits / 600 <= 0.98
