"""Scoring one stage of one model on one card: every layer, every level, every metric, every seed.

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
        ``{stage, level, layer, metric, shots, value, std}`` on the evaluation split.
    validation : dict
        Layer -> mean ``main_shots``-shot probe accuracy at the finest level on the validation
        split.
    selected_layer : int
        The layer with the best validation score (ties: the lower layer).
    """

    records: list[dict]
    validation: dict[int, float]
    selected_layer: int


def _record(stage: str, level: str, layer: int, metric: str, values: list[float], shots: int | None = None) -> dict:
    return {
        "stage": stage,
        "level": level,
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
    prompt: str | None = None,
    **encode_context,
) -> StageScores:
    """Score every selected layer of ``encoder`` on ``data``, at every level of the hierarchy.

    Per level: k-means scores against that level's labels, within-parent V-measure (every level
    but the coarsest) and few-shot probes with ``n`` examples per class of that level. The layer
    choice uses the finest level's validation probes.

    Parameters
    ----------
    encoder : LayerEncoder
    data : CardData
    protocol : Protocol
    stage : str
        Label written into the records (``pretrained`` or ``coarse_tuned``).
    show_progress_bar : bool, default=True
    prompt : str or None
        Put before every text (the model's own prompt for the task).
    **encode_context
        Passed to ``encode_layers`` (only models without hidden states use it).

    Returns
    -------
    StageScores
    """
    layers = resolve_layers(encoder, protocol)
    positions = [encoder.layers.index(layer) for layer in layers]
    levels = list(enumerate(data.level_names))
    finest = len(levels) - 1
    # Few-shot samples per level and seed: drawn from the labels alone, shared by every layer.
    samples = {
        (depth, seed): fewshot_indices(data.fewshot_pool.levels[depth], protocol.shots, seed)
        for depth, _ in levels
        for seed in protocol.probe_seed_list
    }
    # The finest level's texts are encoded on their own, in the same batches as in protocol 1
    # (batch composition changes padding, hence the last float bits), the coarser levels' extra
    # texts after them.
    fine_needed = sorted({i for (depth, _), per_n in samples.items() if depth == finest for idx in per_n.values() for i in idx})
    extra = sorted({i for per_n in samples.values() for idx in per_n.values() for i in idx} - set(fine_needed))
    needed = fine_needed + extra
    where = {pool_index: row for row, pool_index in enumerate(needed)}

    def encode(texts):
        return encoder.encode_layers(texts, prompt=prompt, **encode_context)[positions]

    logger.info("Encoding %d evaluation, %d validation, %d few-shot texts", len(data.evaluation), len(data.validation), len(needed))
    eval_x = encode(data.evaluation.texts)
    valid_x = encode(data.validation.texts)
    pool_x = encode([data.fewshot_pool.texts[i] for i in fine_needed])
    if extra:
        pool_x = np.concatenate([pool_x, encode([data.fewshot_pool.texts[i] for i in extra])], axis=1)

    records: list[dict] = []
    validation: dict[int, float] = {}
    seeds = protocol.probe_seed_list
    for k, layer in enumerate(tqdm(layers, desc=f"Scoring layers ({stage})", disable=not show_progress_bar)):
        unit = _normalise(eval_x[k])  # k-means on cosine geometry; the probes standardise their own inputs
        for depth, level in levels:
            truth = data.evaluation.levels[depth]
            for metric, values in clustering_scores(unit, truth, protocol.clustering_seed_list).items():
                records.append(_record(stage, level, layer, metric, values))
            if depth > 0:
                within = within_coarse_v_measure(unit, data.evaluation.levels[depth - 1], truth, protocol.clustering_seed_list)
                records.append(_record(stage, level, layer, "within_coarse_v_measure", within))
        # Every probe of this layer (each level, shot count and seed, plus the validation probes)
        # is an independent single-threaded fit: run them on all cores at once.
        jobs = [(depth, n, seed, "evaluation") for depth, _ in levels for n in protocol.shots for seed in seeds]
        jobs += [(finest, protocol.main_shots, seed, "validation") for seed in seeds]
        outcomes = Parallel(n_jobs=_n_jobs())(
            delayed(probe_scores)(
                pool_x[k][[where[i] for i in samples[(depth, seed)][n]]],
                [data.fewshot_pool.levels[depth][i] for i in samples[(depth, seed)][n]],
                eval_x[k] if target == "evaluation" else valid_x[k],
                (data.evaluation if target == "evaluation" else data.validation).levels[depth],
                seed,
            )
            for depth, n, seed, target in jobs
        )
        by_job = dict(zip(jobs, outcomes))
        for depth, level in levels:
            for n in protocol.shots:
                runs = [by_job[(depth, n, seed, "evaluation")] for seed in seeds]
                records.append(_record(stage, level, layer, "probe_accuracy", [acc for acc, _ in runs], n))
                records.append(_record(stage, level, layer, "probe_f1_macro", [f1 for _, f1 in runs], n))
        valid_scores = [by_job[(finest, protocol.main_shots, seed, "validation")][0] for seed in seeds]
        validation[layer] = float(np.mean(valid_scores))
    selected = max(layers, key=lambda layer: (validation[layer], -layer))
    return StageScores(records, validation, selected)
