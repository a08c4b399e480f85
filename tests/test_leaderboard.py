"""The leaderboard: validating and adding results, building the pages, citing a model."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from leaderboard_fixtures import XSS_NAME, edit_results, fake_hash, tree_digest, write_submission
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import PROTOCOL_VERSION
from mteb_finegrain.leaderboard import add_submission, build_leaderboard, cite_model
from mteb_finegrain.leaderboard.build import CSV_COLUMNS
from mteb_finegrain.leaderboard.cli import main as leaderboard_main
from mteb_finegrain.leaderboard.html import json_for_script

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_local_data(monkeypatch):
    # Synthetic results carry made-up data hashes: compare them only in the test that sets this.
    monkeypatch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    monkeypatch.delenv("MTEB_FINEGRAIN_TASK_PATH", raising=False)


@pytest.fixture
def board(tmp_path) -> Path:
    return tmp_path / "leaderboard"


def test_valid_submission_is_copied_into_the_leaderboard(tmp_path, board):
    submission_dir = write_submission(tmp_path / "sub")
    submission, entry = add_submission(submission_dir, board)
    assert (submission.model, submission.revision, submission.cards) == ("org/model-a", "rev-a", ["CLINC150", "TREC"])
    assert entry == board / "results" / "org__model-a"
    assert sorted(p.name for p in entry.iterdir()) == ["FineGrainHiddenCLINC150.json", "FineGrainHiddenTREC.json", "model_meta.json"]
    source = submission_dir / "results" / "org__model-a" / "rev-a" / "FineGrainHiddenTREC.json"
    assert (entry / "FineGrainHiddenTREC.json").read_bytes() == source.read_bytes()
    assert [p.name for p in (board / "results").iterdir()] == ["org__model-a"]  # no staging left over


def test_aggregate_task_with_card_subsets_is_accepted(tmp_path, board):
    add_submission(write_submission(tmp_path / "sub", aggregate=True), board)
    assert (board / "results" / "org__model-a" / "FineGrainHidden.json").is_file()


def _protocol_09(s):
    s["protocol_version"] = "0.9"


def _drop_layer_3(s):
    s["records"] = [r for r in s["records"] if not (r["stage"] == "pretrained" and r["layer"] == 3)]


def _score_17(s):
    next(r for r in s["records"] if r["metric"] == "v_measure")["value"] = 1.7


def _drop_coarse_tuned(s):
    s["records"] = [r for r in s["records"] if r["stage"] != "coarse_tuned"]


def _drop_one_shot(s):
    s["records"] = [r for r in s["records"] if not (r["metric"] == "probe_f1_macro" and r["shots"] == 16 and r["layer"] == 2)]


def _bad_hash(s):
    s["card"]["data"] = "md5:1234"


def _pooling_cls(s):
    s["settings"]["pooling"] = "cls"


def _no_revision(s):
    s["model"]["revision"] = None


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_protocol_09, f"protocol_version is '0.9', the leaderboard accepts protocol {PROTOCOL_VERSION}"),
        (_drop_layer_3, "stage pretrained, layer 3 is missing"),
        (_score_17, "value 1.7 is out of range [0, 1]"),
        (_drop_coarse_tuned, "stage coarse_tuned is missing"),
        (_drop_one_shot, "stage pretrained, layer 2 lacks metric(s) coarse:probe_f1_macro@16, fine:probe_f1_macro@16"),
        (_bad_hash, "card.data 'md5:1234' is not a data hash"),
        (_pooling_cls, f'settings.pooling is "cls" but protocol {PROTOCOL_VERSION} uses "mean"'),
        (_no_revision, "the results beside it name 'org/model-a' revision None"),
    ],
)
def test_tampered_submission_is_rejected_and_changes_nothing(tmp_path, board, tamper, message):
    add_submission(write_submission(tmp_path / "first", model="org/other"), board)
    before = tree_digest(board)
    submission_dir = write_submission(tmp_path / "sub")
    edit_results(submission_dir, tamper)
    with pytest.raises(FineGrainError) as info:
        add_submission(submission_dir, board)
    assert message in str(info.value)
    assert "FineGrainHiddenTREC.json [default]" in str(info.value) or "model_meta.json" in str(info.value)
    assert tree_digest(board) == before


def test_every_problem_is_listed_one_per_line(tmp_path, board):
    submission_dir = write_submission(tmp_path / "sub")
    edit_results(submission_dir, lambda s: (_protocol_09(s), _score_17(s)))
    with pytest.raises(FineGrainError) as info:
        add_submission(submission_dir, board)
    lines = str(info.value).splitlines()
    assert "4 problem(s)" in lines[0]  # two problems in each of the two result files
    assert sum("protocol_version" in line for line in lines) == 2 and sum("1.7" in line for line in lines) == 2
    assert tree_digest(board) == "absent"


def test_missing_model_meta_and_unknown_task_are_rejected(tmp_path, board):
    submission_dir = write_submission(tmp_path / "sub", cards=("TREC",))
    folder = submission_dir / "results" / "org__model-a" / "rev-a"
    (folder / "model_meta.json").unlink()
    (folder / "FineGrainHiddenTREC.json").rename(folder / "FineGrainHiddenNope.json")
    data = json.loads((folder / "FineGrainHiddenNope.json").read_text())
    data["task_name"] = "FineGrainHiddenNope"
    (folder / "FineGrainHiddenNope.json").write_text(json.dumps(data))
    with pytest.raises(FineGrainError) as info:
        add_submission(submission_dir, board)
    assert "task 'FineGrainHiddenNope' is not a FineGrainHidden task of a known card" in str(info.value)
    assert "model_meta.json: missing" in str(info.value)


def test_same_model_needs_replace_and_other_entries_are_kept(tmp_path, board):
    add_submission(write_submission(tmp_path / "a"), board)
    add_submission(write_submission(tmp_path / "b", model="org/model-b"), board)
    before = tree_digest(board)
    newer = write_submission(tmp_path / "a2", revision="rev-2", quality=0.7)
    with pytest.raises(FineGrainError, match="already in the leaderboard.*--replace"):
        add_submission(newer, board)
    assert tree_digest(board) == before
    other_b = tree_digest(board / "results" / "org__model-b")
    add_submission(newer, board, replace=True)
    meta = json.loads((board / "results" / "org__model-a" / "model_meta.json").read_text())
    assert meta["revision"] == "rev-2"
    assert tree_digest(board / "results" / "org__model-b") == other_b
    assert sorted(p.name for p in (board / "results").iterdir()) == ["org__model-a", "org__model-b"]


def test_another_models_entry_is_never_overwritten(tmp_path, board):
    add_submission(write_submission(tmp_path / "a", model="org/x y"), board)  # folder org__x_y
    before = tree_digest(board)
    with pytest.raises(FineGrainError, match="belongs to model 'org/x y'"):
        add_submission(write_submission(tmp_path / "b", model="org/x_y"), board, replace=True)
    assert tree_digest(board) == before


def test_interrupted_add_leaves_the_leaderboard_as_it_was(tmp_path, board, monkeypatch):
    add_submission(write_submission(tmp_path / "a"), board)
    before = tree_digest(board)
    real_replace, calls = os.replace, []

    def interrupted_second_rename(src, dst):
        # 1st rename moves the old entry aside, 2nd would move the new one in: interrupt there.
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted_second_rename)  # whichever module does the renames
    with pytest.raises(KeyboardInterrupt):
        add_submission(write_submission(tmp_path / "a2", revision="rev-2"), board, replace=True)
    assert len(calls) == 3  # the old entry was put back
    assert tree_digest(board) == before


def test_data_hash_is_compared_with_local_data(tmp_path, board, monkeypatch, tiny_data):
    from mteb_finegrain.cards import load_card
    from mteb_finegrain.data import load_card_data

    monkeypatch.setenv("MTEB_FINEGRAIN_DATA_DIR", str(tiny_data["data_dir"]))
    monkeypatch.setenv("MTEB_FINEGRAIN_TASK_PATH", str(tiny_data["card_dir"]))
    real = load_card_data(load_card(tiny_data["card"])).content_hash
    wrong = write_submission(tmp_path / "wrong", cards=("Tiny",), hashes={"Tiny": fake_hash("other data")})
    with pytest.raises(FineGrainError, match=f"hashes to {real} \\(different data\\)"):
        add_submission(wrong, board)
    submission, _ = add_submission(write_submission(tmp_path / "right", cards=("Tiny",), hashes={"Tiny": real}), board)
    assert submission.notes == []


def _three_models(tmp_path, board):
    add_submission(write_submission(tmp_path / "a", model="org/model-a", quality=0.55), board)
    add_submission(write_submission(tmp_path / "b", model=XSS_NAME, revision="<b>rev</b>", quality=0.7, n_layers=13, aggregate=True), board)
    add_submission(write_submission(tmp_path / "c", model="solo/trec-only", revision="c1", quality=0.4, cards=("TREC",), n_parameters=None), board)
    build_leaderboard(board)


def test_build_is_deterministic_and_escapes_names(tmp_path, board):
    _three_models(tmp_path, board)
    first = {name: (board / name).read_bytes() for name in ("README.md", "leaderboard.csv", "index.html")}
    build_leaderboard(board)
    assert {name: (board / name).read_bytes() for name in first} == first

    readme = first["README.md"].decode()
    assert "<img" not in readme and "&lt;img src=x onerror=alert(1)&gt;" in readme
    ranked = [line for line in readme.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[1] for line in ranked] == ["&lt;img src=x onerror=alert(1)&gt;", "org/model-a"]
    # A model run on fewer tasks gets no rank and comes after the ranked ones.
    unranked = [line for line in readme.splitlines() if line.startswith("| — | ")]
    assert [line.split(" | ")[1] for line in unranked] == ["solo/trec-only"]
    assert f"Protocol version **{PROTOCOL_VERSION}**" in readme
    for key in ("@software{mteb_finegrain", "anjum-krestel-2024-finetuning", "li-roth-2002-learning", "larson-etal-2019-evaluation"):
        assert key in readme

    page = first["index.html"].decode()
    assert "<img" not in page.split('<script type="application/json"')[1]
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page

    rows = [r for r in csv.DictReader(io.StringIO(first["leaderboard.csv"].decode())) if r["metric"] != "main_score"]
    assert list(rows[0])[:11] == ["model", "revision", "task", "subset", "stage", "level", "layer", "metric", "shots", "value", "std"]
    keys = {(r["model"], r["task"], r["subset"], r["stage"], r["level"], r["layer"], r["metric"], r["shots"]) for r in rows}
    # per stage and layer: coarse level 4 clustering scores, fine level 6 (with within-parent V-measure and AMI), 2 probe metrics x 5 shots per level
    assert len(keys) == len(rows) == (2 * 13 * 2 + 2 * 7 * 2 + 7 * 2) * (4 + 6 + 2 * 2 * 5)
    assert {r["model"] for r in rows} == {XSS_NAME, "org/model-a", "solo/trec-only"}


def test_json_for_script_cannot_close_the_script():
    text = json_for_script({"name": "</script><script>alert(1)</script>&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>&"}


def test_empty_leaderboard_builds(board):
    build_leaderboard(board)
    readme = (board / "README.md").read_text()
    assert "No entries yet" in readme and "## How to cite" in readme
    assert (board / "leaderboard.csv").read_text() == ",".join(CSV_COLUMNS) + "\n"


def test_committed_leaderboard_files_are_up_to_date(tmp_path):
    """The repository's leaderboard/ pages are what `leaderboard build` makes of its results."""
    work = tmp_path / "leaderboard"
    work.mkdir()
    if (REPO / "leaderboard" / "results").is_dir():
        shutil.copytree(REPO / "leaderboard" / "results", work / "results")
    build_leaderboard(work)
    for name in ("README.md", "leaderboard.csv", "index.html"):
        assert (work / name).read_bytes() == (REPO / "leaderboard" / name).read_bytes(), (
            f"leaderboard/{name} is stale: run `mteb-finegrain leaderboard build`"
        )


