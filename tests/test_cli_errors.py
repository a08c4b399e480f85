"""Command lines as a user types them: one clear error line, non-zero exit, no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CARD, make_rows, write_jsonl

BIN = Path(sys.executable).parent


def _cli(args, env_updates, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **env_updates}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _assert_one_error_line(result, expected):
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert expected in errors[0], errors[0]


@pytest.fixture
def env(finegrain_env, tmp_path):
    return {
        "MTEB_FINEGRAIN_DATA_DIR": str(finegrain_env["data_dir"]),
        "MTEB_FINEGRAIN_TASK_PATH": str(finegrain_env["card_dir"]),
        "MTEB_FINEGRAIN_CACHE_DIR": str(tmp_path / "cache"),
    }


def test_new_card_runs_through_plain_mteb_cli(env, tiny_model_dir, tmp_path):
    """A card plus data in a temporary directory: no code change, no import by the user."""
    listed = _cli([sys.executable, "-c", "import mteb; print([t.metadata.name for t in mteb.get_tasks(tasks=['FineGrainHiddenTiny'])])"], env, tmp_path)
    assert "FineGrainHiddenTiny" in listed.stdout, listed.stderr
    out = tmp_path / "results"
    run = _cli([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTiny", "-m", str(tiny_model_dir), "--output-folder", str(out)], env, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = _cli([str(BIN / "mteb-finegrain"), "report", str(out), "--json"], env, tmp_path)
    records = json.loads(report.stdout)
    assert {r["layer"] for r in records} == {0, 1, 2}
    assert {r["stage"] for r in records} == {"pretrained", "coarse_tuned"}
    assert records[0]["model"] == "local/tiny-bert"


def test_unknown_task(env, tiny_model_dir, tmp_path):
    result = _cli([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTRECC", "-m", str(tiny_model_dir)], env, tmp_path)
    _assert_one_error_line(result, "FineGrainHiddenTRECC")
    result = _cli([str(BIN / "mteb-finegrain"), "run", "-t", "FineGrainHiddenNope", "-m", str(tiny_model_dir)], env, tmp_path)
    _assert_one_error_line(result, "unknown task(s) FineGrainHiddenNope")


def test_missing_data_directory(env, tiny_model_dir, tmp_path):
    env = {**env, "MTEB_FINEGRAIN_DATA_DIR": str(tmp_path / "missing")}
    for command in ("mteb", "mteb-finegrain"):
        result = _cli([str(BIN / command), "run", "-t", "FineGrainHiddenTiny", "-m", str(tiny_model_dir), "--output-folder", str(tmp_path / "r")], env, tmp_path)
        _assert_one_error_line(result, "data directory does not exist")
    assert not list((tmp_path / "r").rglob("FineGrainHidden*.json"))


def test_fine_label_under_two_coarse_labels(env, finegrain_env, tiny_model_dir, tmp_path):
    rows = make_rows(5, seed=1)
    rows[3] = {"text": "ant1 oak2", "coarse": "plant", "fine": "ant"}
    write_jsonl(finegrain_env["data_dir"] / "tiny" / "train.jsonl", rows)
    result = _cli([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTiny", "-m", str(tiny_model_dir), "--output-folder", str(tmp_path / "r")], env, tmp_path)
    _assert_one_error_line(result, "fine label 'ant'")


def test_empty_text(env, finegrain_env, tiny_model_dir, tmp_path):
    rows = make_rows(5, seed=1)
    rows[2]["text"] = ""
    write_jsonl(finegrain_env["data_dir"] / "tiny" / "test.jsonl", rows)
    result = _cli([str(BIN / "mteb-finegrain"), "run", "-t", "FineGrainHiddenTiny", "-m", str(tiny_model_dir), "--output-folder", str(tmp_path / "r")], env, tmp_path)
    _assert_one_error_line(result, "test.jsonl:3: empty text")


def test_a_model_directory_that_does_not_exist(env, tmp_path):
    result = _cli([str(BIN / "mteb-finegrain"), "run", "-t", "FineGrainHiddenTiny", "-m", "./no-such-model", "--output-folder", str(tmp_path / "r")], env, tmp_path)
    _assert_one_error_line(result, "--model './no-such-model': no such directory")
    assert not (tmp_path / "r").exists()


def test_a_hub_id_that_cannot_be_reached(env, tmp_path):
    """Offline (HF_HUB_OFFLINE=1, as _cli sets), a Hub id is one line saying what to do instead."""
    result = _cli([str(BIN / "mteb-finegrain"), "run", "-t", "FineGrainHiddenTiny", "-m", "no-such-org/no-such-model", "--output-folder", str(tmp_path / "r")], env, tmp_path)
    _assert_one_error_line(result, "--model 'no-such-org/no-such-model': the model could not be reached on the Hugging Face Hub")
    (line,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert line.startswith("mteb-finegrain: error: ") and "HF_HUB_OFFLINE" in line and "local model directory" in line
    assert "UserWarning" not in result.stderr, result.stderr  # the scoring workers stop quietly
    assert not (tmp_path / "r").exists()


def test_a_network_failure_is_told_from_other_errors():
    from mteb_finegrain.run import hub_unreachable_message, network_failure

    class TransportError(Exception):  # httpx's base class of network failures, recognised by name
        pass

    class ConnectError(TransportError):
        pass

    try:
        try:
            raise ConnectError("[Errno -2] Name or service not known")
        except ConnectError as inner:
            raise OSError("We couldn't connect to 'https://huggingface.co'\nsecond line") from inner
    except OSError as outer:
        found = network_failure(outer)
    assert isinstance(found, ConnectError)
    assert network_failure(ValueError("a bad config")) is None
    message = hub_unreachable_message("org/name", found)
    assert "\n" not in message and "ConnectError: [Errno -2] Name or service not known" in message and "HF_HUB_OFFLINE" in message


def test_layer_out_of_range(env, tiny_model_dir, tmp_path):
    result = _cli([str(BIN / "mteb-finegrain"), "run", "-t", "FineGrainHiddenTiny", "-m", str(tiny_model_dir), "--layers", "0,9", "--output-folder", str(tmp_path / "r")], env, tmp_path)
    _assert_one_error_line(result, "layer 9 is out of range")
    # The scoring workers had started before the error: they are stopped quietly.
    assert "UserWarning" not in result.stderr, result.stderr
    assert not list((tmp_path / "r").rglob("FineGrainHidden*.json"))


@pytest.mark.parametrize("options, lines_read", [(["--json"], 1), ([], 0)], ids=["reader-stops-after-a-line", "reader-gone-at-once"])
def test_output_piped_to_a_reader_that_stops_ends_quietly(options, lines_read, tmp_path):
    """``mteb-finegrain report results | head``: status 141 (SIGPIPE's), no traceback."""
    results = Path(__file__).resolve().parent.parent / "leaderboard" / "results"
    command = [str(BIN / "mteb-finegrain"), "report", str(results), *options]  # --json: 3 MB, more than a pipe holds
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for _ in range(lines_read):
        assert process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=600) == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_start_up_hook_imports_nothing_heavy(tmp_path):
    """The .pth hook must not import mteb or this package in processes that never use mteb."""
    probe = _cli([sys.executable, "-c", "import sys; print(sorted(m for m in sys.modules if m.startswith(('mteb', 'torch', 'yaml'))))"], {}, tmp_path)
    assert probe.stdout.strip() == "['mteb_finegrain_autoload']", probe.stdout + probe.stderr


