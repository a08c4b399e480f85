import random

import pytest
import torch

from mteb_finegrain import coarse_tuning
from mteb_finegrain.cards import load_card
from mteb_finegrain.coarse_tuning import coarse_tuned_encoder
from mteb_finegrain.data import LabelledSplit, load_card_data
from mteb_finegrain.encoder import LayerEncoder
from mteb_finegrain.protocol import CoarseTraining

from conftest import fast_protocol


def _weights(encoder):
    return {k: v.clone() for k, v in encoder.sentence_transformer[0].auto_model.state_dict().items()}


def test_fine_labels_never_reach_training(finegrain_env, tiny_st, tmp_path, monkeypatch):
    card = load_card(finegrain_env["card"])
    split = load_card_data(card).coarse_train
    shuffled = list(split.fine)
    random.Random(0).shuffle(shuffled)
    permuted = LabelledSplit(split.texts, [split.coarse, shuffled], split.source)
    protocol = fast_protocol()
    monkeypatch.setenv("MTEB_FINEGRAIN_CACHE_DIR", str(tmp_path / "c1"))
    a = _weights(coarse_tuned_encoder(LayerEncoder(tiny_st, show_progress_bar=False), split, card=card, protocol=protocol, show_progress_bar=False))
    monkeypatch.setenv("MTEB_FINEGRAIN_CACHE_DIR", str(tmp_path / "c2"))
    b = _weights(coarse_tuned_encoder(LayerEncoder(tiny_st, show_progress_bar=False), permuted, card=card, protocol=protocol, show_progress_bar=False))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    before = _weights(LayerEncoder(tiny_st))
    assert any(not torch.equal(a[k], before[k]) for k in a), "training changed nothing"


