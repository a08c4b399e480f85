"""The whole path on tiny fixtures: card -> MTEB task -> mteb.evaluate -> result file -> report."""

import json

import mteb
import pytest

from mteb_finegrain.cards import load_card
from mteb_finegrain.protocol import PROTOCOL_VERSION
from mteb_finegrain.results import load_records, load_results
from mteb_finegrain.task import make_task_class
from mteb_finegrain.uncertainty.evidence import check_intervals

from conftest import fast_protocol

METRICS = {"v_measure", "ami", "ari", "cluster_accuracy", "within_coarse_v_measure", "within_coarse_ami", "probe_accuracy", "probe_f1_macro"}


def _run(finegrain_env, tiny_st, out, **protocol_changes):
    task_class = make_task_class(load_card(finegrain_env["card"]))
    task = task_class(protocol=fast_protocol(**protocol_changes), show_progress_bar=False)
    mteb.evaluate(tiny_st, [task], cache=mteb.ResultCache(str(out)), overwrite_strategy="always", show_progress_bar=False)
    return load_results(out)


def test_every_layer_stage_and_metric_is_written(finegrain_env, tiny_st, tmp_path):
    results = _run(finegrain_env, tiny_st, tmp_path / "out")
    assert len(results) == 1
    scores = results[0].scores
    assert results[0].task == "FineGrainHiddenTiny"
    assert scores["protocol_version"] == PROTOCOL_VERSION
    assert scores["settings"]["probe_seed_list"] == [42, 43]
    assert scores["card"]["data"].startswith("sha256:")
    assert set(scores["selected_layer"]) == {"pretrained", "coarse_tuned"}
    records = results[0].records()
    assert scores["card"]["levels"] == ["coarse", "fine"]
    assert scores["coarse_training_level"] == "coarse"
    assert scores["truncation"]["evaluation"]["texts"] == 32 and scores["truncation"]["evaluation"]["truncated"] == 0
    for stage in ("pretrained", "coarse_tuned"):
        for layer in (0, 1, 2):
            for level in ("coarse", "fine"):
                got = {r["metric"] for r in records if r["stage"] == stage and r["layer"] == layer and r["level"] == level}
                assert got == (METRICS if level == "fine" else METRICS - {"within_coarse_v_measure", "within_coarse_ami"})
                shots = sorted(r["shots"] for r in records if r["stage"] == stage and r["layer"] == layer and r["level"] == level and r["metric"] == "probe_accuracy")
                assert shots == [1, 2, 8]
    main = next(r["value"] for r in records if r["stage"] == "coarse_tuned" and r["level"] == "fine" and r["layer"] == scores["selected_layer"]["coarse_tuned"] and r["metric"] == "probe_accuracy" and r["shots"] == 8)
    assert scores["main_score"] == scores["selected_layer_probe_accuracy"] == main
    for r in records:
        assert 0 <= r["std"] and -1 <= r["value"] <= 1
        if r["metric"] == "probe_accuracy":
            assert r["ci95"][0] <= r["value"] <= r["ci95"][1]
        assert ("runs_std" in r) == (r["stage"] == "coarse_tuned")
    low, high = scores["main_score_ci95"]
    assert low < scores["main_score"] < high
    assert scores["coarse_training_runs"]["seeds"] == [42, 43, 44] and len(scores["coarse_training_runs"]["main_score"]) == 3
    assert scores["selection"]["validation_seeds"] == [44, 45] and scores["selection"]["scoring_seeds"] == [42, 43]
    # The stored predictions give back every interval the result claims.
    assert check_intervals(scores, "tiny") == []
    representation = scores["representation"]
    for stage in ("pretrained", "coarse_tuned"):
        for signal in ("effective_rank", "dataset_entropy"):
            assert set(representation[stage][signal]["evaluation"]) == set(representation[stage][signal]["validation"]) == {"0", "1", "2"}
        assert len(representation[stage]["cka_between_layers"]["matrix"]) == 3
    assert set(representation["coarse_tuned"]["cka_to_pretrained"]) == {"0", "1", "2"}
    assert all(-0.05 <= v <= 1.0 + 1e-9 for v in representation["coarse_tuned"]["cka_to_pretrained"].values())


def test_same_run_twice_gives_identical_scores(finegrain_env, tiny_st, tmp_path):
    first = load_records(_run(finegrain_env, tiny_st, tmp_path / "a")[0].path.parent)
    second = load_records(_run(finegrain_env, tiny_st, tmp_path / "b")[0].path.parent)
    assert first == second


