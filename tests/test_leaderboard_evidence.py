"""The leaderboard's checks of a protocol 4.0 result's evidence: intervals, predictions, runs, representation."""

from __future__ import annotations

import pytest

from leaderboard_fixtures import edit_results, tree_digest, write_submission
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.leaderboard import add_submission

WHERE = "FineGrainHiddenTREC.json [default]"


@pytest.fixture(autouse=True)
def _no_local_data(monkeypatch):
    monkeypatch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    monkeypatch.delenv("MTEB_FINEGRAIN_TASK_PATH", raising=False)


def _record(s, stage, layer, metric="probe_accuracy", shots=8, level="fine"):
    return next(r for r in s["records"] if (r["stage"], r["level"], r["layer"], r["metric"], r["shots"]) == (stage, level, layer, metric, shots))


def _widen_ci95(s):
    record = _record(s, "coarse_tuned", 2)
    record["ci95"] = [round(record["ci95"][0] - 0.01, 6), record["ci95"][1]]


def _ci95_excludes_value(s):
    record = _record(s, "pretrained", 1, shots=2, level="coarse")
    record["ci95"] = [record["value"] + 0.01, record["value"] + 0.02]


def _no_predictions(s):
    del s["predictions"]


def _predictions_lack_layer_3(s):
    del s["predictions"]["stages"]["pretrained"]["3"]


def _one_run_too_few(s):
    s["predictions"]["stages"]["coarse_tuned"]["5"].pop()


def _predictions_of_other_seeds(s):
    s["predictions"]["seeds"] = [1, 2, 3, 4, 5]


def _no_ci95_anywhere(s):
    for record in s["records"]:
        record.pop("ci95", None)


def _no_main_ci95(s):
    del s["main_score_ci95"]


def _no_runs_std(s):
    _record(s, "coarse_tuned", 0, "v_measure", None).pop("runs_std")


def _runs_std_on_pretrained(s):
    _record(s, "pretrained", 0, "v_measure", None)["runs_std"] = 0.01


def _ci95_on_clustering(s):
    _record(s, "pretrained", 0, "ari", None)["ci95"] = [0.1, 0.2]


def _run_score_tampered(s):
    s["coarse_training_runs"]["main_score"][1] += 0.01


def _runs_of_other_seeds(s):
    s["coarse_training_runs"]["seeds"] = [1, 2, 3]


def _no_representation(s):
    del s["representation"]


def _cka_lacks_layer_4(s):
    del s["representation"]["coarse_tuned"]["cka_to_pretrained"]["4"]


def _cka_out_of_range(s):
    s["representation"]["coarse_tuned"]["cka_to_pretrained"]["2"] = 1.5


def _no_validation_rank(s):
    del s["representation"]["pretrained"]["effective_rank"]["validation"]


def _entropy_not_finite(s):
    s["representation"]["coarse_tuned"]["dataset_entropy"]["evaluation"]["6"] = None


def _ami_below_minus_one(s):
    _record(s, "pretrained", 0, "ami", None)["value"] = -1.3


def _selection_seeds(s):
    s["selection"]["validation_seeds"] = s["selection"]["scoring_seeds"]


def _scoring_seed_choice_elsewhere(s):
    chosen = s["selection"]["selected_layer_with_scoring_seeds"]
    chosen["coarse_tuned"] = (chosen["coarse_tuned"] + 1) % 7


def _no_interval_description(s):
    del s["interval"]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_widen_ci95, f"{WHERE}: coarse_tuned layer 2 probe_accuracy@8: ci95 ["),
        (_ci95_excludes_value, "(pretrained, level coarse, layer 1, probe_accuracy, 2 shots): ci95 ["),
        (_no_predictions, f"{WHERE}: predictions are missing: protocol 4.0 stores every probe seed's predictions"),
        (_predictions_lack_layer_3, f"{WHERE}: predictions.stages.pretrained lacks layer(s) [3]"),
        (_one_run_too_few, "predictions.stages.coarse_tuned layer(s) [5] hold 2 matrices, expected 3"),
        (_predictions_of_other_seeds, "predictions.seeds are [1, 2, 3, 4, 5], the scoring probe seeds (settings.probe_seed_list) are [42, 43, 44, 45, 46]"),
        (_no_ci95_anywhere, "probe_accuracy, 1 shots): ci95 is missing (protocol 4.0 gives every probe_accuracy record its 95% interval"),
        (_no_main_ci95, f"{WHERE}: main_score_ci95 is missing"),
        (_no_runs_std, "(coarse_tuned, level fine, layer 0, v_measure): runs_std is missing"),
        (_runs_std_on_pretrained, "has a runs_std, but the pretrained stage has no coarse-training runs"),
        (_ci95_on_clustering, "has a ci95, but a clustering score has no interval"),
        (_run_score_tampered, "coarse_training_runs.main_score[1] is"),
        (_runs_of_other_seeds, "coarse_training_runs.seeds is [1, 2, 3], settings.coarse_seed_list is [42, 43, 44]"),
        (_no_representation, f"{WHERE}: representation is missing"),
        (_cka_lacks_layer_4, f"{WHERE}: representation.coarse_tuned.cka_to_pretrained lacks layer(s) 4"),
        (_cka_out_of_range, "representation.coarse_tuned.cka_to_pretrained: a CKA must be in [-1, 1] (null where undefined), got 2: 1.5"),
        (_no_validation_rank, "representation.pretrained.effective_rank.validation is missing"),
        (_entropy_not_finite, "representation.coarse_tuned.dataset_entropy.evaluation: values must be finite numbers, got 6: None"),
        (_ami_below_minus_one, "value -1.3 is out of range [-1, 1]"),
        (_selection_seeds, "selection.validation_seeds is [42, 43, 44, 45, 46], settings.validation_probe_seed_list is [47, 48, 49, 50, 51]"),
        (_no_interval_description, f"{WHERE}: interval must describe the intervals"),
        (_scoring_seed_choice_elsewhere, "differs from the coarse_tuned probe accuracy"),
    ],
)
def test_evidence_that_does_not_hold_is_refused(tmp_path, tamper, message):
    board = tmp_path / "board"
    submission_dir = write_submission(tmp_path / "sub", cards=("TREC",))
    edit_results(submission_dir, tamper)
    with pytest.raises(FineGrainError) as info:
        add_submission(submission_dir, board)
    assert message in str(info.value)
    assert tree_digest(board) == "absent"


