import numpy as np
import pytest
from sklearn.cluster import KMeans, kmeans_plusplus

from mteb_finegrain.scoring.clustering import _kmeans, cluster_accuracy, clustering_scores, kmeans_plusplus_indices, within_coarse_v_measure
from mteb_finegrain.scoring.fewshot_probe import fewshot_indices, fit_counting_convergence_warnings, fit_probe, probe_scores, warm_start_from, warm_start_ladder


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = {"ant": (0, 10), "bee": (0, 12), "oak": (10, 0), "elm": (12, 0)}
    fine = [f for f in centres for _ in range(20)]
    x = np.array([centres[f] for f in fine], dtype=float) + rng.normal(scale=0.2, size=(80, 2))
    coarse = ["animal" if f in ("ant", "bee") else "plant" for f in fine]
    return x, coarse, fine


def test_cluster_accuracy_uses_best_matching():
    assert cluster_accuracy(["a", "a", "b", "b"], [1, 1, 0, 0]) == 1.0
    assert cluster_accuracy(["a", "a", "b", "b"], [0, 0, 0, 0]) == 0.5


def test_separable_blobs_score_high_and_noise_low():
    x, coarse, fine = _blobs()
    scores = clustering_scores(x, fine, seeds=[0, 1])
    assert set(scores) == {"v_measure", "ami", "ari", "cluster_accuracy"}
    assert min(scores["v_measure"]) > 0.95 and min(scores["cluster_accuracy"]) > 0.95
    noise = np.random.default_rng(1).normal(size=x.shape)
    assert max(clustering_scores(noise, fine, seeds=[0])["v_measure"]) < 0.3


@pytest.mark.parametrize(("n", "dim", "k"), [(200, 8, 4), (600, 64, 30), (450, 384, 150)])
def test_kmeans_seeding_is_scikit_learns(n, dim, k):
    # The faster k-means++ must pick the rows scikit-learn picks, so that clusters (and every score
    # on the leaderboard) stay those of KMeans(n_init=1, random_state=seed).
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[: n // 2] += 3 * rng.normal(size=dim).astype(np.float32)  # uneven density: many local trials matter
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for seed in (0, 42, 7):
        _, expected = kmeans_plusplus(x - x.mean(axis=0), k, random_state=seed)
        np.testing.assert_array_equal(kmeans_plusplus_indices(x, k, seed), expected)
        reference = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(x)
        np.testing.assert_array_equal(_kmeans(x, k, seed), reference)
    # Other dtypes are left to scikit-learn's own seeding.
    np.testing.assert_array_equal(_kmeans(x.astype(np.float64), k, 0), KMeans(n_clusters=k, n_init=1, random_state=0).fit_predict(x.astype(np.float64)))
    # So are several runs per seed, and the iteration cap and tolerance are scikit-learn's.
    np.testing.assert_array_equal(_kmeans(x, k, 3, n_init=3), KMeans(n_clusters=k, n_init=3, random_state=3).fit_predict(x))
    np.testing.assert_array_equal(_kmeans(x, k, 3, max_iter=2, tol=0.1), KMeans(n_clusters=k, n_init=1, max_iter=2, tol=0.1, random_state=3).fit_predict(x))


def test_within_coarse_ignores_what_coarse_labels_explain():
    x, coarse, fine = _blobs()
    assert min(within_coarse_v_measure(x, coarse, fine, seeds=[0, 1])) > 0.9
    # fine classes merged inside each coarse class: globally still 2 clean groups, within nothing
    merged = x.copy()
    merged[:40] = [0, 11]
    merged[40:] = [11, 0]
    merged += np.random.default_rng(0).normal(scale=0.2, size=merged.shape)
    assert max(within_coarse_v_measure(merged, coarse, fine, seeds=[0])) < 0.2


def test_fewshot_samples_are_nested_seeded_and_per_class():
    labels = [c for c in "abcd" for _ in range(10)] + ["e"]
    s = fewshot_indices(labels, [1, 2, 4], seed=0)
    assert s == fewshot_indices(labels, [1, 2, 4], seed=0)
    assert s != fewshot_indices(labels, [1, 2, 4], seed=1)
    assert set(s[1]) <= set(s[2]) <= set(s[4])
    assert len(s[4]) == 4 * 4 + 1  # 'e' has one example only: all of it
    assert sorted(labels[i] for i in s[2]).count("a") == 2


def test_probe_learns_separable_classes():
    x, _, fine = _blobs()
    idx = fewshot_indices(fine, [4], seed=0)[4]
    accuracy, f1 = probe_scores(x[idx], [fine[i] for i in idx], x, fine, seed=0)
    assert accuracy > 0.95 and f1 > 0.95


def test_warm_start_rungs_depend_on_the_shot_count_alone():
    assert [warm_start_from(n) for n in (1, 2, 3, 4, 6, 8, 16, 17)] == [None, 1, 2, 2, 4, 4, 8, 16]
    assert warm_start_ladder([8]) == [1, 2, 4, 8]
    assert warm_start_ladder([1, 2, 4, 8, 16]) == [1, 2, 4, 8, 16]
    assert warm_start_ladder([3, 16]) == [1, 2, 3, 4, 8, 16]
    with pytest.raises(ValueError, match="shots must be a positive integer, got 0"):
        warm_start_from(0)


def test_a_warm_started_probe_starts_from_the_given_probe():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 10))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + 2 * (x[:, 2] > 0)
    cold, _ = fit_probe(x, y, seed=0)
    # Started at its own optimum, L-BFGS has nothing left to do; from zero it needs many steps.
    again, _ = fit_probe(x, y, seed=0, start=cold)
    assert again[-1].n_iter_[0] <= 2 < cold[-1].n_iter_[0]
    np.testing.assert_allclose(again[-1].coef_, cold[-1].coef_, atol=1e-3)
    assert cold[-1].n_iter_[0] == fit_probe(x, y, seed=0)[0][-1].n_iter_[0]  # the start was copied, not refitted
    # A start with other classes is not used: the fit is the cold one.
    other, _ = fit_probe(x[:, :3], y % 2, seed=0)
    np.testing.assert_array_equal(fit_probe(x, y, seed=0, start=other)[0][-1].coef_, cold[-1].coef_)


