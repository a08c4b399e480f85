import numpy as np
import pytest
import torch

from mteb_finegrain.encoder import LayerEncoder, pool_hidden_state
from mteb_finegrain.errors import FineGrainError

TEXTS = ["the ant0 ant1", "a very small oak3 oak4 oak5 and the elm1", "bee2"]


def test_all_layers_in_one_pass(tiny_st):
    encoder = LayerEncoder(tiny_st, show_progress_bar=False)
    assert encoder.layers == [0, 1, 2]
    out = encoder.encode_layers(TEXTS)
    assert out.shape == (3, 3, 32) and out.dtype == np.float32
    # the last layer with mean pooling is what sentence-transformers itself computes
    np.testing.assert_allclose(out[-1], tiny_st.encode(TEXTS), atol=1e-5)
    assert not np.allclose(out[0], out[-1])


def test_mean_pooling_excludes_padding(tiny_st):
    encoder = LayerEncoder(tiny_st, batch_size=8, show_progress_bar=False)
    alone = encoder.encode_layers(["bee2"])
    padded = encoder.encode_layers(TEXTS)  # bee2 is padded to the longest text here
    np.testing.assert_allclose(alone[:, 0], padded[:, 2], atol=1e-5)


def test_cls_pooling_takes_first_token(tiny_st):
    encoder = LayerEncoder(tiny_st, pooling="cls", show_progress_bar=False)
    batch = tiny_st.tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.inference_mode():
        hidden = tiny_st[0].auto_model(**batch, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(encoder.encode_layers(TEXTS[:1])[1, 0], hidden[1][0, 0].numpy(), atol=1e-5)


def test_layer_selection_and_errors(tiny_st):
    with pytest.raises(FineGrainError, match="layer 7 is out of range.*valid layers are 0..2"):
        LayerEncoder(tiny_st, layer=7)
    with pytest.raises(FineGrainError, match="pooling must be one of"):
        LayerEncoder(tiny_st, pooling="median")


def test_mteb_encoder_interface_returns_chosen_layer(tiny_st):
    from mteb._create_dataloaders import _create_dataloader_from_texts

    encoder = LayerEncoder(tiny_st, layer=1, show_progress_bar=False)
    loader = _create_dataloader_from_texts(TEXTS, batch_size=2)
    out = encoder.encode(loader, task_metadata=None, hf_split="test", hf_subset="default")
    np.testing.assert_allclose(out, encoder.encode_layers(TEXTS)[1], atol=1e-6)
    np.testing.assert_allclose(encoder.with_layer(0).encode(loader, task_metadata=None, hf_split="test", hf_subset="default"), encoder.encode_layers(TEXTS)[0], atol=1e-6)


def test_wraps_mteb_model_and_local_path(tiny_model_dir, tiny_st):
    from mteb.models import SentenceTransformerEncoderWrapper

    from_wrapper = LayerEncoder(SentenceTransformerEncoderWrapper(tiny_st), show_progress_bar=False)
    from_path = LayerEncoder(str(tiny_model_dir), show_progress_bar=False)
    np.testing.assert_allclose(from_wrapper.encode_layers(TEXTS), from_path.encode_layers(TEXTS), atol=1e-5)


class ApiModel:
    """A model with only a final embedding, like an API model."""

    def encode(self, inputs, **kwargs):
        return np.array([[len(t), t.count(" ")] for batch in inputs for t in batch["text"]], dtype=float)


def test_model_without_hidden_states_has_one_final_layer():
    encoder = LayerEncoder(ApiModel(), show_progress_bar=False)
    assert not encoder.has_hidden_states and encoder.layers == [-1]
    out = encoder.encode_layers(TEXTS)
    assert out.shape == (1, 3, 2)


def test_model_pooling_applies_the_models_own_pooling_mode(tiny_model_dir):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    for mode in ("cls", "lasttoken", "mean"):
        transformer = Transformer(str(tiny_model_dir))
        model = SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode=mode)], device="cpu")
        encoder = LayerEncoder(model, pooling="model", show_progress_bar=False)
        assert (encoder.pooling_setting, encoder.pooling) == ("model", mode)
        texts = ["ant0 ant1 the", "oak2", "bee1 bee2 bee3 a of"]
        # The last layer pooled like the model pools equals the model's own embedding.
        assert np.allclose(encoder.encode_layers(texts)[-1], model.encode(texts), atol=1e-5)


def test_lasttoken_and_max_pooling_ignore_padding():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert pool_hidden_state(hidden, right, "lasttoken").tolist() == [[2.0, 3.0], [10.0, 11.0]]
    assert pool_hidden_state(hidden, left, "lasttoken").tolist() == [[4.0, 5.0], [10.0, 11.0]]
    assert pool_hidden_state(-hidden, right, "max").tolist() == [[0.0, -1.0], [-6.0, -7.0]]


def test_prompt_reaches_every_layer(tiny_model_dir):
    import mteb
    from sentence_transformers import SentenceTransformer

    import mteb_finegrain  # noqa: F401

    model = SentenceTransformer(str(tiny_model_dir), device="cpu", prompts={"Classification": "ant0 ant0 "})
    encoder = LayerEncoder(model, show_progress_bar=False)
    metadata = mteb.get_task("FineGrainHiddenTREC").metadata  # type Classification
    assert encoder.prompt_for(metadata) == "ant0 ant0 "
    texts = ["oak1 the", "bee2 a"]
    plain = encoder.encode_layers(texts)
    prompted = encoder.encode_layers(texts, prompt=encoder.prompt_for(metadata))
    assert np.array_equal(prompted, encoder.encode_layers(["ant0 ant0 " + t for t in texts]))
    assert all(not np.allclose(prompted[k], plain[k]) for k in range(len(encoder.layers)))
    assert LayerEncoder(SentenceTransformer(str(tiny_model_dir), device="cpu"), show_progress_bar=False).prompt_for(metadata) is None
