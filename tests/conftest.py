"""Shared fixtures: a tiny random BERT and a tiny generated hierarchical dataset with its card."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

# Two coarse classes with two fine classes each; each fine class has its own words, so the
# classes are learnable even by a random tiny model.
HIERARCHY = {"ant": "animal", "bee": "animal", "oak": "plant", "elm": "plant"}
WORDS = {fine: [f"{fine}{i}" for i in range(6)] for fine in HIERARCHY}
COMMON = ["the", "a", "of", "and", "is", "very", "small", "large"]


def make_rows(n_per_fine: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for fine, coarse in HIERARCHY.items():
        for _ in range(n_per_fine):
            words = rng.sample(WORDS[fine], 3) + rng.sample(COMMON, rng.randint(1, 4))
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "coarse": coarse, "fine": fine})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


CARD = """\
name: {name}
description: A tiny generated dataset for tests.
reference: https://example.org/tiny
license: mit
citation: |
  @misc{{tiny, title = {{Tiny}}, year = {{2026}}}}
local: {local}
columns: {{text: text, coarse: coarse, fine: fine}}
splits:
  coarse_train: train
  fewshot_pool: train
  evaluation: test
"""


def pytest_sessionfinish():
    """Stop the scoring worker processes the tests started: none outlives the test run."""
    from mteb_finegrain.scoring.workers import shutdown_scoring_workers

    shutdown_scoring_workers()


@pytest.fixture
def tiny_data(tmp_path):
    """A data dir with ``tiny/{train,test}.jsonl`` and a card dir with ``tiny.yaml``."""
    data_dir = tmp_path / "data"
    write_jsonl(data_dir / "tiny" / "train.jsonl", make_rows(20, seed=1))
    write_jsonl(data_dir / "tiny" / "test.jsonl", make_rows(8, seed=2))
    card_dir = tmp_path / "cards"
    card_dir.mkdir()
    (card_dir / "tiny.yaml").write_text(CARD.format(name="Tiny", local="tiny"), encoding="utf-8")
    return {"data_dir": data_dir, "card_dir": card_dir, "card": card_dir / "tiny.yaml"}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT with a word-level vocabulary, saved as a model dir."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *COMMON, *(w for ws in WORDS.values() for w in ws)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text("# tiny-bert\n", encoding="utf-8")
    return folder


@pytest.fixture
def tiny_st(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


@pytest.fixture
def finegrain_env(monkeypatch, tiny_data, tmp_path):
    """Point the data, task and cache environment variables at the tiny fixtures."""
    monkeypatch.setenv("MTEB_FINEGRAIN_DATA_DIR", str(tiny_data["data_dir"]))
    monkeypatch.setenv("MTEB_FINEGRAIN_TASK_PATH", str(tiny_data["card_dir"]))
    monkeypatch.setenv("MTEB_FINEGRAIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tiny_data


def fast_protocol(**changes):
    """A small protocol that runs in seconds on the tiny fixtures."""
    from mteb_finegrain.protocol import CoarseTraining, Protocol

    settings = dict(clustering_seeds=2, probe_seeds=2, shots=(1, 2, 8), coarse_training=CoarseTraining(batch_size=16))
    settings.update(changes)
    return Protocol(**settings)


__all__ = ["CARD", "HIERARCHY", "fast_protocol", "make_rows", "write_jsonl"]
