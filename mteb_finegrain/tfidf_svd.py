"""The TF-IDF + SVD control of the leaderboard, registered with mteb as ``mteb-finegrain/tfidf-svd``.

Non-neural: TF-IDF + truncated SVD (latent semantic analysis), fitted on a fixed corpus. It has one
"layer" (``-1``) and only the ``pretrained`` stage.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ScoringFunction

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.store import sha256_json

if TYPE_CHECKING:
    from collections.abc import Iterable

    from torch.utils.data import DataLoader

TFIDF_SVD_NAME = "mteb-finegrain/tfidf-svd"
# Fixed settings (part of the revision). Word uni- and bigrams with sublinear term frequency;
# min_df=1 so that small user cards still get a vocabulary.
TFIDF_SETTINGS = {"lowercase": True, "strip_accents": "unicode", "ngram_range": [1, 2], "min_df": 1, "max_df": 1.0, "sublinear_tf": True, "norm": "l2"}
SVD_SETTINGS = {"n_components": 256, "algorithm": "randomized", "n_iter": 5, "random_state": 0}


def _tfidf_svd_revision() -> str:
    """``sklearn<version>-<hash of the settings>``: changes whenever the embeddings may change."""
    settings = {"tfidf": TFIDF_SETTINGS, "svd": SVD_SETTINGS, "l2_normalised": True}
    # importlib.metadata, not ``import sklearn``: this runs at plugin registration, on every mteb import.
    return f"sklearn{metadata.version('scikit-learn')}-{sha256_json(settings, length=8)}"


class TfidfSvdEncoder(AbsEncoder):
    """Non-neural control: TF-IDF (``TfidfVectorizer``) + ``TruncatedSVD``, L2-normalised.

    It must be fitted on a fixed corpus before it encodes: :meth:`fit`. The FineGrainHidden task
    does so with each card's ``coarse_train`` texts (texts only, never labels) because the class
    sets ``fit_on_coarse_train_texts``; fitting on whatever is being encoded would give the
    evaluation, validation and few-shot texts different spaces.

    Parameters
    ----------
    model_name : str, default="mteb-finegrain/tfidf-svd"
        Ignored; mteb's loader passes it.
    revision : str or None, default=None
        Ignored; the revision is fixed by the settings (see ``mteb_model_meta``).
    **kwargs
        Ignored (e.g. ``device``: this encoder runs on the CPU).
    """

    fit_on_coarse_train_texts = True

    def __init__(self, model_name: str = TFIDF_SVD_NAME, revision: str | None = None, **kwargs: Any) -> None:
        self.mteb_model_meta = tfidf_svd_model_meta()
        self.vectorizer = None
        self.svd = None

    def fit(self, texts: Iterable[str]) -> TfidfSvdEncoder:
        """Learn the vocabulary, IDF weights and SVD projection from ``texts``.

        ``n_components`` is 256, or fewer when the corpus has fewer documents or terms.

        Parameters
        ----------
        texts : iterable of str

        Returns
        -------
        TfidfSvdEncoder
            ``self``.
        """
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = list(texts)
        if not texts:
            raise FineGrainError("TfidfSvdEncoder.fit needs at least one text")
        vectorizer = TfidfVectorizer(**{**TFIDF_SETTINGS, "ngram_range": tuple(TFIDF_SETTINGS["ngram_range"])})
        matrix = vectorizer.fit_transform(texts)
        # TruncatedSVD needs n_components < min(n_documents, n_terms).
        n_components = max(1, min(SVD_SETTINGS["n_components"], min(matrix.shape) - 1))
        svd = TruncatedSVD(**{**SVD_SETTINGS, "n_components": n_components})
        svd.fit(matrix)
        self.vectorizer, self.svd = vectorizer, svd
        return self

    @property
    def dim(self) -> int | None:
        """Embedding dimension once fitted, else None."""
        return None if self.svd is None else int(self.svd.n_components)

    def encode_texts(self, texts: Iterable[str]) -> np.ndarray:
        """L2-normalised SVD projections of the TF-IDF vectors, ``(n_texts, dim)`` float32."""
        if self.svd is None:
            raise FineGrainError("TfidfSvdEncoder is not fitted: call fit(texts) on a fixed corpus first")
        projected = self.svd.transform(self.vectorizer.transform(list(texts)))
        norms = np.linalg.norm(projected, axis=1, keepdims=True)
        # A text with no known term projects to zero: leave it at zero rather than divide by it.
        return (projected / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def encode(self, inputs: DataLoader, *, task_metadata: Any, hf_split: str, hf_subset: str, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """MTEB encoder interface: batches are dicts with a ``"text"`` list."""
        return self.encode_texts(text for batch in inputs for text in batch["text"])


def tfidf_svd_model_meta() -> ModelMeta:
    """The ``ModelMeta`` of ``mteb-finegrain/tfidf-svd`` (registered with mteb by the plugin)."""
    return ModelMeta.create_empty(
        overwrites={
            "name": TFIDF_SVD_NAME,
            "revision": _tfidf_svd_revision(),
            "loader": TfidfSvdEncoder,
            "framework": ["NumPy"],
            "embed_dim": SVD_SETTINGS["n_components"],
            "open_weights": True,
            "similarity_fn_name": ScoringFunction.COSINE,
            "reference": "https://scikit-learn.org/stable/modules/generated/sklearn.decomposition.TruncatedSVD.html",
        }
    )
