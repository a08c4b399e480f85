"""The embedding cache: what it keys on, what it refuses to trust, and a re-run that encodes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mteb
import numpy as np
import pytest

from conftest import fast_protocol
from mteb_finegrain.cards import load_card
from mteb_finegrain.embedding_cache import EmbeddingCache, StageEmbeddings, clustering_key
from mteb_finegrain.protocol import Protocol
from mteb_finegrain.results import load_results
from mteb_finegrain.task import make_task_class

KEY = {"model": "m", "stage": "pretrained", "split": "evaluation"}


def _array(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, rows, 4)).astype(np.float32)


def test_an_entry_round_trips_and_another_key_misses(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.store(KEY, _array(3))
    assert np.array_equal(cache.load(KEY), _array(3))
    assert cache.load(KEY | {"pooling": "cls"}) is None
    assert cache.size()[0] == 1
    assert cache.clear()[0] == 1 and cache.load(KEY) is None


@pytest.mark.parametrize("damage", ["flip a byte", "truncate the array", "array without metadata", "metadata of another array"])
def test_a_damaged_or_partial_entry_is_not_trusted(tmp_path, damage):
    cache = EmbeddingCache(tmp_path)
    cache.store(KEY, _array(3))
    (array_path,) = tmp_path.glob("*.npy")
    (meta_path,) = tmp_path.glob("*.json")
    data = bytearray(array_path.read_bytes())
    if damage == "flip a byte":
        data[-1] ^= 0xFF
        array_path.write_bytes(bytes(data))
    elif damage == "truncate the array":
        array_path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "array without metadata":
        meta_path.unlink()
    else:  # a writer replaced the array, then died before its metadata
        np.save(array_path, _array(3, seed=1))
    assert cache.load(KEY) is None


def test_clustering_scores_round_trip_and_a_damaged_entry_is_not_trusted(tmp_path):
    cache = EmbeddingCache(tmp_path)
    x = _array(6)[0]
    key = clustering_key(x, ["a", "b"] * 3, None, [42, 43])
    values = {"v_measure": [0.25, 0.5], "nmi": [float("nan"), 1.0]}
    cache.store_scores(key, values)
    held = cache.load_scores(key)
    assert held["v_measure"] == [0.25, 0.5] and np.isnan(held["nmi"][0])
    # other embeddings, labels or seeds are other keys
    assert cache.load_scores(clustering_key(x + 1, ["a", "b"] * 3, None, [42, 43])) is None
    assert cache.load_scores(clustering_key(x, ["a", "b", "b", "a", "a", "b"], None, [42, 43])) is None
    assert cache.load_scores(clustering_key(x, ["a", "b"] * 3, None, [42])) is None
    # The k-means settings: the defaults are the key without them (the scores cached so far),
    # any other value is another key.
    assert clustering_key(x, ["a", "b"] * 3, None, [42, 43], protocol=Protocol()) == key
    for change in ({"kmeans_l2_normalize": False}, {"kmeans_n_init": 3}, {"kmeans_max_iter": 10}, {"kmeans_tol": 1e-3}):
        other = clustering_key(x, ["a", "b"] * 3, None, [42, 43], protocol=Protocol(**change))
        assert other["kmeans"] == change and cache.load_scores(other) is None
    assert clustering_key(x, ["a", "b"] * 3, None, [42, 43], protocol=Protocol(probe_max_iter=5)) == key  # probes do not matter
    (path,) = tmp_path.glob("*.scores.json")
    entry = json.loads(path.read_text())
    entry["values"]["v_measure"][0] = 0.3  # changed behind the checksum's back
    path.write_text(json.dumps(entry))
    assert cache.load_scores(key) is None
    path.write_text(path.read_text()[:20])  # a partial write
    assert cache.load_scores(key) is None


class _CountingEncoder:
    """Stands in for a LayerEncoder: embeddings derived from the text, a count of what it encoded."""

    def __init__(self):
        self.encoded: list[str] = []

    def encode_layers(self, texts, prompt=None, **context):
        self.encoded.extend(texts)
        return np.stack([np.full((2, 3), len(t), dtype=np.float32) for t in texts], axis=1)


def test_the_same_call_is_served_from_the_cache_and_another_list_is_not(tmp_path):
    texts = ["a", "bb", "ccc"]
    encoder = _CountingEncoder()
    first = StageEmbeddings(lambda: encoder, KEY, cache=EmbeddingCache(tmp_path))
    assert first.encode("pool", texts)[0, :, 0].tolist() == [1, 2, 3]
    loaded = []
    again = StageEmbeddings(lambda: loaded.append(1) or encoder, KEY, cache=EmbeddingCache(tmp_path))
    assert again.encode("pool", texts)[0, :, 0].tolist() == [1, 2, 3]
    assert loaded == [] and again.encoded_texts == 0, "a cached call must not even load the model"
    # Other companions are another call (padding changes the last bits): encoded, not sliced.
    assert again.encode("pool", texts[:2])[0, :, 0].tolist() == [1, 2]
    assert again.encoded_texts == 2 and encoder.encoded == ["a", "bb", "ccc", "a", "bb"]
    assert StageEmbeddings(lambda: encoder, None).encode("pool", texts).shape == (2, 3, 3)


# Each kill point ends the writing process as SIGKILL would (os._exit: no cleanup, no finally).
_KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import mteb_finegrain.embedding_cache as ec

    root, point = sys.argv[1], sys.argv[2]
    key = {"model": "m", "stage": "pretrained", "split": "evaluation"}
    new = np.ones((3, 4, 4), dtype=np.float32)
    replaces = []
    real_replace = os.replace

    def replace(src, dst):
        if point == "before the array rename" or (point == "between the renames" and replaces):
            os._exit(9)
        replaces.append(dst)
        real_replace(src, dst)

    def save(out, array, allow_pickle=False):
        out.write(b"\\x93NUMPY half an array")
        out.flush()
        os._exit(9)

    ec.os.replace = replace
    if point == "inside the array write":
        ec.np.save = save
    ec.EmbeddingCache(root).store(key, new)
    """
)


