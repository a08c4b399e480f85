"""Layer extraction: ``LayerEncoder`` pools every hidden state of a model in one forward pass.

Layer 0 is the embedding output, layer L the last transformer layer. Token states live only for
one batch: each batch is pooled straight into a ``(layers, texts, dim)`` float32 array. With
``layer=k`` the object is an ordinary MTEB encoder returning layer k, so any MTEB task can score
any layer of any model.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from tqdm.auto import tqdm

from mteb_finegrain.errors import FineGrainError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

# What a LayerEncoder can be asked for: "model" applies the model's own sentence-transformers
# Pooling mode to every layer. The modes it can resolve to are POOLING_MODES.
POOLING_MODES = ("mean", "cls", "lasttoken", "max")
POOLINGS = (*POOLING_MODES, "model")


def pool_hidden_state(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states ``(batch, tokens, dim)`` to ``(batch, dim)``.

    ``mean`` averages the non-padding tokens (as sentence-transformers' Pooling does); ``cls``
    takes the first token; ``lasttoken`` the last non-padding token (left or right padding);
    ``max`` the per-dimension maximum over non-padding tokens.
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "lasttoken":
        # The last position whose mask is 1, found from the right, works for both paddings.
        flipped = attention_mask.flip(dims=[1]).to(torch.long).argmax(dim=1)
        last = attention_mask.shape[1] - 1 - flipped
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "max":
        masked = hidden.masked_fill(attention_mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min)
        return masked.max(dim=1).values
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _sentence_transformer_of(model: Any) -> SentenceTransformer | None:
    """The SentenceTransformer inside ``model`` (itself, or mteb's wrapper of one), else None."""
    from sentence_transformers import SentenceTransformer

    if isinstance(model, SentenceTransformer):
        return model
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, SentenceTransformer) else None


