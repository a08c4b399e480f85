"""Faults: processes killed with SIGKILL at chosen moments, processes racing for one cache or one
leaderboard, a full disk. The property: the next run redoes or resumes the work and ends with the
same scores; nothing half-written is ever loaded; concurrent writers both succeed.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mteb_finegrain.protocol import Protocol

from leaderboard_fixtures import tree_digest, write_submission

BIN = Path(sys.executable).parent
# SIGKILL delays (seconds after the start) are drawn with a fixed seed: the same moments in CI.
KILLS = random.Random(8).sample([2.0, 3.5, 5.0, 6.5, 8.0, 10.0, 12.0], 3)


def _env(finegrain_env, tmp_path) -> dict:
    return {
        **os.environ,
        "MTEB_FINEGRAIN_DATA_DIR": str(finegrain_env["data_dir"]),
        "MTEB_FINEGRAIN_TASK_PATH": str(finegrain_env["card_dir"]),
        "MTEB_FINEGRAIN_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }


def _run_command(model_dir, out) -> list[str]:
    return [str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTiny", "-m", str(model_dir), "--output-folder", str(out)]


def _records(out: Path) -> list:
    (result,) = out.rglob("FineGrainHiddenTiny.json")
    return json.loads(result.read_text())["scores"]["test"][0]["records"]


def _no_partial_files(*roots: Path) -> None:
    for root in roots:
        if root.exists():
            left = [p for p in root.rglob("*") if p.name.startswith((".partial-", ".add-", ".old-")) or p.suffix == ".tmp"]
            assert left == [], left


def test_fault_sigkill_during_a_run_then_rerun_gives_identical_scores(finegrain_env, tiny_model_dir, tmp_path):
    env = _env(finegrain_env, tmp_path)
    baseline = tmp_path / "baseline"
    done = subprocess.run(_run_command(tiny_model_dir, baseline), env={**env, "MTEB_FINEGRAIN_CACHE_DIR": str(tmp_path / "cache0")}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = _records(baseline)
    killed_at = []
    for i, delay in enumerate(KILLS):
        out = tmp_path / f"run{i}"
        process = subprocess.Popen(_run_command(tiny_model_dir, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed_at.append(delay)
        process.wait()
        for path in out.rglob("FineGrainHiddenTiny.json"):  # whatever exists must be complete
            json.loads(path.read_text())
        again = subprocess.run(_run_command(tiny_model_dir, out), env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
        assert _records(out) == expected
    assert killed_at, "every run finished before its kill: the delays no longer test anything"
    # The shared cache holds complete checkpoints only (a killed writer's staging is cleaned up).
    checkpoints = [p for p in (tmp_path / "cache" / "coarse_tuned").iterdir() if p.suffix != ".lock"]
    assert all((p / "finegrain_checkpoint.json").is_file() for p in checkpoints)


def test_fault_two_runs_share_one_cache(finegrain_env, tiny_model_dir, tmp_path):
    env = _env(finegrain_env, tmp_path)
    processes = [subprocess.Popen(_run_command(tiny_model_dir, tmp_path / name), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    checkpoints = [p for p in (tmp_path / "cache" / "coarse_tuned").iterdir() if p.suffix != ".lock"]
    # Each coarse-training run trained once: the second process waited for the first.
    assert len(checkpoints) == Protocol().coarse_seeds
    _no_partial_files(tmp_path / "cache")


def _add(submission: Path, board: Path, *extra: str) -> list[str]:
    return [str(BIN / "mteb-finegrain"), "leaderboard", "add", str(submission), "--leaderboard-dir", str(board), *extra]


def test_fault_sigkill_during_leaderboard_add_and_build(tmp_path, monkeypatch):
    monkeypatch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    env = {k: v for k, v in os.environ.items() if k not in ("MTEB_FINEGRAIN_DATA_DIR", "MTEB_FINEGRAIN_TASK_PATH")}
    board = tmp_path / "board"
    old = write_submission(tmp_path / "old", cards=("TREC",), n_layers=3, revision="rev-1")
    new = write_submission(tmp_path / "new", cards=("TREC",), n_layers=3, revision="rev-2", quality=0.7)
    assert subprocess.run(_add(old, board), env=env, capture_output=True, timeout=300).returncode == 0
    from mteb_finegrain.leaderboard import build_leaderboard
    from mteb_finegrain.leaderboard.store import entries

    revisions = set()
    for delay in [0.3, 1.0, 2.0, 3.0, 4.5]:
        process = subprocess.Popen(_add(new, board, "--replace"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        build_leaderboard(board)  # takes the lock, finishes or undoes what the killed add left
        (entry,) = entries(board)
        assert entry.revision in ("rev-1", "rev-2")
        revisions.add(entry.revision)
        _no_partial_files(board)
        if entry.revision == "rev-2":  # put the old one back for the next kill
            assert subprocess.run(_add(old, board, "--replace"), env=env, capture_output=True, timeout=300).returncode == 0
    build = [str(BIN / "mteb-finegrain"), "leaderboard", "build", "--leaderboard-dir", str(board)]
    process = subprocess.Popen(build, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    build_leaderboard(board)
    digest = tree_digest(board)
    build_leaderboard(board)
    assert tree_digest(board) == digest  # the pages are whole: rebuilding changes nothing


def test_fault_two_leaderboard_adds_at_once(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("MTEB_FINEGRAIN_DATA_DIR", "MTEB_FINEGRAIN_TASK_PATH")}
    board = tmp_path / "board"
    submissions = [write_submission(tmp_path / name, cards=("TREC",), n_layers=3, model=f"org/{name}") for name in ("a", "b")]
    processes = [subprocess.Popen(_add(s, board), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for s in submissions]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    from mteb_finegrain.leaderboard.store import entries

    assert sorted(e.model for e in entries(board)) == ["org/a", "org/b"]


def test_fault_a_replace_killed_between_its_two_renames_is_undone(tmp_path):
    from mteb_finegrain.leaderboard import add_submission, build_leaderboard
    from mteb_finegrain.leaderboard.store import entries

    board = tmp_path / "board"
    _, entry = add_submission(write_submission(tmp_path / "a", cards=("TREC",), n_layers=3), board)
    os.replace(entry, entry.parent / f".old-{entry.name}")  # the state a kill after the first rename leaves
    build_leaderboard(board)
    assert [e.path for e in entries(board)] == [entry]


def test_fault_full_disk_while_writing_a_checkpoint(finegrain_env, tiny_st, monkeypatch):
    from mteb_finegrain.cards import load_card
    from mteb_finegrain.coarse_tuning import coarse_tuned_encoder
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.errors import FineGrainError

    from conftest import fast_protocol

    def full_disk(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(tiny_st), "save", full_disk)
    card = load_card(finegrain_env["card"])
    with pytest.raises(FineGrainError, match="cannot write the coarse-tuned checkpoint \\(No space left on device\\); nothing was cached"):
        coarse_tuned_encoder(LayerEncoder(tiny_st, show_progress_bar=False), load_card_data(card).coarse_train, card=card, protocol=fast_protocol(), show_progress_bar=False)
    cache = Path(os.environ["MTEB_FINEGRAIN_CACHE_DIR"]) / "coarse_tuned"
    assert [p for p in cache.iterdir() if p.suffix != ".lock"] == []


def test_fault_full_disk_while_writing_a_result(tmp_path, monkeypatch):
    import mteb  # noqa: F401  (the start-up hook makes FineGrainHidden result writes atomic)
    from mteb.results.task_result import TaskResult

    from mteb_finegrain.errors import FineGrainError

    (source,) = write_submission(tmp_path / "sub", cards=("TREC",), n_layers=3).rglob("FineGrainHiddenTREC.json")
    result = TaskResult.from_disk(source)
    target = tmp_path / "FineGrainHiddenTREC.json"
    target.write_text("previous")
    real_dump = json.dump

    def dump_until_full(obj, handle, **kwargs):
        handle.write("{ partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", dump_until_full)
    with pytest.raises(FineGrainError, match="cannot write the result \\(No space left on device\\); any previous result file is unchanged"):
        result.to_disk(target)
    monkeypatch.setattr(json, "dump", real_dump)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