@pytest.mark.parametrize("point", ["inside the array write", "before the array rename", "between the renames"])
def test_a_writer_killed_while_writing_leaves_nothing_trusted(tmp_path, point):
    cache = EmbeddingCache(tmp_path)
    old = _array(3)
    cache.store(KEY, old)  # an entry the killed writer was replacing
    done = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path), point], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    held = cache.load(KEY)
    # Either the old entry, intact, or nothing: never the new array under the old metadata.
    assert held is None or np.array_equal(held, old)
    if point == "between the renames":
        assert held is None
    cache.store(KEY, old)  # the next writer recovers the entry
    assert np.array_equal(cache.load(KEY), old)


def _run(finegrain_env, tiny_st, out, embedding_cache=True, **changes):
    task = make_task_class(load_card(finegrain_env["card"]))(protocol=fast_protocol(**changes), show_progress_bar=False, embedding_cache=embedding_cache)
    mteb.evaluate(tiny_st, [task], cache=mteb.ResultCache(str(out)), overwrite_strategy="always", show_progress_bar=False)
    (result,) = load_results(out)
    return result


def test_a_scoring_only_rerun_encodes_nothing_and_loads_no_checkpoint(finegrain_env, tiny_st, tmp_path, monkeypatch):
    first = _run(finegrain_env, tiny_st, tmp_path / "a")
    runtime = first.scores["runtime"]
    assert all(stage["texts_encoded"] > 0 for stage in runtime["embeddings"].values())
    assert (runtime["device"], runtime["encoding_dtype"], runtime["coarse_training_precision"]) == ("cpu", "float32", "float32")
    import mteb_finegrain.coarse_tuning as coarse_tuning

    def no_checkpoint(*args, **kwargs):
        raise AssertionError("the coarse-tuned checkpoint was loaded although every embedding is cached")

    monkeypatch.setattr(coarse_tuning, "coarse_tuned_encoder", no_checkpoint)
    again = _run(finegrain_env, tiny_st, tmp_path / "b", shots=(1, 8))
    assert {stage: v["texts_encoded"] for stage, v in again.scores["runtime"]["embeddings"].items()} == {"pretrained": 0, "coarse_tuned": 0}
    # No k-means either: every (layer, level) clustering result comes from the cache.
    jobs = len({(r["layer"], r["level"]) for r in first.records() if r["stage"] == "pretrained"})
    assert {stage: v["clustering_cached"] for stage, v in runtime["embeddings"].items()} == {"pretrained": 0, "coarse_tuned": 0}
    runs = first.scores["settings"]["coarse_seeds"]  # every coarse-training run is scored and cached
    assert {stage: v["clustering_cached"] for stage, v in again.scores["runtime"]["embeddings"].items()} == {"pretrained": jobs, "coarse_tuned": jobs * runs}
    assert sorted({r["shots"] for r in again.records() if r["metric"] == "probe_accuracy"}) == [1, 8]
    # The same numbers as a fresh run of the same settings without the cache (and as the first
    # run for the shots both have): which texts are encoded together never depends on the shots.
    monkeypatch.undo()
    monkeypatch.setenv("MTEB_FINEGRAIN_CACHE_DIR", str(tmp_path / "fresh-cache"))
    for name, value in (("MTEB_FINEGRAIN_DATA_DIR", finegrain_env["data_dir"]), ("MTEB_FINEGRAIN_TASK_PATH", finegrain_env["card_dir"]), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, str(value))
    fresh = _run(finegrain_env, tiny_st, tmp_path / "c", embedding_cache=False, shots=(1, 8))
    assert again.records() == fresh.records()

    def by_key(result):
        return {(r["stage"], r["level"], r["layer"], r["metric"], r["shots"]): r["value"] for r in result.records()}

    before, after = by_key(first), by_key(again)
    assert after and all(after[k] == before[k] for k in after)