def test_probe_settings_are_those_given():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 10)) * np.arange(1, 11)
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + 2 * (x[:, 2] > 0)
    probe, _ = fit_probe(x, y, seed=0)
    regression = probe[-1]
    assert (regression.max_iter, regression.tol, regression.C) == (100, 1e-4, 1.0)
    assert [type(step).__name__ for step in probe] == ["StandardScaler", "LogisticRegression"]
    probe, _ = fit_probe(x, y, seed=0, max_iter=7, tol=1e-2, C=0.5, standardize=False)
    assert (probe[-1].max_iter, probe[-1].tol, probe[-1].C) == (7, 1e-2, 0.5)
    assert [type(step).__name__ for step in probe] == ["LogisticRegression"]


def test_convergence_warnings_are_counted_not_shown_and_other_warnings_pass():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 10))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + 2 * (x[:, 2] > 0)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        _, stopped = fit_probe(x, y, seed=0, max_iter=2)
        _, converged = fit_probe(x, y, seed=0)
        # 30 classes of one example each: scikit-learn's regression guess, dropped.
        _, guessed = fit_probe(rng.normal(size=(30, 4)), np.arange(30), seed=0)
    assert (stopped, converged) == (1, 0)
    assert shown == []

    class Noisy:
        def fit(self, x, y):
            warnings.warn("not converged", ConvergenceWarning)
            warnings.warn("something else", RuntimeWarning)
            warnings.warn("not converged again", ConvergenceWarning)

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert fit_counting_convergence_warnings(Noisy(), x, y) == 2
    assert [(w.category, str(w.message)) for w in shown] == [(RuntimeWarning, "something else")]