def test_checkpoint_is_cached_and_reused(finegrain_env, tiny_st, monkeypatch):
    card = load_card(finegrain_env["card"])
    split = load_card_data(card).coarse_train
    encoder = LayerEncoder(tiny_st, show_progress_bar=False)
    first = coarse_tuned_encoder(encoder, split, card=card, protocol=fast_protocol(), show_progress_bar=False)
    monkeypatch.setattr(coarse_tuning, "train_on_coarse", lambda *a, **k: pytest.fail("retrained despite cache"))
    second = coarse_tuned_encoder(encoder, split, card=card, protocol=fast_protocol(), show_progress_bar=False)
    a, b = _weights(first), _weights(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The protocol's seed (samples, k-means, probes) does not touch training: the same checkpoint.
    coarse_tuned_encoder(encoder, split, card=card, protocol=fast_protocol(seed=7), show_progress_bar=False)
    # Another training seed is another key: it trains again.
    with pytest.raises(pytest.fail.Exception):
        coarse_tuned_encoder(encoder, split, card=card, protocol=fast_protocol(coarse_training=CoarseTraining(batch_size=16, seed=7)), show_progress_bar=False)


def test_interrupted_save_leaves_no_loadable_checkpoint(finegrain_env, tiny_st, tmp_path, monkeypatch):
    card = load_card(finegrain_env["card"])
    split = load_card_data(card).coarse_train
    encoder = LayerEncoder(tiny_st, show_progress_bar=False)
    real_save = type(tiny_st).save

    def interrupted_save(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C after the weights are on disk, before completion

    monkeypatch.setattr(type(tiny_st), "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        coarse_tuned_encoder(encoder, split, card=card, protocol=fast_protocol(), show_progress_bar=False)
    cache = tmp_path / "cache" / "coarse_tuned"
    assert [p for p in cache.iterdir() if p.suffix != ".lock"] == []  # the staging folder was removed, nothing renamed in
    monkeypatch.setattr(type(tiny_st), "save", real_save)
    trained = []
    real_train = coarse_tuning.train_on_coarse
    monkeypatch.setattr(coarse_tuning, "train_on_coarse", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    coarse_tuned_encoder(encoder, split, card=card, protocol=fast_protocol(), show_progress_bar=False)
    assert trained == [1]
    assert len([p for p in cache.iterdir() if p.suffix != ".lock"]) == 1


def test_train_level_chooses_the_labels_and_the_cache_key(finegrain_env, tiny_st, monkeypatch):
    from mteb_finegrain.errors import FineGrainError

    card = load_card(finegrain_env["card"])
    split = load_card_data(card).coarse_train
    seen = []
    monkeypatch.setattr(coarse_tuning, "train_on_coarse", lambda encoder, texts, labels, *a, **k: seen.append(sorted(set(labels))) or encoder.sentence_transformer)
    encoder = LayerEncoder(tiny_st, show_progress_bar=False)
    coarse_tuned_encoder(encoder, split, card=card, protocol=fast_protocol(), show_progress_bar=False)
    coarse_tuned_encoder(encoder, split, card=card, protocol=fast_protocol(train_level=-1), show_progress_bar=False)
    assert seen == [["animal", "plant"], ["ant", "bee", "elm", "oak"]]  # a new key: trained again, on the fine labels
    with pytest.raises(FineGrainError, match="train_level 2 is out of range for a card with 2 levels"):
        coarse_tuned_encoder(encoder, split, card=card, protocol=fast_protocol(train_level=2), show_progress_bar=False)


def test_mixed_precision_only_on_a_gpu(monkeypatch):
    import torch

    from mteb_finegrain import coarse_tuning

    assert coarse_tuning.training_precision(torch.device("cpu")) == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert coarse_tuning.training_precision(torch.device("cuda")) == "bfloat16-autocast"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert coarse_tuning.training_precision(torch.device("cuda")) == "float16-autocast"


def test_training_leaves_torchs_random_generator_as_it_found_it(finegrain_env, tiny_st):
    from mteb_finegrain.coarse_tuning import train_on_coarse

    card = load_card(finegrain_env["card"])
    split = load_card_data(card).coarse_train
    torch.manual_seed(1234)
    expected = torch.rand(5)
    torch.manual_seed(1234)
    first = train_on_coarse(LayerEncoder(tiny_st, show_progress_bar=False), split.texts, split.coarse, fast_protocol(), show_progress_bar=False)
    assert torch.equal(torch.rand(5), expected)
    torch.manual_seed(99)  # another caller state: the same weights (training seeds itself)
    second = train_on_coarse(LayerEncoder(tiny_st, show_progress_bar=False), split.texts, split.coarse, fast_protocol(), show_progress_bar=False)
    a, b = first[0].auto_model.state_dict(), second[0].auto_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_clipping_is_keyed_only_when_changed(finegrain_env, tiny_st, monkeypatch):
    from mteb_finegrain.coarse_tuning import stage_checkpoint_key
    from mteb_finegrain.protocol import CoarseTraining, CoarseTraining

    card = load_card(finegrain_env["card"])
    split = load_card_data(card).coarse_train
    encoder = LayerEncoder(tiny_st, show_progress_bar=False)
    default = stage_checkpoint_key(encoder, split, card, fast_protocol())
    # A key without max_grad_norm means a clip at 1.0, the default: the default gives that same key.
    assert "max_grad_norm" not in default["training"]
    assert default == stage_checkpoint_key(encoder, split, card, fast_protocol(coarse_training=CoarseTraining(batch_size=16, max_grad_norm=1.0)))
    other = stage_checkpoint_key(encoder, split, card, fast_protocol(coarse_training=CoarseTraining(batch_size=16, max_grad_norm=0.5)))
    assert other["training"]["max_grad_norm"] == 0.5
    clips = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, norm: clips.append(norm))
    coarse_tuning.train_on_coarse(encoder, split.texts[:16], split.coarse[:16], fast_protocol(coarse_training=CoarseTraining(batch_size=16, max_grad_norm=0.5)), show_progress_bar=False)
    assert clips == [0.5]