def test_the_cache_switched_off_writes_nothing_and_scores_the_same(finegrain_env, tiny_st, tmp_path, monkeypatch):
    cached = _run(finegrain_env, tiny_st, tmp_path / "a")
    monkeypatch.setenv("MTEB_FINEGRAIN_CACHE_DIR", str(tmp_path / "other-cache"))
    uncached = _run(finegrain_env, tiny_st, tmp_path / "b", embedding_cache=False)
    assert not (tmp_path / "other-cache" / "embeddings").exists()
    assert uncached.records() == cached.records()
    monkeypatch.setenv("MTEB_FINEGRAIN_EMBEDDING_CACHE", "0")
    _run(finegrain_env, tiny_st, tmp_path / "c")
    assert not (tmp_path / "other-cache" / "embeddings").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(Path(sys.executable).parent / "mteb-finegrain"), *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_cli_rerun_with_other_shots_replaces_the_result_and_cache_commands(finegrain_env, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    base = ["run", "-t", "FineGrainHiddenTiny", "-m", str(tiny_model_dir), "--output-folder", str(out), "--quiet", "--seeds", "2", "--batch-size", "16"]
    _cli(*base, "--shots", "1,2,8")
    again = _cli(*base, "--shots", "1,8")
    assert "made with other settings" in again.stderr and "embedding cache:" in again.stderr
    assert "Encoding" not in again.stderr and "Coarse fine-tuning" not in again.stderr
    (path,) = out.rglob("FineGrainHiddenTiny.json")
    scores = json.loads(path.read_text())["scores"]["test"][0]
    assert scores["settings"]["shots"] == [1, 8]
    assert scores["settings"]["batch_size"] == 16  # --batch-size reaches the task (mteb fills in 32 otherwise)
    assert {stage: v["texts_encoded"] for stage, v in scores["runtime"]["embeddings"].items()} == {"pretrained": 0, "coarse_tuned": 0}
    info = _cli("cache", "info").stdout
    # 3 calls a stage run (evaluation, validation, few-shot): the pretrained run and 3
    # coarse-training runs; 3 layers x 2 levels of clustering a stage run
    assert "embeddings: 12 entries and 24 clustering results" in info and "coarse-tuned checkpoints: 3," in info
    _cli("cache", "clear", "--which", "all")
    assert "embeddings: 0 entries" in _cli("cache", "info").stdout
    assert not list((tmp_path / "cache" / "coarse_tuned").glob("*/finegrain_checkpoint.json"))