def test_cite_prints_the_models_scores(tmp_path, board):
    _three_models(tmp_path, board)
    line = cite_model(board, "org/model-a")
    assert line.startswith("org/model-a (rev rev-a): FineGrainHidden main score 0.")
    assert "; CLINC150 0." in line and ", TREC 0." in line and f"protocol {PROTOCOL_VERSION};" in line and line.count("(95% CI 0.") == 3
    assert "[cite: mteb_finegrain; anjum-krestel-2024-finetuning;" in line
    with_bibtex = cite_model(board, "solo/trec-only", bibtex=True)
    assert "@inproceedings{li-roth-2002-learning" in with_bibtex
    with pytest.raises(FineGrainError, match="not in the leaderboard.*models: <img src=x onerror=alert\\(1\\)>, org/model-a, solo/trec-only"):
        cite_model(board, "org/unknown")


def test_command_line(tmp_path, board, capsys):
    submission_dir = write_submission(tmp_path / "sub")
    assert leaderboard_main(["add", str(submission_dir), "--leaderboard-dir", str(board)]) == 0
    assert "added org/model-a" in capsys.readouterr().out
    assert leaderboard_main(["add", str(submission_dir), "--leaderboard-dir", str(board)]) == 2
    assert "--replace" in capsys.readouterr().err
    assert leaderboard_main(["add", str(submission_dir), "--replace", "--leaderboard-dir", str(board)]) == 0
    assert leaderboard_main(["build", "--leaderboard-dir", str(board)]) == 0
    assert "1 model(s)" in capsys.readouterr().out
    assert leaderboard_main(["cite", "org/model-a", "--leaderboard-dir", str(board)]) == 0
    assert capsys.readouterr().out.startswith("org/model-a (rev rev-a)")