def test_the_runtime_records_the_machine_and_each_stages_unconverged_probes(finegrain_env, tiny_st, tmp_path):
    capped = _run(finegrain_env, tiny_st, tmp_path / "capped", probe_max_iter=1, kmeans_l2_normalize=False)[0].scores
    runtime = capped["runtime"]
    assert list(runtime)[-3:] == ["cpu", "blas", "convergence_warnings"]
    assert isinstance(runtime["cpu"], str) and runtime["cpu"]
    assert runtime["blas"] and all(set(library) == {"internal_api", "version", "architecture", "threads"} for library in runtime["blas"])
    # One L-BFGS iteration converges no probe: each stage counts its fits that hit the cap.
    assert set(runtime["convergence_warnings"]) == {"pretrained", "coarse_tuned"} and min(runtime["convergence_warnings"].values()) > 0
    assert capped["settings"]["probe_max_iter"] == 1 and capped["settings"]["kmeans_l2_normalize"] is False
    default = _run(finegrain_env, tiny_st, tmp_path / "default")[0].scores
    assert any(r["value"] != d["value"] for r, d in zip(capped["records"], default["records"]) if r["metric"] == "probe_accuracy")


def test_every_scoring_setting_of_the_protocol_reaches_the_layer_jobs():
    import numpy as np

    from mteb_finegrain.data import CardData, LabelledSplit
    from mteb_finegrain.runner import _level_job

    split = LabelledSplit(["a", "b"], [["x", "y"], ["x1", "y1"]], "rows")
    data = CardData(split, split, split, split, ["coarse", "fine"], [{}, {"x1": "x", "y1": "y"}], "sha256:0", "test", True)
    protocol = fast_protocol(probe_max_iter=7, probe_tol=0.5, probe_c=2.0, probe_standardize=False, kmeans_l2_normalize=False, kmeans_n_init=3, kmeans_max_iter=9, kmeans_tol=0.25)
    samples = {(1, seed): {n: [0, 1] for n in (1, 2, 8)} for seed in protocol.probe_seed_list + protocol.validation_probe_seed_list}
    x = np.zeros((2, 4), dtype=np.float32)
    job = _level_job("pretrained", 0, 1, data, protocol, samples, [1, 2, 8], x, x, x, {0: 0, 1: 1}, None)
    for name, value in (protocol.clustering_options() | protocol.probe_options()).items():
        assert getattr(job, name) == value, name


def test_layer_subset_and_out_of_range(finegrain_env, tiny_st, tmp_path):
    from mteb_finegrain.errors import FineGrainError

    results = _run(finegrain_env, tiny_st, tmp_path / "out", layers=(0, 2), stages=("pretrained",))
    assert {r["layer"] for r in results[0].records()} == {0, 2}
    with pytest.raises(FineGrainError, match="layer 5 is out of range"):
        _run(finegrain_env, tiny_st, tmp_path / "bad", layers=(5,), stages=("pretrained",))
    assert not list((tmp_path / "bad").rglob("FineGrainHidden*.json"))


def test_report_json_and_table(finegrain_env, tiny_st, tmp_path, capsys):
    from mteb_finegrain.cli import main

    _run(finegrain_env, tiny_st, tmp_path / "out")
    assert main(["report", str(tmp_path / "out"), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    base = {"layer", "level", "metric", "mode", "model", "revision", "selected", "shots", "stage", "std", "subset", "task", "value"}
    assert all(base <= set(r) for r in records)
    assert all("ci95" in r for r in records if r["metric"] == "probe_accuracy")
    assert {r["stage"] for r in records} == {"pretrained", "coarse_tuned"}
    assert sum(r["selected"] for r in records if r["metric"] == "v_measure" and r["level"] == "fine") == 2
    assert main(["report", str(tmp_path / "out"), "--plot", str(tmp_path / "p.png")]) == 0
    table = capsys.readouterr().out
    assert "V pre" in table and "probe@8 diff" in table and "level coarse (coarsest, 2 classes)" in table
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_report_on_missing_dir_is_one_clear_error(tmp_path, capsys):
    from mteb_finegrain.cli import main

    assert main(["report", str(tmp_path / "none")]) == 2
    assert "results directory does not exist" in capsys.readouterr().err


def test_setfit_mode_through_the_task_and_the_report(finegrain_env, tiny_st, tmp_path, capsys):
    from mteb_finegrain.cli import main
    from mteb_finegrain.protocol import SetFitSettings

    setfit = SetFitSettings(shots=2, seeds=1, num_iterations=1, max_steps=2, batch_size=4)
    results = _run(finegrain_env, tiny_st, tmp_path / "out", fewshot="setfit", setfit=setfit, shots=(1, 2), main_shots=2)
    records = [r for r in results[0].records() if r["metric"].startswith("setfit")]
    selected = results[0].scores["selected_layer"]
    assert {(r["stage"], r["layer"], r["level"]) for r in records} == {(s, layer, "fine") for s in selected for layer in {selected[s], 2}}
    assert main(["report", str(tmp_path / "out")]) == 0
    assert "setfit_accuracy@2 coarse_tuned layer 2" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "out"), "--json"]) == 0
    assert any(r["mode"] == "setfit" for r in json.loads(capsys.readouterr().out))


