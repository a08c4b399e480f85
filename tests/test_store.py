"""The store: digests that existing caches and results depend on, atomic writes, directory swaps, locks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mteb_finegrain import store

# Digests of fixed inputs, pinned: cache entries on disk and data hashes recorded in results
# must be found and compared the same way by every version of the package.
SPLIT_TEXTS, SPLIT_LEVELS = ["a text", "b ü"], [["x", "y"], ["x1", "y1"]]


def test_digests_equal_those_of_existing_caches_and_results(tmp_path):
    from mteb_finegrain.coarse_tuning import _key_dir, split_hash
    from mteb_finegrain.data import LabelledSplit, _rows_hash
    from mteb_finegrain.embedding_cache import _digest, _values_checksum, array_checksum, texts_hash

    assert texts_hash(["héllo", "world", ""]) == "a91bfef5a877fee20155688aad24b8e1c410917abf3330d53343e22ca6ece382"
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert array_checksum(array) == "8be943af016fce761c993cff9bf0255c"
    assert array_checksum(array.transpose(0, 2, 1)) == "6798bf17f0cddd15a64cea0698a41cba"  # C order of a view
    key = {"model": "m", "path": Path("/x"), "n": [1, 2], "dtype": np.dtype("float32")}
    assert _digest(key) == "6eaa435861b972135be6dcc6"
    assert _values_checksum({"v_measure": [0.5, 0.25], "ari": [1.0, float("nan")]}) == "c96daa2e1e917af5208fadae36deb53c"
    assert _key_dir({"model": "org/m", "card": "Tiny", "seed": 42, "training": {"lr": 5e-5}}).name == "org_m-Tiny-98b887890fded89a1274"
    split = LabelledSplit(SPLIT_TEXTS, SPLIT_LEVELS, "src")
    assert split_hash(split, 0) == "25abc8f174d0393a8a18a66f46236a2778e16389f91976ab3d2f4797c53ece89"
    assert split_hash(split, 1) == "e1b91db3ea09ae314eb22c0ec681d378b3b407cdf3e1539809bbde704df03da6"
    assert _rows_hash({"train": split, "test": split}) == "sha256:0a97c27110684c20cb1645033f23094c1923ffe1fa6554e49e30605fcd4c6fd2"


def test_model_digests_equal_those_of_existing_caches_and_results(tmp_path):
    import types

    import torch

    from mteb_finegrain._plugin import _local_model_revision
    from mteb_finegrain.embedding_cache import weights_fingerprint
    from mteb_finegrain.tfidf_svd import _tfidf_svd_revision

    assert _tfidf_svd_revision().endswith("-113226f0")
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(bytes(range(256)) * 5000)  # more than one 1 MiB block
    assert _local_model_revision(tmp_path) == "sha256-bb681d88fed76440"
    state = {"b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.tensor([1.5, -2.0])}
    encoder = types.SimpleNamespace(sentence_transformer=types.SimpleNamespace(state_dict=lambda: state))
    assert weights_fingerprint(encoder) == "27d1dab732c750373f181b26912eb947b1e39c669c3b12205be4a4979428835a"


def test_sha256_helpers():
    assert store.sha256_json({"b": 1, "a": [1, 2]}) == store.sha256_chunks([b'{"a": [1, 2], "b": 1}'])
    assert store.sha256_json({"a": 1}, length=8) == store.sha256_json({"a": 1})[:8]
    assert store.sha256_json({"p": Path("/x")}, default=str) == store.sha256_json({"p": "/x"})
    assert store.sha256_texts(["a", "b"]) != store.sha256_texts(["ab"])  # NUL-terminated, not joined
    assert store.blake2b_json([1.0]) != store.blake2b_json([1])


def test_cache_folders_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(store.CACHE_DIR_ENV, str(tmp_path))
    assert store.cache_root() == tmp_path
    assert store.embeddings_dir() == tmp_path / "embeddings"
    assert store.checkpoints_dir() == tmp_path / "coarse_tuned"
    monkeypatch.delenv(store.CACHE_DIR_ENV)
    assert store.cache_root().name == "mteb-finegrain"


def test_atomic_write_replaces_the_file_with_the_usual_permissions(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    store.atomic_write_text(path, "new\r\nline ü")
    assert path.read_bytes() == "new\r\nline ü".encode()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600
    store.atomic_write_json(path, {"b": 1, "a": 2}, sort_keys=True, indent=1)
    assert path.read_text() == '{\n "a": 2,\n "b": 1\n}'
    assert os.listdir(tmp_path) == ["a.txt"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def half(out):
        out.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        store.atomic_write(path, half)
    with pytest.raises(KeyboardInterrupt):
        store.atomic_save(path, lambda tmp: (tmp.write_bytes(b"half"), (_ for _ in ()).throw(KeyboardInterrupt)))
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]
    store.atomic_save(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new"


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _staged(parent: Path, text: str) -> Path:
    staging = parent / f".staging-{text}"
    staging.mkdir()
    (staging / "f.txt").write_text(text)
    return staging


def test_atomic_replace_dir_swaps_or_leaves_the_old_directory(tmp_path, monkeypatch):
    target = tmp_path / "entry"
    store.atomic_replace_dir(_staged(tmp_path, "one"), target)
    assert _tree(tmp_path) == {"entry/f.txt": "one"}
    store.atomic_replace_dir(_staged(tmp_path, "two"), target)
    assert _tree(tmp_path) == {"entry/f.txt": "two"}

    real_replace, calls = os.replace, []

    def second_rename_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    staging = _staged(tmp_path, "three")
    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(KeyboardInterrupt):
        store.atomic_replace_dir(staging, target)
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(calls) == 3  # aside, (failed) in, back
    assert (target / "f.txt").read_text() == "two" and not (tmp_path / ".old-entry").exists()


def test_recover_replaced_dir_puts_back_or_drops_the_backup(tmp_path):
    target = tmp_path / "entry"
    store.atomic_replace_dir(_staged(tmp_path, "one"), target)
    os.replace(target, tmp_path / ".old-entry")  # killed after moving the old one aside
    store.recover_replaced_dir(target)
    assert _tree(tmp_path) == {"entry/f.txt": "one"}
    (tmp_path / ".old-entry").mkdir()  # killed after moving the new one in
    (tmp_path / ".old-entry" / "f.txt").write_text("older")
    store.atomic_replace_dir(_staged(tmp_path, "two"), target)  # recovers first
    assert _tree(tmp_path) == {"entry/f.txt": "two"}


def test_file_lock_waits_for_another_process(tmp_path, caplog):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from mteb_finegrain.store import file_lock
            with file_lock({str(lock)!r}):
                print("held", flush=True)
                time.sleep(1.5)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(TimeoutError):
        with store.file_lock(lock, timeout=0):
            pass
    started = time.perf_counter()
    with store.file_lock(lock, waiting_message="waiting for x"):
        waited = time.perf_counter() - started
    holder.wait(timeout=60)
    assert waited > 0.3
    assert "waiting for x" in caplog.text
    caplog.clear()
    with store.file_lock(lock, timeout=0, waiting_message="waiting for x"):  # free again: no wait
        pass
    assert "waiting for x" not in caplog.text


def test_the_store_imports_no_heavy_library():
    code = "import sys, mteb_finegrain.store; print(sorted(m for m in ('numpy', 'torch', 'mteb') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