def test_a_card_mteb_refuses_is_skipped_with_one_line_and_the_rest_still_works(env, finegrain_env, tiny_model_dir, tmp_path):
    bad = CARD.format(name="Bad", local="tiny").replace("license: mit", "license: none").replace("reference: https://example.org/tiny", "reference: none")
    (finegrain_env["card_dir"] / "bad.yaml").write_text(bad)
    listed = _cli([sys.executable, "-c", "import mteb; print(sorted(t for t in ('FineGrainHiddenTREC', 'FineGrainHiddenTiny') if mteb.get_task(t)))"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "['FineGrainHiddenTREC', 'FineGrainHiddenTiny']" in listed.stdout
    skipped = [line for line in listed.stderr.splitlines() if "card skipped" in line]
    assert len(skipped) == 1 and "Traceback" not in listed.stderr, listed.stderr
    assert "bad.yaml" in skipped[0] and "license 'none'" in skipped[0] and "reference 'none'" in skipped[0] and "cc-by-4.0" in skipped[0]
    result = _cli([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenBad", "-m", str(tiny_model_dir), "--output-folder", str(tmp_path / "r")], env, tmp_path)
    _assert_one_error_line(result, "FineGrainHiddenBad")
    assert "license 'none'" in result.stderr
    run = _cli([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTiny", "-m", str(tiny_model_dir), "--output-folder", str(tmp_path / "ok")], env, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert list((tmp_path / "ok").rglob("FineGrainHiddenTiny.json"))


def test_mteb_errors_stay_mteb_errors(env, tiny_model_dir, tmp_path):
    """The start-up hook rewrites only errors of FineGrainHidden tasks, never mteb's own."""
    result = _cli([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTiny", "-m", "no-such/model", "--output-folder", str(tmp_path / "r")], env, tmp_path)
    assert result.returncode != 0
    assert "mteb: error:" not in result.stderr and "unknown task" not in result.stderr
    assert "no-such/model" in result.stderr.strip().splitlines()[-1]


def test_task_lists_agree(env, tmp_path):
    code = (
        "import sys, mteb; g = sys.modules['mteb.get_tasks']; "
        "names = lambda tasks: sorted(t.metadata.name for t in tasks if t.metadata.name.startswith('FineGrainHidden')); "
        "print(names(mteb.get_tasks()) == names(g.TASK_LIST) == sorted(n for n in g._TASKS_REGISTRY if n.startswith('FineGrainHidden')), names(g.TASK_LIST))"
    )
    listed = _cli([sys.executable, "-c", code], env, tmp_path)
    assert listed.stdout.startswith("True"), listed.stdout + listed.stderr
    assert "FineGrainHiddenTiny" in listed.stdout
    available = _cli([str(BIN / "mteb"), "available-tasks"], env, tmp_path)
    for name in ("FineGrainHidden", "FineGrainHiddenTREC", "FineGrainHiddenGoEmotions", "FineGrainHiddenTiny"):
        assert name in available.stdout, name


def test_a_module_that_copied_the_task_list_early_sees_the_new_one(monkeypatch):
    import types

    from mteb_finegrain._plugin import rebind_task_list

    old, new = ("a",), ("a", "b")
    owner, copier, other = types.ModuleType("owner"), types.ModuleType("copier"), types.ModuleType("other")
    owner.TASK_LIST = copier.TASK_LIST = old
    other.TASK_LIST = tuple(["a"])  # equal but not the same object: someone else's list, left alone
    for module in (owner, copier, other):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    rebind_task_list(old, new)
    assert owner.TASK_LIST is new and copier.TASK_LIST is new and other.TASK_LIST == ("a",)


def test_model_name_makes_a_local_model_citable(env, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    run = _cli([str(BIN / "mteb-finegrain"), "run", "-t", "FineGrainHiddenTiny", "-m", str(tiny_model_dir), "--model-name", "org/tiny-bert",
                "--model-revision", "0123abc", "--stages", "pretrained", "--shots", "8", "--seeds", "1", "--output-folder", str(out), "--quiet"], env, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    (meta_file,) = out.rglob("model_meta.json")
    meta = json.loads(meta_file.read_text())
    assert (meta["name"], meta["revision"]) == ("org/tiny-bert", "0123abc")
    (result,) = out.rglob("FineGrainHiddenTiny.json")
    assert json.loads(result.read_text())["scores"]["test"][0]["model"]["name"] == "org/tiny-bert"
    assert str(tmp_path) not in meta_file.read_text() + result.read_text()  # no path of this machine


def test_hub_cache_snapshot_folder_declares_its_public_name(tiny_model_dir, tmp_path):
    import shutil

    from mteb_finegrain._plugin import local_model_meta

    commit = "a" * 40
    snapshot = tmp_path / "hub" / "models--org--tiny-bert" / "snapshots" / commit
    shutil.copytree(tiny_model_dir, snapshot)
    meta = local_model_meta(snapshot)
    assert (meta.name, meta.revision) == ("org/tiny-bert", commit)
