"""The embedding cache: every split's pooled layer embeddings on disk, so re-scoring needs no model.

One entry holds one encoding call (a split, or a fixed set of few-shot texts) of one stage of one
model: ``<digest>.npy`` (layers, texts, dim) and ``<digest>.json`` (the key, the shape, a checksum
of the array). The key holds everything that determines the numbers: model and revision (a hash
of the weights when there is no revision), the stage (the coarse-tuned checkpoint's own key), the
card's data hash, the split and a hash of the exact list of texts (batch companions change
padding, hence the last bits), pooling, token limit, prompt, batch size, device, dtype and
library versions. The ``.json`` is written last and names the array's
checksum, so an entry from a killed or concurrent writer, or one damaged later, is never trusted:
it is recomputed and rewritten.

Which few-shot texts are encoded does not depend on the shots or seeds asked for (see
``runner.score_stage``), so a re-run with other shots or fewer seeds finds every call cached.
Each layer's clustering scores at each level are kept beside the embeddings
(``<digest>.scores.json``, keyed by a checksum of the embeddings, the labels and the seeds): they
do not depend on the few-shot settings, so a re-run that changes only those runs no k-means.
Off with ``MTEB_FINEGRAIN_EMBEDDING_CACHE=0`` (or ``run --no-embedding-cache``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mteb_finegrain.store import atomic_write, blake2b_array, blake2b_json, embeddings_dir, sha256_chunks, sha256_json, sha256_texts

if TYPE_CHECKING:
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.protocol import Protocol

logger = logging.getLogger(__name__)
ENABLED_ENV = "MTEB_FINEGRAIN_EMBEDDING_CACHE"
FORMAT = 1  # bump when the entry layout changes: older entries are then never read


def cache_enabled() -> bool:
    """False when ``MTEB_FINEGRAIN_EMBEDDING_CACHE`` is ``0``, ``false``, ``off`` or ``no``."""
    return os.environ.get(ENABLED_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def embedding_cache_dir() -> Path:
    """``<cache dir>/embeddings`` (see ``MTEB_FINEGRAIN_CACHE_DIR``)."""
    return embeddings_dir()


def texts_hash(texts: Sequence[str]) -> str:
    """Hash of an ordered list of texts (a split's rows)."""
    return sha256_texts(texts)


def array_checksum(array: np.ndarray) -> str:
    """Checksum of an array's bytes (what the cache entries and keys hold)."""
    return blake2b_array(array)


def _digest(key: dict) -> str:
    """The file name of an entry: the key's digest (paths, dtypes and the like as ``str``)."""
    return sha256_json(key, length=24, default=str)


def _values_checksum(values: Any) -> str:
    return blake2b_json(values)


class EmbeddingCache:
    """Entries of pooled layer embeddings under ``root`` (default: ``embedding_cache_dir()``)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else embedding_cache_dir()

    def _paths(self, key: dict) -> tuple[Path, Path]:
        digest = _digest(key)
        return self.root / f"{digest}.npy", self.root / f"{digest}.json"

    def load(self, key: dict) -> np.ndarray | None:
        """The array ``(layers, texts, dim)`` of an entry; None when absent or not trusted."""
        array_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            array = np.load(array_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            if meta_path.exists():
                logger.warning("Embedding cache entry %s is unreadable (%s): recomputing it", meta_path, exc)
            return None
        if meta.get("key") != json.loads(json.dumps(key, default=str)) or meta.get("checksum") != array_checksum(array) or list(array.shape) != meta.get("shape"):
            logger.warning("Embedding cache entry %s does not match its checksum or key: recomputing it", meta_path)
            return None
        return array

    def store(self, key: dict, array: np.ndarray) -> None:
        """Write an entry atomically: the array first, then the metadata that vouches for it."""
        array_path, meta_path = self._paths(key)
        meta = {"format": FORMAT, "key": key, "shape": list(array.shape), "checksum": array_checksum(array)}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(array_path, lambda out: np.save(out, array, allow_pickle=False))
            atomic_write(meta_path, lambda out: out.write(json.dumps(meta, default=str).encode()))
        except OSError as exc:
            # A cache that cannot be written only costs time: the run goes on without it.
            logger.warning("Cannot write the embedding cache entry %s (%s): continuing without caching it", meta_path, exc.strerror or exc)

    def _scores_path(self, key: dict) -> Path:
        return self.root / f"{_digest(key)}.scores.json"

    def load_scores(self, key: dict) -> dict[str, list[float]] | None:
        """Per-seed scores stored under ``key`` (see ``clustering_key``); None when absent or not trusted."""
        path = self._scores_path(key)
        try:
            entry = json.loads(path.read_text())
            values = entry["values"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if path.exists():
                logger.warning("Score cache entry %s is unreadable (%s): recomputing it", path, exc)
            return None
        if entry.get("key") != json.loads(json.dumps(key, default=str)) or entry.get("checksum") != _values_checksum(values):
            logger.warning("Score cache entry %s does not match its checksum or key: recomputing it", path)
            return None
        return values

    def store_scores(self, key: dict, values: dict[str, list[float]]) -> None:
        """Write per-seed scores atomically, with a checksum that vouches for them."""
        path = self._scores_path(key)
        entry = {"format": FORMAT, "key": key, "values": values, "checksum": _values_checksum(values)}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda out: out.write(json.dumps(entry, default=str).encode()))
        except OSError as exc:
            logger.warning("Cannot write the score cache entry %s (%s): continuing without caching it", path, exc.strerror or exc)

    def size(self) -> tuple[int, int]:
        """(embedding entries, bytes of everything) held under ``root``; see ``score_entries``."""
        if not self.root.is_dir():
            return 0, 0
        files = [p for p in self.root.iterdir() if p.is_file()]
        return sum(p.suffix == ".json" and not p.name.endswith(".scores.json") for p in files), sum(p.stat().st_size for p in files)

    def score_entries(self) -> int:
        """How many cached clustering results (one layer at one level each) ``root`` holds."""
        return len(list(self.root.glob("*.scores.json"))) if self.root.is_dir() else 0

    def clear(self) -> tuple[int, int]:
        """Remove every entry; return (entries, bytes) removed."""
        entries, size = self.size()
        if self.root.is_dir():
            for path in self.root.iterdir():
                if path.is_file():
                    path.unlink(missing_ok=True)
        return entries, size


def weights_fingerprint(encoder: LayerEncoder) -> str:
    """Hash of the model's parameters, for a model that names no revision."""
    state = sorted(encoder.sentence_transformer.state_dict().items())
    return sha256_chunks(chunk for name, tensor in state for chunk in (name.encode(), tensor.detach().cpu().contiguous().numpy().tobytes()))


class StageEmbeddings:
    """The pooled layer embeddings one stage scores, from the cache when it holds them.

    Parameters
    ----------
    load_encoder : callable
        Returns the stage's ``LayerEncoder``; called only when something must be encoded (a fully
        cached coarse-tuned stage never loads, let alone trains, its checkpoint).
    key : dict or None
        What determines this stage's embeddings (see the module docstring), without the split;
        None: no caching (a model without hidden states, or the cache switched off).
    prompt : str or None
    cache : EmbeddingCache or None
    **encode_context
        Passed to ``encode_layers``.
    """

    def __init__(self, load_encoder: Callable[[], LayerEncoder], key: dict | None, prompt: str | None = None, cache: EmbeddingCache | None = None, **encode_context: Any) -> None:
        self._load_encoder = load_encoder
        self._encoder: LayerEncoder | None = None
        self.key = key
        self.prompt = prompt
        self.cache = cache if cache is not None else (EmbeddingCache() if key is not None else None)
        self.encode_context = encode_context
        self.encoded_texts = 0  # texts this stage had to pass through the model
        self.encode_seconds = 0.0  # time in forward passes (not loading or training the model)

    @property
    def encoder(self) -> LayerEncoder:
        if self._encoder is None:
            self._encoder = self._load_encoder()
        return self._encoder

    def _encode(self, texts: list[str]) -> np.ndarray:
        encoder = self.encoder  # loaded (or trained) first, outside the timed forward passes
        started = time.perf_counter()
        embeddings = encoder.encode_layers(texts, prompt=self.prompt, **self.encode_context)
        self.encode_seconds += time.perf_counter() - started
        self.encoded_texts += len(texts)
        return embeddings

    def encode(self, name: str, texts: Sequence[str]) -> np.ndarray:
        """Every layer's embedding of ``texts`` (one encoding call of split ``name``): ``(layers, n, dim)``.

        Cached per exact list of texts: a text's embedding depends in its last bits on the texts
        it was batched with, so only the same call may be served from the cache.
        """
        texts = list(texts)
        if self.key is None or self.cache is None:
            return self._encode(texts)
        key = self.key | {"split": name, "texts": texts_hash(texts), "count": len(texts)}
        held = self.cache.load(key)
        if held is not None:
            return held
        array = self._encode(texts)
        self.cache.store(key, array)
        return array

def stage_key(encoder: LayerEncoder, stage: str | dict, data_hash: str, prompt: str | None) -> dict | None:
    """The cache key of one stage of ``encoder`` (None: not cacheable).

    ``stage`` is ``"pretrained"`` or the coarse-tuned checkpoint's key (which names the model,
    data, seed and training settings that made its weights).
    """
    if not encoder.has_hidden_states or not cache_enabled():
        return None
    import torch
    import transformers

    revision = encoder.mteb_model_meta.revision
    return {
        "format": FORMAT,
        "model": encoder.model_name,
        "revision": revision if revision else "weights:" + weights_fingerprint(encoder),
        "stage": stage,
        "data": data_hash,
        "pooling": encoder.pooling,
        "max_length": encoder.max_length,
        "prompt": prompt,
        "batch_size": encoder.batch_size,
        "device": encoder.device.type,
        "dtype": str(encoder.dtype),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),  # intra-op threads change reduction order, hence bits
        "transformers": transformers.__version__,
    }


