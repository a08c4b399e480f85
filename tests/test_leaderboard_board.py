"""The generated board under protocol 4.0: main scores with intervals, rank intervals among the
entries that pair (and why the others have none), ``leaderboard.csv``'s interval columns, and the
page data's interval bands, drift and label-free signals."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from board_fixtures import add_entry
from mteb_finegrain.leaderboard import build, summary as summary_module
from mteb_finegrain.leaderboard.build import CSV_COLUMNS, MEAN_TASK, build_leaderboard, render_csv
from mteb_finegrain.leaderboard.summary import summarize

STRONG, TIE_A, TIE_B, CONTROL = "org/strong", "org/tie-a", "org/tie-b", "org/tfidf"
TREC_ONLY, OTHER_SPLIT, OLD = "solo/trec-only", "org/other-split", "org/old-protocol"
INTERVAL = r"0\.\d{4} \[0\.\d{4}, 0\.\d{4}\]"


def _as_3_1(scores: dict) -> None:
    """A result as protocol 3.1 wrote it: no predictions, intervals, runs or representation."""
    scores["protocol_version"] = "3.1"
    for key in ("predictions", "main_score_ci95", "interval", "coarse_training_runs", "selection", "representation"):
        scores.pop(key)
    for record in scores["records"]:
        record.pop("ci95", None)
        record.pop("runs_std", None)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board") / "leaderboard"
    add_entry(root, STRONG, skill=1.6)
    add_entry(root, TIE_A, skill=0.2)
    add_entry(root, TIE_B, skill=0.2, n_layers=13)
    add_entry(root, CONTROL, skill=-1.2, hidden_states=False, n_parameters=None)
    add_entry(root, TREC_ONLY, skill=0.0, cards=("TREC",))
    add_entry(root, OTHER_SPLIT, skill=-0.5, split_sha256="sha256:" + "0" * 64)
    add_entry(root, OLD, skill=-0.3, change=_as_3_1)
    build_leaderboard(root)
    return root


@pytest.fixture(scope="module")
def summary(board):
    return summarize(board)


def _model(summary: dict, name: str) -> dict:
    return next(m for m in summary["models"] if m["model"] == name)


def test_a_clear_winner_ranks_first_and_near_ties_share_ranks(summary):
    strong, tie_a, tie_b, control = (_model(summary, name) for name in (STRONG, TIE_A, TIE_B, CONTROL))
    assert strong["rank_interval"] == [1, 1] and strong["rank_text"] == "1"
    for tie in (tie_a, tie_b):
        assert tie["rank_interval"][0] == 2 and tie["rank_interval"][1] >= 3
        assert tie["rank_text"] == f"{tie['rank_interval'][0]}\u2013{tie['rank_interval'][1]}"
    assert control["rank_interval"] == [4, 4]  # among the 4 entries that pair
    assert summary["ranking"]["ranked"] == 4 and summary["ranking"]["n_boot"] == 10_000


def test_entries_that_do_not_pair_get_no_rank_interval_and_a_reason(summary):
    reasons = {item["model"]: item["reason"] for item in summary["ranking"]["unranked"]}
    assert set(reasons) == {TREC_ONLY, OTHER_SPLIT, OLD}
    assert reasons[TREC_ONLY] == "not run on every task (no CLINC150)"
    assert reasons[OTHER_SPLIT] == "its CLINC150 predictions do not pair with the ranked entries' (other evaluation split (split_sha256))"
    assert "no stored predictions (protocol 3.1 result)" in reasons[OLD]
    for name in reasons:
        assert _model(summary, name)["rank_interval"] is None and _model(summary, name)["rank_text"] == "\u2014"


def test_main_score_intervals(summary):
    strong = _model(summary, STRONG)
    low, high = strong["main_ci95"]
    assert low < strong["main"] < high
    tasks = strong["tasks"].values()
    assert all(t["main_ci95"][0] < t["main"] < t["main_ci95"][1] for t in tasks)
    widths = [t["main_ci95"][1] - t["main_ci95"][0] for t in tasks]
    assert high - low < max(widths)  # two independent tasks average out
    trec_only = _model(summary, TREC_ONLY)  # one task: the main score's interval is the task's
    assert trec_only["main_ci95"] == trec_only["tasks"]["TREC"]["main_ci95"]
    assert _model(summary, OLD)["main_ci95"] is None


def test_run_variance_of_coarse_tuned_models_enters_the_ranking(board, summary, monkeypatch):
    seen = {}

    def recording(correct, **options):
        seen.update(options["run_variance"])
        return bootstrap(correct, **options)

    bootstrap = summary_module.bootstrap_scores
    monkeypatch.setattr(summary_module, "bootstrap_scores", recording)
    summarize(board, n_boot=200)
    for task, found in _model(summary, STRONG)["tasks"].items():
        assert found["runs_std"] > 0 and seen["org__strong"][task] == pytest.approx(found["runs_std"] ** 2 / 3, rel=1e-4)
    assert set(seen["org__tfidf"].values()) == {0.0}  # pretrained only: no run


def test_the_readme_ranking_has_score_and_rank_intervals(board):
    readme = (board / "README.md").read_text(encoding="utf-8")
    header = next(line for line in readme.splitlines() if line.startswith("| Rank |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns[5:7] == ["Main score", "Rank interval"]
    # Ranked rows start with their rank; an entry on fewer tasks has "—" there.
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in readme.splitlines() if re.match(r"\| (\d+|—) \|", line))}
    assert rows[TREC_ONLY][0] == "—"
    assert rows[STRONG][6] == "1" and rows[TREC_ONLY][6] == "—"
    assert re.fullmatch(INTERVAL, rows[STRONG][5]) and re.fullmatch(INTERVAL, rows[STRONG][7])
    assert rows[TIE_A][6].startswith("2–") and rows[TIE_B][6].startswith("2–")
    assert re.fullmatch(r"0\.\d{4} ³", rows[OLD][5])  # no interval without stored predictions
    assert "No rank interval for solo/trec-only: not run on every task (no CLINC150)." in readme
    assert "Mogstad, Romano, Shaikh" in readme and "seed 0" in readme


def test_csv_has_interval_columns(board, summary):
    rows = list(csv.DictReader(io.StringIO((board / "leaderboard.csv").read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == CSV_COLUMNS and CSV_COLUMNS[-2:] == ("ci95_low", "ci95_high")
    probes = [r for r in rows if r["metric"] == "probe_accuracy" and r["model"] != OLD]
    assert probes and all(float(r["ci95_low"]) <= float(r["value"]) <= float(r["ci95_high"]) for r in probes)
    assert all(r["ci95_low"] == r["ci95_high"] == "" for r in rows if r["metric"] in ("v_measure", "ami", "probe_f1_macro"))
    assert all(r["ci95_low"] == "" for r in rows if r["model"] == OLD and r["metric"] != "main_score")
    mains = {(r["model"], r["task"]): r for r in rows if r["metric"] == "main_score"}
    strong = _model(summary, STRONG)
    mean = mains[(STRONG, MEAN_TASK)]
    assert (float(mean["value"]), [float(mean["ci95_low"]), float(mean["ci95_high"])]) == (strong["main"], strong["main_ci95"])
    trec = mains[(STRONG, "FineGrainHiddenTREC")]
    assert [float(trec["ci95_low"]), float(trec["ci95_high"])] == pytest.approx(strong["tasks"]["TREC"]["main_ci95"], abs=1e-6)
    assert trec["stage"] == "coarse_tuned" and trec["layer"] == str(strong["tasks"]["TREC"]["best_layer"]) and trec["shots"] == "8"
    assert mains[(OLD, MEAN_TASK)]["ci95_low"] == "" and len([k for k in mains if k[1] == MEAN_TASK]) == 7


def _page_data(board) -> dict:
    text = (board / "index.html").read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="leaderboard-data">(.*?)</script>', text, re.S).group(1))


def test_page_data_holds_bands_drift_and_signals(board):
    data = _page_data(board)
    tie_b = next(m for m in data["models"] if m["model"] == TIE_B)
    curves = tie_b["tasks"]["TREC"]["curves"]
    for stage in ("pretrained", "coarse_tuned"):
        bands = curves[stage]["probe_accuracy_ci95"]
        assert len(bands) == 13 and all(low <= y <= high for (low, high), y in zip(bands, curves[stage]["probe_accuracy"]))
    rep = tie_b["tasks"]["TREC"]["representation"]
    assert len(rep["coarse_tuned"]["cka_to_pretrained"]) == 13 and len(rep["coarse_tuned"]["cka_to_pretrained_permuted"]) == 13
    assert "cka_to_pretrained" not in rep["pretrained"]
    for stage in ("pretrained", "coarse_tuned"):
        heat = rep[stage]["cka_between_layers"]
        assert heat["layers"] == list(range(13)) and len(heat["matrix"]) == 13 and heat["matrix"][4][4] == 1.0
        assert len(rep[stage]["effective_rank"]) == len(rep[stage]["dataset_entropy"]) == 13
    control = next(m for m in data["models"] if m["model"] == CONTROL)["tasks"]["TREC"]["representation"]
    assert set(control) == {"pretrained"} and "cka_between_layers" not in control["pretrained"]
    old = next(m for m in data["models"] if m["model"] == OLD)["tasks"]["TREC"]
    assert old["representation"] == {} and "probe_accuracy_ci95" not in old["curves"]["coarse_tuned"]


def test_rebuilding_gives_the_same_bytes(board):
    before = {name: (board / name).read_bytes() for name in build.OUTPUTS}
    build_leaderboard(board)
    assert {name: (board / name).read_bytes() for name in build.OUTPUTS} == before


def test_a_lone_entry_ranks_first_and_an_empty_board_has_the_header_only(tmp_path):
    add_entry(tmp_path / "one", STRONG, cards=("TREC",))
    alone = summarize(tmp_path / "one")
    assert alone["models"][0]["rank_text"] == "1" and alone["ranking"]["unranked"] == []
    empty = summarize(tmp_path / "empty")
    assert empty["models"] == [] and empty["ranking"]["ranked"] == 0
    assert render_csv(tmp_path / "empty", empty) == ",".join(CSV_COLUMNS) + "\n"