def test_aggregate_task_runs_every_packaged_dataset(tiny_st, tmp_path, monkeypatch):
    """FineGrainHidden on the real packaged data (a tiny model, one seed, pretrained only)."""
    import mteb_finegrain  # noqa: F401

    monkeypatch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    task = type(mteb.get_task("FineGrainHidden"))(protocol=fast_protocol(stages=("pretrained",), shots=(8,), clustering_seeds=1, probe_seeds=1), show_progress_bar=False)
    mteb.evaluate(tiny_st, [task], cache=mteb.ResultCache(str(tmp_path / "out")), overwrite_strategy="always", show_progress_bar=False)
    results = {r.subset: r for r in load_results(tmp_path / "out")}
    assert set(results) == {"TREC", "CLINC150", "MASSIVE", "GoEmotions"}
    assert results["GoEmotions"].levels == ["sentiment", "ekman", "emotion"]
    for result in results.values():
        assert result.scores["card"]["data_source"] == "packaged copy"
        assert {r["level"] for r in result.records()} == set(result.levels)


def test_leaderboard_accepts_a_result_the_task_wrote(finegrain_env, tiny_st, tmp_path):
    """The validator on a real result file (default protocol), not a hand-written fixture."""
    from mteb_finegrain.leaderboard import add_submission
    from mteb_finegrain.protocol import Protocol

    task = make_task_class(load_card(finegrain_env["card"]))(protocol=Protocol(), show_progress_bar=False)
    mteb.evaluate(tiny_st, [task], cache=mteb.ResultCache(str(tmp_path / "out")), overwrite_strategy="always", show_progress_bar=False)
    (meta_file,) = (tmp_path / "out").rglob("model_meta.json")
    submission, entry = add_submission(meta_file.parent, tmp_path / "board")
    assert submission.cards == ["Tiny"] and submission.notes == []
    assert (entry / "FineGrainHiddenTiny.json").is_file()


def test_a_passed_in_layer_encoder_runs_and_must_agree_with_the_protocol(finegrain_env, tiny_st, tmp_path):
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.errors import FineGrainError

    task_class = make_task_class(load_card(finegrain_env["card"]))
    encoder = LayerEncoder(tiny_st, pooling="cls", batch_size=8, show_progress_bar=False)
    task = task_class(protocol=fast_protocol(pooling="cls"), show_progress_bar=False)
    mteb.evaluate(encoder, [task], cache=mteb.ResultCache(str(tmp_path / "ok")), overwrite_strategy="always", show_progress_bar=False)
    scores = load_results(tmp_path / "ok")[0].scores
    assert scores["settings"]["pooling"] == "cls" and scores["model"]["pooling"] == "cls"
    assert scores["settings"]["batch_size"] == 8 and scores["model"]["prompt"] is None
    with pytest.raises(FineGrainError, match="the LayerEncoder pools with 'cls' but the task's protocol says 'mean'"):
        mteb.evaluate(encoder, [task_class(protocol=fast_protocol(), show_progress_bar=False)], cache=mteb.ResultCache(str(tmp_path / "bad")), overwrite_strategy="always", show_progress_bar=False)
    assert not list((tmp_path / "bad").rglob("FineGrainHidden*.json"))


def test_cli_pooling_cls_is_what_the_results_say(finegrain_env, tiny_model_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "mteb-finegrain"), "run", "-t", "FineGrainHiddenTiny", "-m", str(tiny_model_dir), "--pooling", "cls",
               "--stages", "pretrained", "--shots", "1,8", "--seeds", "1", "--output-folder", str(out), "--quiet"]
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    (result,) = load_results(out)
    assert result.scores["settings"]["pooling"] == "cls" and result.scores["model"]["pooling"] == "cls"


def test_the_protocols_validation_fraction_carves_the_validation_split(finegrain_env):
    task_class = make_task_class(load_card(finegrain_env["card"]))
    sizes = {}
    for fraction in (0.1, 0.3):
        task = task_class(protocol=fast_protocol(validation_fraction=fraction), show_progress_bar=False)
        task.load_data()
        sizes[fraction] = len(task.dataset["default"]["test"].validation)
    assert sizes == {0.1: 8, 0.3: 24}  # of 20 training rows per fine class, 4 classes