def test_citation_cff_has_the_required_keys():
    import yaml

    from mteb_finegrain._version import __version__

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "type", "license"} <= set(cff)
    assert cff["version"] == __version__
    paper = cff["references"][0]
    assert [a["family-names"] for a in paper["authors"]] == ["Anjum", "Krestel"] and paper["year"] == 2024


# -- models without hidden states (the TF-IDF + SVD control, API models) -----------------------


def test_model_without_hidden_states_is_accepted_with_the_pretrained_stage_only(tmp_path, board):
    control = write_submission(tmp_path / "control", model="org/control", quality=0.3, hidden_states=False)
    submission, entry = add_submission(control, board)
    assert submission.cards == ["CLINC150", "TREC"]
    add_submission(write_submission(tmp_path / "a"), board)
    build_leaderboard(board)

    from mteb_finegrain.leaderboard.summary import summarize

    models = {m["model"]: m for m in summarize(board)["models"]}
    ctrl = models["org/control"]
    assert (ctrl["layers"], ctrl["hidden_states"], ctrl["delta"]) == ([-1], False, None)
    assert {t["best_layer"] for t in ctrl["tasks"].values()} == {-1}
    assert {t["main_stage"] for t in ctrl["tasks"].values()} == {"pretrained"}
    assert all(list(t["curves"]) == ["pretrained"] for t in ctrl["tasks"].values())
    assert models["org/model-a"]["hidden_states"] is True and models["org/model-a"]["delta"] is not None

    readme = (board / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "org/control" in line)
    assert "| final only |" in row and row.endswith("| -1 / -1 | n/a ² |")
    assert "² No hidden states" in readme
    rows = [r for r in csv.DictReader(io.StringIO((board / "leaderboard.csv").read_text())) if r["model"] == "org/control" and r["metric"] != "main_score"]
    assert {(r["stage"], r["layer"]) for r in rows} == {("pretrained", "-1")}
    assert cite_model(board, "org/control").startswith("org/control (rev rev-a): FineGrainHidden main score 0.")