def _level_job(**changes):
    from mteb_finegrain.scoring.layer_level import LevelJob

    x, coarse, fine = _blobs()
    x = x * [1.0, 40.0]  # unequal scales: unit length and standardisation both matter
    shots, seeds = (1, 2, 4), [0, 1]
    samples = {seed: fewshot_indices(fine, shots, seed) for seed in seeds}
    settings = dict(
        stage="pretrained",
        layer=1,
        level="fine",
        truth=fine,
        parents=coarse,
        eval_x=x,
        pool_rows={(seed, n): x[samples[seed][n]] for seed in seeds for n in shots},
        pool_labels={(seed, n): [fine[i] for i in samples[seed][n]] for seed in seeds for n in shots},
        valid_x=x,
        valid_truth=fine,
        shots=shots,
        main_shots=2,
        warm_start=True,
        probe_seeds=seeds,
        clustering_seeds=seeds,
    )
    return LevelJob(**(settings | changes))


def test_level_job_defaults_are_the_protocols():
    import dataclasses

    from mteb_finegrain.protocol import Protocol
    from mteb_finegrain.scoring.layer_level import LevelJob

    defaults = {f.name: f.default for f in dataclasses.fields(LevelJob) if f.default is not dataclasses.MISSING}
    protocol = Protocol()
    assert protocol.clustering_options() | protocol.probe_options() == {name: defaults[name] for name in protocol.clustering_options() | protocol.probe_options()}


def test_layer_level_scores_follow_the_protocol_settings():
    from mteb_finegrain.scoring.layer_level import score_layer_level

    def values(outcome):
        return [r["value"] for r in outcome.clustering], [r["value"] for r in outcome.probes]

    default = score_layer_level(_level_job())
    again = score_layer_level(_level_job())  # deterministic
    assert (again.clustering, again.probes, again.validation, again.predicted.tolist() if again.predicted is not None else None) == (
        default.clustering, default.probes, default.validation, default.predicted.tolist() if default.predicted is not None else None)
    assert all((again.correct[n] == default.correct[n]).all() for n in default.correct)
    assert default.convergence_warnings == 0
    capped = score_layer_level(_level_job(probe_max_iter=1))
    # Every fit stopped: both scoring seeds' ladder 1, 2, 4 and both validation seeds' ladder 1, 2 (to the main shots).
    assert capped.convergence_warnings == 2 * 3 + 2 * 2
    assert values(capped)[0] == values(default)[0] and values(capped)[1] != values(default)[1]
    raw = score_layer_level(_level_job(kmeans_l2_normalize=False))
    assert values(raw)[0] != values(default)[0] and values(raw)[1] == values(default)[1]
    for change in ({"probe_c": 1e-4}, {"probe_standardize": False}):
        assert values(score_layer_level(_level_job(**change)))[1] != values(default)[1], change


_SCORING_SCRIPT = """
import json, sys
import numpy as np
import psutil
from joblib import Parallel, delayed
from mteb_finegrain.scoring.workers import start_scoring_workers, wait_for_scoring_workers, shutdown_scoring_workers
from mteb_finegrain.scoring.clustering import clustering_scores

start_scoring_workers()
wait_for_scoring_workers()
x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
Parallel(n_jobs=2)(delayed(clustering_scores)(x, ["a", "b"] * 20, [seed]) for seed in range(4))
me = psutil.Process()
started = [(p.pid, " ".join(p.cmdline())) for p in me.children(recursive=True)]
if sys.argv[1] == "shutdown":
    shutdown_scoring_workers()
after = [p.pid for p in me.children(recursive=True) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
print(json.dumps({"started": started, "alive_after_shutdown": after}))
"""


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("how", ["shutdown", "exit"])
def test_no_scoring_worker_outlives_its_process(how):
    import json
    import os
    import subprocess
    import sys
    import time

    done = subprocess.run([sys.executable, "-c", _SCORING_SCRIPT, how], capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    workers = [pid for pid, command in report["started"] if "LokyProcess" in command]
    assert workers, report  # the scoring did run in worker processes
    if how == "shutdown":
        assert not set(workers) & set(report["alive_after_shutdown"])  # stopped and waited for
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid, _ in report["started"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [command for pid, command in report["started"] if _alive(pid)] == []
