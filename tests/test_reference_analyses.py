"""The reference analyses of leaderboard/reference on tiny synthetic protocol-4.0 results:
``label_free_table.py`` (can a label-free signal choose the layer?) and ``selection_effect.py``
(what choosing the layer with disjoint probe seeds changed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from board_fixtures import add_entry
from mteb_finegrain.errors import FineGrainError

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "leaderboard" / "reference" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


label_free_table = _script("label_free_table")
selection_effect = _script("selection_effect")


def _peaked_rank(scores: dict) -> None:
    """Make effective_rank on the validation texts peak at each stage's selected layer."""
    for stage, block in scores["representation"].items():
        chosen = scores["selected_layer"][stage]
        block["effective_rank"]["validation"] = {layer: 10.0 - abs(int(layer) - chosen) for layer in block["effective_rank"]["validation"]}


def _record(scores: dict, stage: str, layer: int) -> float:
    return next(r["value"] for r in scores["records"]
                if (r["stage"], r["level"], r["layer"], r["metric"], r["shots"]) == (stage, "fine", layer, "probe_accuracy", 8))


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """Two 7- and 5-layer models on two cards, and a one-layer control; effective_rank peaks at the chosen layer."""
    root = tmp_path_factory.mktemp("board")
    add_entry(root, "org/a", skill=0.2, change=_peaked_rank)
    add_entry(root, "org/b", skill=-0.3, n_layers=5, change=_peaked_rank)
    add_entry(root, "mteb-finegrain/tfidf-svd", hidden_states=False)
    return root / "results"


def _rows(text: str, first_cell: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line.startswith(f"| {first_cell}")]


# label_free_table.py


def test_signal_table_rows(board):
    text = label_free_table.render([board])
    summary = {row[0]: row for row in _rows(text, "") if row[1] in ("maximise", "minimise", "fixed")}
    assert list(summary) == ["effective_rank", "dataset_entropy", "last layer", "second-to-last layer", "middle layer"]
    # effective_rank peaks at the chosen layer: maximised, it always picks it and loses nothing
    rank = summary["effective_rank"]
    assert rank[1] == "maximise" and rank[3] == "1.000" and rank[4] == "0.000" and rank[5] == "0.000" and rank[7] == "8"
    # the fixtures' dataset entropy grows with the layer: it picks the last layer, like the fixed rule
    assert summary["dataset_entropy"][1] == "maximise"
    assert summary["dataset_entropy"][3:] == summary["last layer"][3:]
    assert summary["last layer"][2] == "–"


def test_signal_table_matches_signal_choice(board):
    from mteb_finegrain.scoring.signal_choice import compare_layer_rules, format_table

    results = label_free_table.load_4_0([board])
    entries, left_out, notes = label_free_table.collect(results)
    assert len(entries) == 8 and notes == []
    assert {(model, stage) for model, _, stage, _ in left_out} == {("mteb-finegrain/tfidf-svd", "pretrained")}
    assert format_table(compare_layer_rules(entries)) in label_free_table.render([board])
    # the entry holds what the result holds: validation signals, validation and evaluation accuracy per layer
    result = next(r for r in results if r.model == "org/b" and r.task == "FineGrainHiddenTREC")
    entry = next(e for e in entries if e.key == ("org/b", "FineGrainHiddenTREC", "coarse_tuned"))
    scores = result.scores
    assert entry.layers == (0, 1, 2, 3, 4)
    assert entry.validation_accuracy == tuple(scores["validation_probe_accuracy"]["coarse_tuned"][str(x)] for x in range(5))
    assert entry.test_accuracy == tuple(_record(scores, "coarse_tuned", x) for x in range(5))
    assert entry.signals["dataset_entropy"] == tuple(scores["representation"]["coarse_tuned"]["dataset_entropy"]["validation"][str(x)] for x in range(5))
    assert entry.layers[entry.chosen_position()] == scores["selected_layer"]["coarse_tuned"]


def test_picks_table_and_left_out(board):
    text = label_free_table.render([board])
    results = label_free_table.load_4_0([board])
    scores = next(r for r in results if r.model == "org/a" and r.task == "FineGrainHiddenTREC").scores
    chosen = scores["selected_layer"]["coarse_tuned"]
    (row,) = [r for r in _rows(text, "org/a") if r[1] == "FineGrainHiddenTREC" and r[2] == "coarse_tuned"]
    # chosen, effective_rank, dataset_entropy, last, second-to-last, middle (7 layers: 0..6)
    assert row[3] == str(chosen) and row[4] == f"{chosen}*"
    assert row[5].rstrip("*") == row[6].rstrip("*") == "6" and row[7].rstrip("*") == "5" and row[8].rstrip("*") == "3"
    assert "- mteb-finegrain/tfidf-svd on FineGrainHiddenTREC, pretrained: 1 layer: nothing to choose" in text


