import numpy as np
import pytest
import torch

from mteb_finegrain.encoder import LayerEncoder
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
        LayerEncoder(tiny_st, pooling="max")


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
