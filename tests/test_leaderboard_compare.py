"""``leaderboard compare`` (paired comparison of two accepted models) and ``leaderboard cite``'s intervals."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from leaderboard_fixtures import probe_target, write_submission
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.leaderboard import add_submission, cite_model
from mteb_finegrain.leaderboard.cli import main as leaderboard_main
from mteb_finegrain.leaderboard.compare import compare_models, main_scores
from mteb_finegrain.leaderboard.store import find_entry
from mteb_finegrain.protocol import PROTOCOL_VERSION
from mteb_finegrain.uncertainty.paired import compare

SUMMARY_LINE = re.compile(r"^mean_difference=[+-]\d\.\d{4} ci95=\[[+-]\d\.\d{4},[+-]\d\.\d{4}\] p=\S+$")
QUALITY = {"org/strong": 0.7, "org/weak": 0.55, "org/control": 0.3, "solo/trec-only": 0.5}
N_LAYERS = 4


@pytest.fixture(autouse=True)
def _no_local_data(monkeypatch):
    monkeypatch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    monkeypatch.delenv("MTEB_FINEGRAIN_TASK_PATH", raising=False)


@pytest.fixture(scope="module")
def shared_board(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    board = root / "leaderboard"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
        patch.delenv("MTEB_FINEGRAIN_TASK_PATH", raising=False)
        for model, quality in QUALITY.items():
            cards = ("TREC",) if model.startswith("solo/") else ("CLINC150", "TREC")
            submission = write_submission(root / model.replace("/", "_"), model=model, quality=quality, cards=cards,
                                          n_layers=N_LAYERS, hidden_states=model != "org/control")
            add_submission(submission, board)
    return board


@pytest.fixture
def board(shared_board, tmp_path) -> Path:
    """A copy of the shared board that a test may edit."""
    return Path(shutil.copytree(shared_board, tmp_path / "leaderboard"))


def _edit_stored(board: Path, model: str, card: str, change) -> None:
    (path,) = (board / "results" / model.replace("/", "__")).glob(f"FineGrainHidden{card}.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data["scores"]["test"][0])
    path.write_text(json.dumps(data), encoding="utf-8")


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = leaderboard_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_interval_contains_the_true_difference(shared_board):
    """The fixtures draw every cell right with a known probability: the mean difference's truth is known."""
    result = compare_models(shared_board, "org/strong", "org/weak")
    truths = []
    for task in ("CLINC150", "TREC"):
        a, b = result.scores_a[task], result.scores_b[task]
        assert (a.stage, b.stage) == ("coarse_tuned", "coarse_tuned")
        truths.append(probe_target(0.7, a.stage, 1, 2, a.layer, N_LAYERS, 8) - probe_target(0.55, b.stage, 1, 2, b.layer, N_LAYERS, 8))
    truth = sum(truths) / 2
    low, high = result.comparison.ci95
    assert low <= truth <= high and low > 0  # 0.15 of quality apart: a clear difference
    assert [t.task for t in result.comparison.tasks] == ["CLINC150", "TREC"]
    for t, task_truth in zip(result.comparison.tasks, truths):
        assert t.ci95[0] <= task_truth <= t.ci95[1]


def test_compare_pairs_the_stored_matrices_with_each_models_run_variance(shared_board):
    result = compare_models(shared_board, "org/strong", "org/control")
    strong, control = main_scores(find_entry(shared_board, "org/strong")), main_scores(find_entry(shared_board, "org/control"))
    expected = compare(
        {t: s.interval.matrix for t, s in strong.items()}, {t: s.interval.matrix for t, s in control.items()},
        runs_a={t: (s.interval.runs_std, s.interval.n_runs) for t, s in strong.items()},
    )
    assert result.comparison == expected
    assert {s.stage for s in result.scores_b.values()} == {"pretrained"} and {s.layer for s in result.scores_b.values()} == {-1}
    assert all(s.interval.n_runs == 3 and s.interval.runs_std > 0 for s in result.scores_a.values())
    assert all(s.interval.n_runs == 1 and s.interval.runs_std is None for s in result.scores_b.values())


@pytest.mark.parametrize("method", ["anova", "bootstrap"])
def test_command_prints_a_table_then_the_summary_line(shared_board, capsys, method):
    code, out, err = _run(capsys, "compare", "org/strong", "org/weak", "--method", method, "--leaderboard-dir", str(shared_board))
    assert (code, err) == (0, "")
    lines = out.rstrip("\n").splitlines()
    assert SUMMARY_LINE.match(lines[-1]), lines[-1]
    assert lines[-1] == compare_models(shared_board, "org/strong", "org/weak", method=method).comparison.summary_line()
    assert lines[0].startswith("a = org/strong, b = org/weak: paired on the same evaluation items and probe seeds, 2 task(s)")
    rows = {line.split()[0]: line for line in lines if line.startswith(("CLINC150 ", "TREC "))}
    assert set(rows) == {"CLINC150", "TREC"} and all("coarse_tuned layer" in row for row in rows.values())