class LayerEncoder(AbsEncoder):
    """Encode texts with the pooled hidden state of every layer of a transformer.

    Parameters
    ----------
    model : str, SentenceTransformer or MTEB encoder
        A Hugging Face model id or local directory, a ``SentenceTransformer``, or the model object
        mteb hands a task. A model that exposes no hidden states (an API model) is used for its
        final embedding only: it then has one "layer", ``-1``.
    layer : int or None, default=None
        Layer returned by :meth:`encode` (MTEB encoder use). None means the last layer.
    pooling : {"mean", "cls", "model"}, default="mean"
        How token states become one vector: mean over non-padding tokens, the first token, or
        the model's own sentence-transformers Pooling mode (cls, mean, lasttoken or max) applied
        to every layer. ``pooling_setting`` keeps what was asked, ``pooling`` what is applied.
    batch_size : int, default=32
    revision : str or None, default=None
        Model revision when ``model`` is a hub id.
    device : str or None, default=None
    show_progress_bar : bool, default=True
    """

    def __init__(
        self,
        model: Any,
        *,
        layer: int | None = None,
        pooling: str = "mean",
        batch_size: int = 32,
        revision: str | None = None,
        device: str | None = None,
        show_progress_bar: bool = True,
    ) -> None:
        if pooling not in POOLINGS:
            raise FineGrainError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling_setting = pooling
        if not isinstance(batch_size, int) or batch_size < 1:
            raise FineGrainError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(model, str):
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(model, revision=revision, device=device)
        self.source = model
        self.pooling = pooling
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.sentence_transformer = _sentence_transformer_of(model)
        self._transformer = None
        if self.sentence_transformer is not None:
            first = self.sentence_transformer[0]
            auto_model = getattr(first, "auto_model", None)
            if auto_model is not None and getattr(auto_model, "config", None) is not None:
                self._transformer = auto_model
        if self._transformer is None and not hasattr(model, "encode"):
            raise FineGrainError(f"cannot encode with {type(model).__name__}: it has no encode()")
        self.mteb_model_meta = self._model_meta(model)
        self.pooling = self._model_pooling() if pooling == "model" and self.has_hidden_states else pooling
        self.layer = self.check_layer(layer) if layer is not None else self.layers[-1]

    def _model_pooling(self) -> str:
        """The pooling mode of the model's own sentence-transformers Pooling module."""
        modules = list(self.sentence_transformer) if self.sentence_transformer is not None else []
        modes = [getattr(m, "get_config_dict", dict)().get("pooling_mode") for m in modules]
        modes = [mode for mode in modes if mode]
        if not modes:
            raise FineGrainError(f"pooling 'model': {self.model_name} has no sentence-transformers Pooling module to take the pooling from; use 'mean' or 'cls'")
        if modes[0] not in POOLING_MODES:
            raise FineGrainError(f"pooling 'model': {self.model_name} pools with {modes[0]!r}, which per-layer pooling does not support ({', '.join(POOLING_MODES)})")
        return modes[0]

    def prompt_for(self, task_metadata: Any, prompt_type: Any = None) -> str | None:
        """The prompt the model's own mteb encoder would put before each text of this task.

        mteb's prompt selection (task name, task type, prompt type) over the model's prompts
        (those of mteb's wrapper, else the sentence-transformers model's), then the model's
        ``default_prompt_name`` as sentence-transformers falls back to it. None: no prompt.
        """
        st = self.sentence_transformer
        if task_metadata is None or st is None:
            return None
        from mteb.models.abs_encoder import get_prompt_name

        prompts = getattr(self.source, "model_prompts", None)
        if prompts is None:
            prompts = {k: v for k, v in (getattr(st, "prompts", None) or {}).items() if v is not None}
        name = get_prompt_name(prompts, task_metadata, prompt_type) if prompts else None
        prompt = prompts.get(name) if name else None
        if prompt is None and getattr(st, "default_prompt_name", None):
            prompt = (st.prompts or {}).get(st.default_prompt_name)
        return prompt or None

    # -- what the model offers -------------------------------------------------------------
    @property
    def has_hidden_states(self) -> bool:
        """Whether the model exposes per-layer hidden states (False for API models)."""
        return self._transformer is not None

    @property
    def layers(self) -> list[int]:
        """Scorable layers: ``0..L`` (0 = embedding output), or ``[-1]`` = final embedding only."""
        if not self.has_hidden_states:
            return [-1]
        return list(range(self._transformer.config.num_hidden_layers + 1))

    def check_layer(self, layer: int) -> int:
        """Return ``layer`` if this model has it, else raise a FineGrainError naming the valid range."""
        if layer not in self.layers:
            raise FineGrainError(
                f"layer {layer} is out of range for {self.model_name}: "
                f"valid layers are {self.layers[0]}..{self.layers[-1]}"
            )
        return layer

    @property
    def model_name(self) -> str:
        return self.mteb_model_meta.name or "unknown-model"

    def with_layer(self, layer: int) -> LayerEncoder:
        """A copy that shares the model and returns ``layer`` from :meth:`encode`."""
        clone = copy.copy(self)
        clone.layer = clone.check_layer(layer)
        return clone

    def _model_meta(self, model: Any) -> ModelMeta:
        meta = getattr(model, "mteb_model_meta", None)
        if isinstance(meta, ModelMeta):
            return meta
        if self.sentence_transformer is not None:
            # fill_missing=None: mteb 2.26 flags its own default (False) as the deprecated parameter.
            meta = ModelMeta.from_sentence_transformer_model(self.sentence_transformer, fill_missing=None, fetch_from_hf=False)
            if meta.name is None:
                path = getattr(self._transformer, "name_or_path", None) or getattr(
                    getattr(self._transformer, "config", None), "_name_or_path", None
                )
                meta = meta.model_copy(update={"name": path or "unknown-model"})
            return meta
        return ModelMeta.create_empty(overwrites={"name": type(model).__name__})

    @property
    def device(self) -> torch.device | None:
        """Where the model's weights are (None without hidden states)."""
        return next(self._transformer.parameters()).device if self.has_hidden_states else None

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of the model's weights, which encoding computes in (None without hidden states)."""
        return next(self._transformer.parameters()).dtype if self.has_hidden_states else None

    @property
    def max_length(self) -> int | None:
        """Tokens per text that encoding keeps (the model's ``max_seq_length``); None without hidden states."""
        return self.sentence_transformer.max_seq_length if self.has_hidden_states else None

    def truncation(self, texts: Sequence[str]) -> dict:
        """How many of ``texts`` are longer than the tokens encoding keeps.

        Returns ``{"max_length", "texts", "truncated"}``; ``truncated`` is None for a model
        without hidden states (its tokenizer is not ours to see).
        """
        texts = list(texts)
        out = {"max_length": self.max_length, "texts": len(texts), "truncated": None}
        if self.has_hidden_states:
            ids = self.sentence_transformer.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
            out["truncated"] = sum(len(row) > self.max_length for row in ids)
        return out

    # -- encoding ------------------------------------------------------------------------------
    def encode_layers(self, texts: Sequence[str], prompt: str | None = None, **encode_context: Any) -> np.ndarray:
        """Pooled embeddings of every layer in one pass.

        Parameters
        ----------
        texts : sequence of str
        prompt : str or None
            Put before every text (as sentence-transformers does with a prompt), so that every
            layer sees the text the model's own encoder would see.
        **encode_context
            ``task_metadata``, ``hf_split``, ``hf_subset``: passed on to a model without hidden
            states, whose own ``encode`` needs them.

        Returns
        -------
        numpy.ndarray of shape (n_layers, n_texts, dim), float32
        """
        texts = list(texts)
        if not self.has_hidden_states:
            return self._encode_final_only(texts, **encode_context)[None]
        if prompt:
            texts = [prompt + text for text in texts]
        transformer = self._transformer
        tokenizer = self.sentence_transformer.tokenizer
        max_length = self.sentence_transformer.max_seq_length
        device = self.device
        n_layers = len(self.layers)
        out = np.empty((n_layers, len(texts), transformer.config.hidden_size), dtype=np.float32)
        # Longest first, as SentenceTransformer.encode does: batches of similar length pad little.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        was_training = transformer.training
        transformer.eval()
        try:
            with torch.inference_mode():
                starts = range(0, len(texts), self.batch_size)
                for start in tqdm(starts, desc="Encoding all layers", disable=not self.show_progress_bar):
                    idx = order[start : start + self.batch_size]
                    batch = tokenizer(
                        [texts[i] for i in idx],
                        padding=True,
                        truncation=True,
                        max_length=max_length,
                        return_tensors="pt",
                    ).to(device)
                    hidden = transformer(**batch, output_hidden_states=True, return_dict=True).hidden_states
                    for k, state in enumerate(hidden):
                        pooled = pool_hidden_state(state, batch["attention_mask"], self.pooling)
                        out[k, idx] = pooled.float().cpu().numpy()
        finally:
            transformer.train(was_training)
        return out

    def _encode_final_only(self, texts: list[str], **encode_context: Any) -> np.ndarray:
        from mteb._create_dataloaders import _create_dataloader_from_texts

        loader = _create_dataloader_from_texts(texts, batch_size=self.batch_size)
        context = {"task_metadata": None, "hf_split": "test", "hf_subset": "default"} | encode_context
        return np.asarray(self.source.encode(loader, **context), dtype=np.float32)

    def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """MTEB encoder interface: the pooled embedding of ``self.layer``."""
        texts = [text for batch in inputs for text in batch["text"]]
        prompt = self.prompt_for(task_metadata, prompt_type)
        embeddings = self.encode_layers(texts, prompt=prompt, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset)
        return embeddings[self.layers.index(self.layer)]