def clustering_key(
    eval_x: np.ndarray,
    truth: Sequence[str],
    parents: Sequence[str] | None,
    seeds: Sequence[int],
    embeddings_checksum: str | None = None,
    protocol: Protocol | None = None,
) -> dict:
    """The cache key of one layer's clustering scores at one level.

    Clustering sees neither shots nor probes: k-means (one thread, fixed seeds) on the same
    embeddings against the same labels gives the same clusters, so a re-run that changes only the
    few-shot settings takes these scores from the cache. The key holds the embeddings themselves
    (a checksum of the array), the labels, the seeds, the clustering rules' version, the k-means
    settings and the libraries that compute them. ``embeddings_checksum``: the array's checksum
    when the caller already has it (every level of a layer shares the layer's embeddings).
    ``protocol``: the run's (None: the defaults); its k-means settings
    (``Protocol.clustering_options``) are in the key only where they differ from the defaults: a
    key without them means the defaults, so those keys stay valid.
    """
    import scipy
    import sklearn

    from mteb_finegrain.protocol import CLUSTERING_PROTOCOL, Protocol
    from mteb_finegrain.scoring.clustering import CLUSTERING_RULES

    defaults = Protocol().clustering_options()
    changed = {name: value for name, value in (protocol or Protocol()).clustering_options().items() if value != defaults[name]}
    key = {
        "format": FORMAT,
        "kind": "clustering",
        "rules": CLUSTERING_RULES,
        "protocol": CLUSTERING_PROTOCOL,  # the version that last changed clustering
        "embeddings": embeddings_checksum or array_checksum(eval_x),
        "shape": list(eval_x.shape),
        "dtype": str(eval_x.dtype),
        "labels": texts_hash(truth),
        "parents": texts_hash(parents) if parents is not None else None,
        "seeds": list(seeds),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
    }
    if changed:
        key["kmeans"] = changed
    return key


def describe_size() -> str:
    """``N entries and K clustering results, M MB in DIR`` for the embedding cache."""
    cache = EmbeddingCache()
    entries, size = cache.size()
    return f"{entries} entries and {cache.score_entries()} clustering results, {size / 2**20:.1f} MB in {cache.root}"