def test_tasks_can_be_chosen(shared_board, capsys):
    code, out, _ = _run(capsys, "compare", "org/weak", "org/strong", "--tasks", "FineGrainHiddenTREC", "--leaderboard-dir", str(shared_board))
    assert code == 0 and "1 task(s)" in out and "\nCLINC150 " not in out
    only_trec = compare_models(shared_board, "org/weak", "org/strong", tasks=["TREC"]).comparison
    assert out.rstrip().splitlines()[-1] == only_trec.summary_line() and only_trec.mean_difference < 0
    both = compare_models(shared_board, "org/weak", "org/strong", tasks=["TREC,CLINC150".split(",")[1], "TREC"]).comparison
    assert [t.task for t in both.tasks] == ["CLINC150", "TREC"]
    # A model on TREC alone is compared with another on the task they share.
    assert [t.task for t in compare_models(shared_board, "solo/trec-only", "org/strong").comparison.tasks] == ["TREC"]
    with pytest.raises(FineGrainError, match="solo/trec-only has no result for task\\(s\\) CLINC150; its tasks: TREC"):
        compare_models(shared_board, "org/strong", "solo/trec-only", tasks=["CLINC150"])


def test_unknown_model_is_an_error_listing_the_models(shared_board, capsys):
    code, out, err = _run(capsys, "compare", "org/strong", "org/nope", "--leaderboard-dir", str(shared_board))
    assert code != 0 and out == ""
    assert "model 'org/nope' is not in the leaderboard" in err
    assert "models: org/control, org/strong, org/weak, solo/trec-only" in err


def test_results_on_another_evaluation_split_do_not_pair(board, capsys):
    _edit_stored(board, "org/weak", "TREC", lambda s: s["predictions"].update(split_sha256="sha256:" + "ab" * 32))
    code, _, err = _run(capsys, "compare", "org/strong", "org/weak", "--leaderboard-dir", str(board))
    assert code != 0
    assert "org/strong and org/weak cannot be compared pairwise" in err
    assert "TREC: not the same evaluation split (org/strong: 'sha256:" in err and "org/weak: 'sha256:abab" in err
    assert "CLINC150" not in err.split("\n", 1)[1]  # only the task that does not pair is named
    # The other task still pairs.
    assert [t.task for t in compare_models(board, "org/strong", "org/weak", tasks=["CLINC150"]).comparison.tasks] == ["CLINC150"]


def test_results_with_other_probe_seeds_do_not_pair(board):
    _edit_stored(board, "org/weak", "CLINC150", lambda s: s["predictions"].update(seeds=[1, 2, 3, 4, 5]))
    with pytest.raises(FineGrainError, match=r"CLINC150: not the same probe seeds \(org/strong: \[42, 43, 44, 45, 46\], org/weak: \[1, 2, 3, 4, 5\]\)"):
        compare_models(board, "org/strong", "org/weak")


def test_results_without_predictions_cannot_be_compared(board):
    _edit_stored(board, "org/weak", "TREC", lambda s: (s.pop("predictions"), s.update(protocol_version="3.1")))
    with pytest.raises(FineGrainError, match=f"org/weak: its TREC result \\(FineGrainHiddenTREC.json\\) stores no predictions \\(protocol 3.1\\); a paired comparison needs protocol {PROTOCOL_VERSION} results"):
        compare_models(board, "org/strong", "org/weak")


# -- cite ------------------------------------------------------------------------------------------------


def _stored_main_ci95(board: Path, model: str, card: str) -> list[float]:
    (path,) = (board / "results" / model.replace("/", "__")).glob(f"FineGrainHidden{card}.json")
    return json.loads(path.read_text(encoding="utf-8"))["scores"]["test"][0]["main_score_ci95"]


def test_cite_gives_the_main_score_with_its_interval_and_protocol(shared_board, capsys):
    line = cite_model(shared_board, "org/strong")
    match = re.match(rf"^org/strong \(rev rev-a\): FineGrainHidden main score (0\.\d{{4}}) \(95% CI (0\.\d{{4}})-(0\.\d{{4}})\), protocol {PROTOCOL_VERSION}; ", line)
    assert match, line
    main, low, high = map(float, match.groups())
    assert low < main < high
    for card in ("CLINC150", "TREC"):
        ci = _stored_main_ci95(shared_board, "org/strong", card)
        assert re.search(rf"{card} 0\.\d{{4}} \(95% CI {ci[0]:.4f}-{ci[1]:.4f}\)", line), line
    # One task: the mean over tasks is that task's score, with its stored interval.
    ci = _stored_main_ci95(shared_board, "solo/trec-only", "TREC")
    solo = cite_model(shared_board, "solo/trec-only")
    assert f"(95% CI {ci[0]:.4f}-{ci[1]:.4f}), protocol {PROTOCOL_VERSION}; TREC " in solo
    assert leaderboard_main(["cite", "org/control", "--leaderboard-dir", str(shared_board)]) == 0
    assert "(95% CI " in capsys.readouterr().out