def _no_hidden_but_every_layer(s):
    s["model"]["hidden_states"] = False


def _no_hidden_with_coarse_tuned(s):
    extra = [dict(r, stage="coarse_tuned") for r in s["records"]]
    s["records"] += extra


def _no_hidden_main_not_pretrained(s):
    s["main_score"] = round(s["main_score"] - 0.05, 6)


def _hidden_states_missing(s):
    del s["model"]["hidden_states"]


@pytest.mark.parametrize(
    ("hidden_states", "tamper", "message"),
    [
        (True, _no_hidden_but_every_layer, "model.layers must be [-1], got [0, 1, 2, 3, 4, 5, 6]"),
        (False, _no_hidden_with_coarse_tuned, "a model without hidden states has no coarse_tuned stage"),
        (False, _no_hidden_main_not_pretrained, "differs from the pretrained 8-shot probe accuracy"),
        (True, _hidden_states_missing, "FineGrainHiddenTREC.json [default]: model.hidden_states is missing"),
    ],
)
def test_stage_and_layer_rules_without_hidden_states(tmp_path, board, hidden_states, tamper, message):
    submission_dir = write_submission(tmp_path / "sub", hidden_states=hidden_states)
    edit_results(submission_dir, tamper)
    with pytest.raises(FineGrainError) as info:
        add_submission(submission_dir, board)
    assert message in str(info.value)
    assert tree_digest(board) == "absent"


