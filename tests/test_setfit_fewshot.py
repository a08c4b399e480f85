"""SetFit few-shot mode on a tiny random BERT (no hub access, a few seconds on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("setfit")

from mteb_finegrain.data import CardData, LabelledSplit  # noqa: E402
from mteb_finegrain.encoder import LayerEncoder  # noqa: E402
from mteb_finegrain.errors import FineGrainError  # noqa: E402
from mteb_finegrain.protocol import Protocol, SetFitSettings  # noqa: E402
from mteb_finegrain.scoring.fewshot_probe import fewshot_indices  # noqa: E402
from mteb_finegrain.scoring.setfit_fewshot import SETFIT_METRICS, setfit_records, truncated_body  # noqa: E402

N_LAYERS = 2
# Two coarse classes with two fine classes each; each fine class has its own topic words.
TOPICS = {
    "animal.dog": ("animal", ["dog", "puppy", "bark", "leash"]),
    "animal.cat": ("animal", ["cat", "kitten", "meow", "purr"]),
    "place.city": ("place", ["city", "street", "tower", "bridge"]),
    "place.river": ("place", ["river", "water", "bank", "stream"]),
}
FILLER = ["the", "a", "is", "was", "near", "big", "small", "old", "new", "very"]


def _texts(rng: np.random.Generator, fine: str, n: int) -> list[str]:
    words = TOPICS[fine][1]
    return [" ".join(rng.choice(words, 2).tolist() + rng.choice(FILLER, 3).tolist()) for _ in range(n)]


def _split(seed: int, per_class: int, name: str) -> LabelledSplit:
    rng = np.random.default_rng(seed)
    texts, coarse, fine = [], [], []
    for label, (parent, _) in TOPICS.items():
        texts += _texts(rng, label, per_class)
        coarse += [parent] * per_class
        fine += [label] * per_class
    return LabelledSplit(texts, [coarse, fine], name)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w for _, ws in TOPICS.values() for w in ws} | set(FILLER) | {"short", "check", "sentence", "another"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", *words]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), model_max_length=32)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def encoder(tiny_model_dir):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(str(tiny_model_dir))
    # CLS pooling + Normalize: the SetFit body must replace them by the protocol's mean pooling.
    model = SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="cls"), Normalize()], device="cpu")
    return LayerEncoder(model, pooling="mean", batch_size=8, show_progress_bar=False)


@pytest.fixture(scope="module")
def data():
    pool = _split(1, 6, "pool")
    validation = _split(2, 2, "validation")
    evaluation = _split(3, 4, "evaluation")
    hierarchy = {fine: parent for fine, (parent, _) in TOPICS.items()}
    return CardData(pool, pool, validation, evaluation, ["coarse", "fine"], [{}, hierarchy], "sha256:test", "test", False)


def _protocol(**setfit) -> Protocol:
    settings = {"shots": 2, "seeds": 2, "num_iterations": 2, "max_steps": 4, "batch_size": 4} | setfit
    return Protocol(seed=7, fewshot="setfit", setfit=SetFitSettings(**settings))


def _state(encoder: LayerEncoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in encoder.sentence_transformer.state_dict().items()}


def test_records_shape_metrics_layers(encoder, data):
    protocol = _protocol()
    records = setfit_records(encoder, data, protocol, "pretrained", selected_layer=1, show_progress_bar=False)
    assert len(records) == 2 * len(SETFIT_METRICS)
    assert [(r["layer"], r["metric"]) for r in records] == [
        (1, "setfit_accuracy"),
        (1, "setfit_f1_macro"),
        (N_LAYERS, "setfit_accuracy"),
        (N_LAYERS, "setfit_f1_macro"),
    ]
    for record in records:
        assert set(record) == {"stage", "level", "layer", "metric", "shots", "value", "std", "mode"}
        assert record["level"] == "fine"
        assert record["stage"] == "pretrained"
        assert record["mode"] == "setfit"
        assert record["shots"] == 2
        assert 0.0 <= record["value"] <= 1.0
        assert record["std"] >= 0.0


def test_selected_last_layer_is_deduplicated_trains_and_stays_quiet(encoder, data, monkeypatch, capfd):
    import setfit

    steps = []
    original = setfit.Trainer.train_embeddings

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        steps.append(self.st_trainer.state.global_step)

    monkeypatch.setattr(setfit.Trainer, "train_embeddings", spy)
    capfd.readouterr()
    records = setfit_records(encoder, data, _protocol(seeds=1), "coarse_tuned", selected_layer=N_LAYERS, show_progress_bar=False)
    out, err = capfd.readouterr()
    assert "it/s" not in err and "it/s" not in out and "Running training" not in err + out
    assert steps == [4]  # max_steps contrastive steps really ran, once (one layer, one seed)
    assert {r["layer"] for r in records} == {N_LAYERS}
    assert len(records) == len(SETFIT_METRICS)
    assert all(r["stage"] == "coarse_tuned" and r["std"] == 0.0 for r in records)


def test_deterministic_and_encoder_unchanged(encoder, data):
    before = _state(encoder)
    config_layers = encoder._transformer.config.num_hidden_layers
    embedding = encoder.encode_layers(data.evaluation.texts[:3])
    global_draw = (np.random.get_state()[1][:5].copy(), torch.random.get_rng_state().clone())

    first = setfit_records(encoder, data, _protocol(), "pretrained", selected_layer=0, show_progress_bar=False)
    second = setfit_records(encoder, data, _protocol(), "pretrained", selected_layer=0, show_progress_bar=False)
    assert first == second
    assert {r["layer"] for r in first} == {0, N_LAYERS}

    after = _state(encoder)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert encoder._transformer.config.num_hidden_layers == config_layers
    assert len(encoder.layers) == N_LAYERS + 1
    np.testing.assert_array_equal(encoder.encode_layers(data.evaluation.texts[:3]), embedding)
    # The caller's global random streams are left where they were.
    assert np.array_equal(np.random.get_state()[1][:5], global_draw[0])
    assert torch.equal(torch.random.get_rng_state(), global_draw[1])


@pytest.mark.parametrize("layer", range(N_LAYERS + 1))
def test_truncated_body_keeps_k_layers_and_reproduces_layer(encoder, data, layer):
    body = truncated_body(encoder, layer, "mean")
    model = body[0].auto_model
    assert model.config.num_hidden_layers == layer
    assert len(model.encoder.layer) == layer
    # Exactly the Transformer and the mean Pooling: the original's CLS pooling and Normalize are gone.
    assert [type(m).__name__ for m in body] == ["Transformer", "Pooling"]
    texts = data.evaluation.texts[:5]
    expected = encoder.encode_layers(texts)[layer]
    np.testing.assert_allclose(body.encode(texts, show_progress_bar=False), expected, rtol=1e-4, atol=1e-5)
    # The original keeps all its layers.
    assert len(encoder._transformer.encoder.layer) == N_LAYERS


def test_layers_give_different_bodies(encoder, data):
    texts = data.evaluation.texts[:3]
    outputs = [truncated_body(encoder, layer, "mean").encode(texts, show_progress_bar=False) for layer in range(N_LAYERS + 1)]
    for a in range(len(outputs)):
        for b in range(a + 1, len(outputs)):
            assert not np.allclose(outputs[a], outputs[b])


def test_same_fewshot_sample_as_probe(encoder, data, monkeypatch):
    import mteb_finegrain.scoring.setfit_fewshot as module

    seen = []

    def fake_train(encoder, layer, texts, labels, data, protocol, seed, show_progress_bar):
        seen.append((layer, seed, texts, labels))
        return 0.5, 0.25

    monkeypatch.setattr(module, "_train_and_score", fake_train)
    protocol = _protocol(shots=3, seeds=3)
    records = setfit_records(encoder, data, protocol, "pretrained", selected_layer=1, show_progress_bar=False)
    assert [(layer, seed) for layer, seed, _, _ in seen] == [(1, 7), (1, 8), (1, 9), (2, 7), (2, 8), (2, 9)]
    pool = data.fewshot_pool
    for _, seed, texts, labels in seen:
        idx = fewshot_indices(pool.fine, [3], seed)[3]
        assert texts == [pool.texts[i] for i in idx]
        assert labels == [pool.fine[i] for i in idx]
    assert all(r["value"] == (0.5 if r["metric"] == "setfit_accuracy" else 0.25) for r in records)


def test_invalid_settings_and_layers(encoder, data):
    with pytest.raises(FineGrainError, match="setfit.shots"):
        setfit_records(encoder, data, _protocol(shots=0), "pretrained", selected_layer=1)
    with pytest.raises(FineGrainError, match="out of range"):
        setfit_records(encoder, data, _protocol(), "pretrained", selected_layer=N_LAYERS + 1)