def test_a_tampered_interval_gets_one_message_naming_file_stage_layer_and_both_intervals(tmp_path):
    submission_dir = write_submission(tmp_path / "sub", cards=("TREC",))
    edit_results(submission_dir, _widen_ci95)
    with pytest.raises(FineGrainError) as info:
        add_submission(submission_dir, tmp_path / "board")
    lines = str(info.value).splitlines()
    assert "1 problem(s)" in lines[0]
    assert lines[1].startswith(f"  results/org__model-a/rev-a/{WHERE}: coarse_tuned layer 2 probe_accuracy@8: ci95 [") and "but the stored predictions give [" in lines[1]


def test_missing_intervals_are_reported_once_not_per_record(tmp_path):
    submission_dir = write_submission(tmp_path / "sub", cards=("TREC",), n_layers=3)
    edit_results(submission_dir, _no_ci95_anywhere)
    with pytest.raises(FineGrainError) as info:
        add_submission(submission_dir, tmp_path / "board")
    lines = str(info.value).splitlines()
    # 2 stages x 3 layers x 2 levels x 5 shot counts = 60 records, counted in one line
    assert "1 problem(s)" in lines[0] and lines[1].endswith("(and 59 more record(s) of the kind)")


def test_undefined_cka_is_null_and_accepted(tmp_path):
    """CKA of a layer whose embedding is the same for every text is undefined: the runner writes null."""
    def undefined(s):
        s["representation"]["coarse_tuned"]["cka_to_pretrained"]["0"] = None
        s["representation"]["pretrained"]["cka_between_layers"]["matrix"][0][1] = None

    submission_dir = write_submission(tmp_path / "sub", cards=("TREC",), n_layers=3)
    edit_results(submission_dir, undefined)
    add_submission(submission_dir, tmp_path / "board")
    edit_results(submission_dir, lambda s: s["representation"]["pretrained"]["cka_between_layers"]["matrix"][1].__setitem__(1, 1.2))
    with pytest.raises(FineGrainError, match=r"representation.pretrained.cka_between_layers.matrix: every CKA must be in \[-1, 1\]"):
        add_submission(submission_dir, tmp_path / "board2")


def test_negative_ami_is_a_score(tmp_path):
    submission_dir = write_submission(tmp_path / "sub", cards=("TREC",), n_layers=3)
    edit_results(submission_dir, lambda s: (_record(s, "pretrained", 0, "ami", None).update(value=-0.05),
                                            _record(s, "pretrained", 1, "within_coarse_ami", None).update(value=-0.02)))
    add_submission(submission_dir, tmp_path / "board")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_no_predictions, "predictions are missing"),
        (lambda s: _record(s, "pretrained", -1).update(ci95=[0.0, 1.0]), "pretrained layer -1 probe_accuracy@8: ci95 [0.0, 1.0] but the stored predictions give ["),
        (lambda s: s["predictions"]["stages"].update(coarse_tuned=s["predictions"]["stages"]["pretrained"]),
         "predictions.stages holds stage 'coarse_tuned', which this model does not have"),
        (lambda s: s.update(coarse_training_runs={"seeds": [42]}), "a model without hidden states has no coarse-training runs"),
        (lambda s: s["representation"]["pretrained"]["dataset_entropy"]["evaluation"].pop("-1"), "dataset_entropy.evaluation lacks layer(s) -1"),
    ],
)
def test_model_without_hidden_states_needs_its_evidence_too(tmp_path, tamper, message):
    control = write_submission(tmp_path / "control", model="org/control", cards=("TREC",), hidden_states=False)
    add_submission(control, tmp_path / "ok")  # as written, it is accepted
    edit_results(control, tamper)
    with pytest.raises(FineGrainError) as info:
        add_submission(control, tmp_path / "board")
    assert message in str(info.value)