def test_model_with_hidden_states_still_needs_both_stages(tmp_path, board):
    # A pretrained-only run of a transformer (--stages pretrained) is not a leaderboard entry.
    submission_dir = write_submission(tmp_path / "sub")
    edit_results(submission_dir, lambda s: (_drop_coarse_tuned(s), s["settings"].update(stages=["pretrained"])))
    with pytest.raises(FineGrainError) as info:
        add_submission(submission_dir, board)
    assert "stage coarse_tuned is missing" in str(info.value) and "settings.stages" in str(info.value)
    # Without hidden states, asking for the pretrained stage only is the same run and is accepted.
    control = write_submission(tmp_path / "control", hidden_states=False)
    edit_results(control, lambda s: s["settings"].update(stages=["pretrained"]))
    add_submission(control, board)


def test_absolute_paths_of_the_machine_are_refused(tmp_path, board):
    submission_dir = write_submission(tmp_path / "sub")
    (meta_file,) = submission_dir.rglob("model_meta.json")
    meta = json.loads(meta_file.read_text())
    meta["reference"] = "file:///root/.cache/models/x"
    meta_file.write_text(json.dumps(meta))
    edit_results(submission_dir, lambda s: s["card"].update(note="/home/alice/data/trec"))
    with pytest.raises(FineGrainError) as info:
        add_submission(submission_dir, board)
    message = str(info.value)
    assert "reference holds the absolute path 'file:///root/.cache/models/x'" in message
    assert "card.note holds the absolute path '/home/alice/data/trec'" in message
    assert not board.exists()


def test_pooling_that_contradicts_the_settings_is_refused(tmp_path, board):
    submission_dir = write_submission(tmp_path / "sub")
    edit_results(submission_dir, lambda s: s["model"].update(pooling="cls"))
    with pytest.raises(FineGrainError, match="model.pooling 'cls' contradicts settings.pooling 'mean'"):
        add_submission(submission_dir, board)
