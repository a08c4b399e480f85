"""``mteb-finegrain report`` on results of protocol 4.0 (intervals, stored predictions, drift and
layer signals) and of older protocols (scores alone)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.report import format_table, json_records, plot_layers
from mteb_finegrain.report_data import coarse_tuning_effects, paired_runs_interval, read_representation
from mteb_finegrain.results import load_results
from mteb_finegrain.uncertainty.evidence import predictions_block, runs_interval
from mteb_finegrain.uncertainty.intervals import paired_interval

from leaderboard_fixtures import subset_scores

LAYERS = [0, 1, 2]
SEEDS = [42, 43, 44, 45, 46]
COARSE_SEEDS = [42, 43, 44]
ITEMS = 30
LABELS = ["fine-a", "fine-b", "fine-c", "fine-d"]
FOUR_0_KEYS = ("main_score_ci95", "interval", "coarse_training_runs", "selection", "representation", "predictions")


def _correctness(rng, p: float) -> np.ndarray:
    return rng.random((len(SEEDS), ITEMS)) < p


def _codes(correct: np.ndarray, gold: np.ndarray) -> np.ndarray:
    wrong = (gold[None, :] + 1 + np.arange(correct.size).reshape(correct.shape) % (len(LABELS) - 1)) % len(LABELS)
    return np.where(correct, gold[None, :], wrong)


def _representation(layers, stages) -> dict:
    block = {}
    for stage in stages:
        tuned = stage == "coarse_tuned"
        signal = lambda base, step: {split: {str(x): base + step * x - 0.5 * (split == "validation") for x in layers}  # noqa: E731
                                     for split in ("evaluation", "validation")}
        block[stage] = {"effective_rank": signal(10.0 - tuned, 2.0), "dataset_entropy": signal(2.0, 0.1)}
        if len(layers) > 1:
            block[stage]["cka_between_layers"] = {"layers": list(layers), "matrix": [[math.exp(-abs(a - b) / 2) for b in layers] for a in layers]}
        if tuned:
            block[stage]["cka_to_pretrained"] = {str(x): 0.95 - 0.1 * x for x in layers}
            block[stage]["cka_to_pretrained_permuted"] = {str(x): 0.01 * (-1) ** x for x in layers}
    return block


def scores_4_0(*, hidden_states: bool = True, seed: int = 0) -> dict:
    """One subset's scores of protocol 4.0 whose probe records, intervals and main score are what
    the stored predictions imply (finest level, 8 shots), with a representation block."""
    scores = subset_scores("Toy", model="org/toy", revision="r1", n_layers=len(LAYERS), hidden_states=hidden_states)
    layers = scores["model"]["layers"]
    stages = ["pretrained", "coarse_tuned"] if hidden_states else ["pretrained"]
    finest = scores["card"]["levels"][-1]
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, len(LABELS), ITEMS)
    correct = {("pretrained", x): [_correctness(rng, 0.45 + 0.05 * x)] for x in layers}
    if hidden_states:
        correct |= {("coarse_tuned", x): [_correctness(rng, 0.55 + 0.05 * x + 0.04 * r) for r in range(len(COARSE_SEEDS))] for x in layers}
    intervals = {key: runs_interval(matrices) for key, matrices in correct.items()}
    for record in scores["records"]:
        record.pop("ci95", None)
        record.pop("runs_std", None)
        key = (record["stage"], record["layer"])
        if record["metric"] != "probe_accuracy":
            if record["stage"] == "coarse_tuned":
                record["runs_std"] = 0.004
            continue
        if record["level"] == finest and record["shots"] == 8:
            record["value"] = intervals[key].value
            record["ci95"] = list(intervals[key].ci95)
            if intervals[key].runs_std is not None:
                record["runs_std"] = intervals[key].runs_std
        else:
            record["ci95"] = [max(0.0, record["value"] - 0.05), min(1.0, record["value"] + 0.05)]
            if record["stage"] == "coarse_tuned":
                record["runs_std"] = 0.01
    main = intervals[(stages[-1], scores["selected_layer"][stages[-1]])]
    scores.update(protocol_version="4.0", main_score=main.value, selected_layer_probe_accuracy=main.value, main_score_ci95=list(main.ci95))
    scores["representation"] = _representation(layers, stages)
    scores["predictions"] = predictions_block(
        level=finest, shots=8, seeds=SEEDS, coarse_seeds=COARSE_SEEDS if hidden_states else [], split_sha256="sha256:" + "ab" * 32,
        labels=LABELS, gold=gold, runs={stage: {x: [_codes(m, gold) for m in correct[(stage, x)]] for x in layers} for stage in stages},
    )
    if hidden_states:
        scores["coarse_training_runs"] = {"seeds": COARSE_SEEDS, "main_score": [0.6, 0.62, 0.64], "selected_layer": [2, 2, 2], "runs_std": main.runs_std}
    return scores


def scores_3_1() -> dict:
    """The same subset as protocol 3.1 wrote it: no intervals, predictions or representation."""
    scores = copy.deepcopy(scores_4_0())
    for key in FOUR_0_KEYS:
        scores.pop(key, None)
    for record in scores["records"]:
        record.pop("ci95", None)
        record.pop("runs_std", None)
    scores["protocol_version"] = "3.1"
    return scores


def write_result(root: Path, scores: dict, *, model: str = "org/toy", task: str = "FineGrainHiddenToy") -> Path:
    """Write ``scores`` as mteb writes a result (``<root>/<model>/<revision>/<task>.json`` and model_meta.json)."""
    folder = root / model.replace("/", "__") / "r1"
    folder.mkdir(parents=True, exist_ok=True)
    document = {"dataset_revision": "cards", "task_name": task, "mteb_version": "2.26.24", "scores": {"test": [scores]},
                "evaluation_time": 1.0, "kg_co2_emissions": None, "date": 1795680394.6}
    (folder / f"{task}.json").write_text(json.dumps(document), encoding="utf-8")
    (folder / "model_meta.json").write_text(json.dumps({"name": model, "revision": "r1", "n_parameters": 1000}), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def results_4_0(tmp_path_factory):
    return load_results(write_result(tmp_path_factory.mktemp("v4"), scores_4_0()))


# -- the coarse-tuning effect's interval -----------------------------------------------------------


def test_effect_interval_with_one_run_is_the_paired_interval():
    rng = np.random.default_rng(1)
    tuned, pretrained = _correctness(rng, 0.7), _correctness(rng, 0.6)
    effect = paired_runs_interval([tuned], pretrained)
    assert effect.runs_std is None and effect.n_runs == 1
    assert effect.value == pytest.approx(tuned.mean() - pretrained.mean())
    assert effect.ci95 == pytest.approx(paired_interval(tuned, pretrained), abs=1e-12)


def test_effect_interval_adds_the_coarse_runs_variance():
    rng = np.random.default_rng(2)
    runs = [_correctness(rng, p) for p in (0.6, 0.7, 0.8)]
    pretrained = _correctness(rng, 0.55)
    effect = paired_runs_interval(runs, pretrained)
    average = np.mean(runs, axis=0)
    without_runs = paired_interval(average, pretrained)
    assert effect.value == pytest.approx(average.mean() - pretrained.mean())
    assert effect.runs_std == pytest.approx(np.std([m.mean() for m in runs], ddof=1))
    assert effect.ci95[0] < without_runs[0] and effect.ci95[1] > without_runs[1]  # wider: runs vary, and few runs give few df
    assert effect.ci95[0] < effect.value < effect.ci95[1]


def test_effect_interval_refuses_unpaired_matrices():
    with pytest.raises(FineGrainError, match="same seeds and items"):
        paired_runs_interval([np.ones((5, 30))], np.ones((5, 29)))
    with pytest.raises(FineGrainError, match="at least one"):
        paired_runs_interval([], np.ones((5, 30)))


# -- report --json ------------------------------------------------------------------------------


def test_json_has_intervals_drift_signals_and_effects(results_4_0):
    (result,) = results_4_0
    rows = json_records(results_4_0)
    finest = result.levels[-1]
    probe = [r for r in rows if r["metric"] == "probe_accuracy"]
    assert probe and all(r["ci95"][0] <= r["value"] <= r["ci95"][1] for r in probe)
    assert all("runs_std" in r for r in probe if r["stage"] == "coarse_tuned") and not any("runs_std" in r for r in probe if r["stage"] == "pretrained")
    assert all("ci95" not in r for r in rows if r["metric"] == "v_measure")

    representation = [r for r in rows if "split" in r and r["metric"] != "coarse_tuning_effect"]
    assert all(r["level"] is None and r["shots"] is None and r["std"] is None and r["mode"] is None for r in representation)
    for metric in ("cka_to_pretrained", "cka_to_pretrained_permuted"):
        assert sorted(r["layer"] for r in representation if r["metric"] == metric) == LAYERS
        assert {(r["stage"], r["split"]) for r in representation if r["metric"] == metric} == {("coarse_tuned", "evaluation")}
    for metric in ("effective_rank", "dataset_entropy"):
        got = {(r["stage"], r["split"], r["layer"]) for r in representation if r["metric"] == metric}
        assert got == {(s, split, x) for s in ("pretrained", "coarse_tuned") for split in ("evaluation", "validation") for x in LAYERS}
    evaluation_rank = {(r["stage"], r["layer"]): r["value"] for r in representation if r["metric"] == "effective_rank" and r["split"] == "evaluation"}
    assert evaluation_rank[("pretrained", 1)] == 12.0 and evaluation_rank[("coarse_tuned", 2)] == 13.0

    effects = [r for r in rows if r["metric"] == "coarse_tuning_effect"]
    assert sorted(r["layer"] for r in effects) == LAYERS
    values = result.lookup()
    for row in effects:
        assert (row["stage"], row["level"], row["shots"], row["split"], row["n_runs"]) == ("coarse_tuned", finest, 8, "evaluation", 3)
        assert row["ci95"][0] < row["value"] < row["ci95"][1]
        difference = values[("coarse_tuned", finest, row["layer"], "probe_accuracy", 8)] - values[("pretrained", finest, row["layer"], "probe_accuracy", 8)]
        assert row["value"] == pytest.approx(difference, abs=1e-12)  # the same items and support sets as the records
        assert row["runs_std"] == pytest.approx(next(r["runs_std"] for r in probe if r["stage"] == "coarse_tuned" and r["layer"] == row["layer"]
                                                     and r["level"] == finest and r["shots"] == 8))
    assert sum(r["selected"] for r in effects) == 1
    assert [r["metric"] for r in rows].index("coarse_tuning_effect") > max(i for i, r in enumerate(rows) if "split" not in r)


def test_json_of_the_cli_is_the_records(results_4_0, tmp_path, capsys):
    from mteb_finegrain.cli import main

    write_result(tmp_path, scores_4_0())
    assert main(["report", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(json_records(results_4_0)))


# -- the text table -------------------------------------------------------------------------------


def test_table_shows_intervals_effect_and_drift(results_4_0):
    (result,) = results_4_0
    table = format_table(results_4_0)
    low, high = result.parsed.main_score_ci95
    assert f"main_score={result.parsed.main_score:.4f} [{low:.4f}, {high:.4f}]" in table
    selected = result.parsed.selected_layer["coarse_tuned"]
    record = next(r for r in result.parsed.records if r.key == ("coarse_tuned", "fine", selected, "probe_accuracy", 8))
    assert f"coarse_tuned layer {selected}: probe@8 {record.value:.4f} [{record.ci95[0]:.4f}, {record.ci95[1]:.4f}]" in table
    assert "sd over 3 coarse-training runs" in table
    header = next(line for line in table.splitlines() if line.lstrip().startswith("layer") and "probe@8 diff [ci95]" in line)
    assert header.rstrip().endswith("CKA")
    effect = coarse_tuning_effects(result).by_layer[1]
    row = next(line for line in table.splitlines()[table.splitlines().index(header) + 1:] if line.split()[0] == "1")
    assert f"{effect.value:+.4f} [{effect.ci95[0]:+.4f}, {effect.ci95[1]:+.4f}]" in row and row.rstrip().endswith("0.850")
    assert "spread over those seeds, not an interval" in table and "CKA = linear CKA" in table and "the coarse-tuning effect" in table


# -- the plot -------------------------------------------------------------------------------------


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_plot_draws_drift_and_layer_cka(results_4_0, tmp_path):
    representation = read_representation(results_4_0[0])
    assert set(representation.cka_between_layers) == {"pretrained", "coarse_tuned"}
    assert _is_png(plot_layers(results_4_0, tmp_path / "plots" / "layers.png"))


def test_plot_of_two_models_one_with_drift_one_without(tmp_path):
    root = write_result(tmp_path / "res", scores_4_0())
    write_result(root, scores_3_1(), model="org/old")
    results = load_results(root)
    assert len(results) == 2
    assert _is_png(plot_layers(results, tmp_path / "mixed.png"))
    assert "CKA" in format_table(results)


# -- older results and models without hidden states ----------------------------------------------


def test_a_3_1_result_still_reports_and_plots(tmp_path):
    results = load_results(write_result(tmp_path / "res", scores_3_1()))
    rows = json_records(results)
    assert rows and not any("ci95" in r or "runs_std" in r or "split" in r for r in rows)
    assert {r["metric"] for r in rows} >= {"v_measure", "probe_accuracy"}
    table = format_table(results)
    assert "protocol=3.1" in table and "probe@8 diff" in table and "[ci95]" not in table and "CKA" not in table
    assert _is_png(plot_layers(results, tmp_path / "old.png"))


def test_a_pretrained_only_model_has_signals_and_no_effect(tmp_path):
    results = load_results(write_result(tmp_path / "res", scores_4_0(hidden_states=False)))
    rows = json_records(results)
    assert not any(r["metric"] in ("coarse_tuning_effect", "cka_to_pretrained") for r in rows)
    assert {(r["metric"], r["split"], r["layer"]) for r in rows if "split" in r} == {
        (m, split, -1) for m in ("effective_rank", "dataset_entropy") for split in ("evaluation", "validation")}
    assert "pretrained   layer -1: probe@8" in format_table(results)
    assert _is_png(plot_layers(results, tmp_path / "tfidf.png"))


def test_a_malformed_representation_is_one_error_naming_the_file(tmp_path):
    scores = scores_4_0()
    scores["representation"]["coarse_tuned"]["cka_to_pretrained"]["1"] = "high"
    results = load_results(write_result(tmp_path / "res", scores))
    with pytest.raises(FineGrainError, match=r"FineGrainHiddenToy\.json: representation\.coarse_tuned\.cka_to_pretrained\.1 must be a number"):
        json_records(results)


def test_an_effect_at_other_shots_than_the_table_gets_its_own_column(tmp_path):
    scores = scores_4_0()
    scores["predictions"]["shots"] = 2  # main_shots 2: the effect is not the probe@8 difference
    table = format_table(load_results(write_result(tmp_path / "res", scores)))
    header = next(line for line in table.splitlines() if "effect@2 [ci95]" in line)
    assert "probe@8 diff" in header and "probe@8 diff [ci95]" not in table
