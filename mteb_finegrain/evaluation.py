"""Scoring one stage of one model on one card: every layer, every metric, every seed.

Each split is encoded once for all layers (``LayerEncoder.encode_layers``); the few-shot samples
are drawn once per seed and shared by all layers, so layers differ only in their embeddings.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from mteb_finegrain.data import CardData
from mteb_finegrain.encoder import LayerEncoder
from mteb_finegrain.protocol import Protocol
from mteb_finegrain.scoring.clustering import clustering_scores, within_coarse_v_measure
from mteb_finegrain.scoring.fewshot_probe import fewshot_indices, probe_scores

logger = logging.getLogger(__name__)


@dataclass
class StageScores:
    """Result of one stage.

    Attributes
    ----------
    records : list of dict
        ``{stage, layer, metric, shots, value, std}`` on the evaluation split.
    validation : dict
        Layer -> mean ``main_shots``-shot probe accuracy on the validation split.
    selected_layer : int
        The layer with the best validation score (ties: the lower layer).
    """

    records: list[dict]
    validation: dict[int, float]
    selected_layer: int


def _record(stage: str, layer: int, metric: str, values: list[float], shots: int | None = None) -> dict:
    return {
        "stage": stage,
        "layer": layer,
        "metric": metric,
        "shots": shots,
        "value": float(np.mean(values)),
        "std": float(np.std(values)),
    }


def _normalise(embeddings: np.ndarray) -> np.ndarray:
    # Cosine geometry for every layer: raw hidden-state norms differ a lot between layers.
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def _n_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def resolve_layers(encoder: LayerEncoder, protocol: Protocol) -> list[int]:
    """The layers to score: all of the encoder's, or the protocol's after a range check."""
    if protocol.layers is None:
        return encoder.layers
    return [encoder.check_layer(layer) for layer in protocol.layers]


def score_stage(
    encoder: LayerEncoder,
    data: CardData,
    protocol: Protocol,
    stage: str,
    show_progress_bar: bool = True,
    **encode_context,
) -> StageScores:
    """Score every selected layer of ``encoder`` on ``data``.

    Parameters
    ----------
    encoder : LayerEncoder
    data : CardData
    protocol : Protocol
    stage : str
        Label written into the records (``pretrained`` or ``coarse_tuned``).
    show_progress_bar : bool, default=True
    **encode_context
        Passed to ``encode_layers`` (only models without hidden states use it).

    Returns
    -------
    StageScores
    """
    layers = resolve_layers(encoder, protocol)
    positions = [encoder.layers.index(layer) for layer in layers]
    samples = {seed: fewshot_indices(data.fewshot_pool.fine, protocol.shots, seed) for seed in protocol.probe_seed_list}
    needed = sorted({i for per_seed in samples.values() for idx in per_seed.values() for i in idx})
    where = {pool_index: row for row, pool_index in enumerate(needed)}
    pool_labels = np.asarray(data.fewshot_pool.fine)

    def encode(texts):
        return encoder.encode_layers(texts, **encode_context)[positions]

    logger.info("Encoding %d evaluation, %d validation, %d few-shot texts", len(data.evaluation), len(data.validation), len(needed))
    eval_x = encode(data.evaluation.texts)
    valid_x = encode(data.validation.texts)
    pool_x = encode([data.fewshot_pool.texts[i] for i in needed])

    records: list[dict] = []
    validation: dict[int, float] = {}
    for k, layer in enumerate(tqdm(layers, desc=f"Scoring layers ({stage})", disable=not show_progress_bar)):
        unit = _normalise(eval_x[k])  # k-means on cosine geometry; the probes standardise their own inputs
        clustering = clustering_scores(unit, data.evaluation.fine, protocol.clustering_seed_list)
        for metric, values in clustering.items():
            records.append(_record(stage, layer, metric, values))
        within = within_coarse_v_measure(unit, data.evaluation.coarse, data.evaluation.fine, protocol.clustering_seed_list)
        records.append(_record(stage, layer, "within_coarse_v_measure", within))
        # Every probe of this layer (each shot count and seed, plus the validation probes) is an
        # independent single-threaded fit: run them on all cores at once.
        jobs = [(n, seed, "evaluation") for n in protocol.shots for seed in samples]
        jobs += [(protocol.main_shots, seed, "validation") for seed in samples]
        outcomes = Parallel(n_jobs=_n_jobs())(
            delayed(probe_scores)(
                pool_x[k][[where[i] for i in samples[seed][n]]],
                pool_labels[samples[seed][n]],
                eval_x[k] if target == "evaluation" else valid_x[k],
                data.evaluation.fine if target == "evaluation" else data.validation.fine,
                seed,
            )
            for n, seed, target in jobs
        )
        by_job = dict(zip(jobs, outcomes))
        for n in protocol.shots:
            runs = [by_job[(n, seed, "evaluation")] for seed in samples]
            records.append(_record(stage, layer, "probe_accuracy", [acc for acc, _ in runs], n))
            records.append(_record(stage, layer, "probe_f1_macro", [f1 for _, f1 in runs], n))
        valid_scores = [by_job[(protocol.main_shots, seed, "validation")][0] for seed in samples]
        validation[layer] = float(np.mean(valid_scores))
    selected = max(layers, key=lambda layer: (validation[layer], -layer))
    return StageScores(records, validation, selected)