def test_signal_table_one_stage(board):
    text = label_free_table.render([board], stage="pretrained")
    assert "over 4 (model, task, stage) entries" in text  # org/a and org/b on two cards; the control left out
    assert not [row for row in _rows(text, "org/") if row[2] == "coarse_tuned"]


def test_signal_table_refuses_other_protocols_and_duplicates(tmp_path, board, capsys):
    old = tmp_path / "old"
    add_entry(old, "org/c", change=lambda scores: scores.update(protocol_version="3.1"))
    with pytest.raises(FineGrainError, match="protocol 3.1"):
        label_free_table.render([old / "results"])
    with pytest.raises(FineGrainError, match="appears twice"):
        label_free_table.render([board, board])
    assert label_free_table.main([str(old / "results")]) == 2
    assert capsys.readouterr().err.startswith("label_free_table.py: error: ")


def test_signal_table_skips_a_null_signal(tmp_path):
    def null(scores):
        scores["representation"]["pretrained"]["dataset_entropy"]["validation"]["2"] = None

    add_entry(tmp_path, "org/d", n_layers=4, cards=("TREC",), change=null)
    text = label_free_table.render([tmp_path / "results"])
    assert "over 1 (model, task, stage) entries" in text
    assert "- org/d on FineGrainHiddenTREC, pretrained: dataset_entropy (validation) has no value at layer(s) [2]" in text


# selection_effect.py


@pytest.fixture(scope="module")
def changed_board(tmp_path_factory) -> tuple[Path, dict]:
    """The board of ``board`` plus a model whose scoring seeds would have chosen another layer on TREC."""
    root = tmp_path_factory.mktemp("changed")
    seen = {}

    def other_layer(scores):
        if scores["card"]["name"] != "TREC":
            return
        chosen = scores["selected_layer"]["coarse_tuned"]
        other = chosen - 1
        scores["selection"]["selected_layer_with_scoring_seeds"] = {"pretrained": scores["selected_layer"]["pretrained"], "coarse_tuned": other}
        scores["selection"]["main_score_with_scoring_seeds"] = _record(scores, "coarse_tuned", other)
        seen.update(chosen=chosen, other=other, main=scores["selected_layer_probe_accuracy"], with_scoring=_record(scores, "coarse_tuned", other))

    add_entry(root, "org/a", skill=0.2)
    add_entry(root, "org/e", skill=0.1, change=other_layer)
    add_entry(root, "mteb-finegrain/tfidf-svd", hidden_states=False)
    return root / "results", seen


def test_selection_table(changed_board):
    folder, seen = changed_board
    text = selection_effect.render([folder])
    header = text.splitlines()[0]
    assert "layer (validation seeds 47-51)" in header and "layer (scoring seeds 42-46)" in header
    (row,) = [r for r in _rows(text, "org/e") if r[1] == "FineGrainHiddenTREC"]
    assert row[2:6] == ["coarse_tuned", str(seen["chosen"]), str(seen["other"]), f"{seen['main']:.4f}"]
    assert row[6] == f"{seen['with_scoring']:.4f}"
    assert row[7] == f"{seen['with_scoring'] - seen['main']:+.4f}"
    assert row[8].startswith("pretrained ")
    for unchanged in _rows(text, "org/a"):
        assert unchanged[3] == unchanged[4] and unchanged[5] == unchanged[6] and unchanged[7] == "+0.0000"
    controls = _rows(text, "mteb-finegrain/tfidf-svd")
    assert len(controls) == 2 and all(r[2] == "pretrained (one layer)" and r[8] == "–" for r in controls)


def test_selection_summary(changed_board):
    folder, seen = changed_board
    summary = selection_effect.render([folder]).rstrip().splitlines()[-1]
    difference = seen["with_scoring"] - seen["main"]
    assert summary.startswith("layer changed in 1 of 4 (model, task) main-stage choices and in 1 of 8 stage choices;")
    assert f"mean {difference / 4:+.4f} over all 4" in summary
    assert f"{difference:+.4f} over the 1 changed, largest {difference:+.4f} (org/e on FineGrainHiddenTREC)" in summary


def test_selection_summary_without_changes(board):
    summary = selection_effect.render([board]).rstrip().splitlines()[-1]
    assert summary.startswith("layer changed in 0 of 4 ") and summary.endswith("(the same layer gives the same main score)")


def test_selection_refuses_a_result_without_selection(tmp_path, capsys):
    add_entry(tmp_path, "org/f", cards=("TREC",), change=lambda scores: scores.pop("selection"))
    with pytest.raises(FineGrainError, match="no selection block"):
        selection_effect.render([tmp_path / "results"])
    assert selection_effect.main([str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err.startswith("selection_effect.py: error: ")


def test_scripts_run_from_the_command_line(board):
    for name in ("label_free_table", "selection_effect"):
        done = subprocess.run([sys.executable, str(REPO / "leaderboard" / "reference" / f"{name}.py"), str(board)],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(("Label-free", "| model"))
