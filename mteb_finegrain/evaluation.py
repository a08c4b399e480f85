"""Scoring one stage of one model on one card: every layer, every level, every metric, every seed.

Each split is encoded once for all layers (``LayerEncoder.encode_layers``), or read from the
embedding cache; the few-shot samples are drawn once per seed and shared by all layers, so layers
differ only in their embeddings. Scoring runs one job per (layer, level) on every core.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from mteb_finegrain.data import CardData
from mteb_finegrain.embedding_cache import StageEmbeddings, array_checksum, clustering_key
from mteb_finegrain.encoder import LayerEncoder
from mteb_finegrain.protocol import Protocol
from mteb_finegrain.scoring.fewshot_probe import fewshot_indices, warm_start_ladder
from mteb_finegrain.scoring.layer_level import LevelJob, score_layer_level
from mteb_finegrain.scoring.workers import n_scoring_jobs, wait_for_scoring_workers

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
    scoring_seconds : float
        Wall time of the scoring (clustering and probes), not of the embeddings.
    clustering_cached : int
        (layer, level) clustering results taken from the score cache instead of computed.
    """

    records: list[dict]
    validation: dict[int, float]
    selected_layer: int
    scoring_seconds: float = 0.0
    clustering_cached: int = 0


def _fewshot_encoding_calls(data: CardData, protocol: Protocol, samples: dict) -> list[list[int]]:
    """The few-shot pool indices to encode, as the list of separate encoding calls (see score_stage)."""
    finest = len(data.level_names) - 1
    default = Protocol(seed=protocol.seed)
    canonical = {
        (depth, seed): fewshot_indices(data.fewshot_pool.levels[depth], default.shots, seed)
        for depth in range(len(data.level_names))
        for seed in default.probe_seed_list
    }

    def indices(chosen: dict, fine: bool) -> set[int]:
        return {i for (depth, _), per_n in chosen.items() if (depth == finest) == fine for idx in per_n.values() for i in idx}

    calls, seen = [], set()
    for chosen in (canonical, samples):
        for fine in (True, False):
            call = sorted(indices(chosen, fine) - seen)
            if call:
                calls.append(call)
                seen.update(call)
    return calls


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
    embeddings: StageEmbeddings | None = None,
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
    embeddings : StageEmbeddings or None
        Where the embeddings come from (the embedding cache, else ``encoder``); None encodes
        every split with ``encoder``, uncached.
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
    # Few-shot samples per level and seed: drawn from the labels alone, shared by every layer; also
    # for the shot counts the asked-for probes warm-start from (nested: no further texts).
    fitted_shots = warm_start_ladder(protocol.shots) if protocol.probe_warm_start else list(protocol.shots)
    samples = {
        (depth, seed): fewshot_indices(data.fewshot_pool.levels[depth], fitted_shots, seed)
        for depth, _ in levels
        for seed in protocol.probe_seed_list
    }
    # Which few-shot texts are encoded, and in which calls, never depends on the shots or seeds
    # asked for: batch composition changes padding, hence the last float bits of an embedding, so
    # a text must always be encoded with the same companions for a cached re-run to give the numbers
    # of a fresh run. The calls are fixed by the default shots and seeds (protocol 2.0's calls):
    # that set's finest-level texts, then its coarser levels' other texts; only texts beyond it
    # (more shots or seeds than the default) are encoded in further calls.
    batches = _fewshot_encoding_calls(data, protocol, samples)
    where = {pool_index: row for row, pool_index in enumerate(i for call in batches for i in call)}
    if embeddings is None:
        embeddings = StageEmbeddings(lambda: encoder, key=None, prompt=prompt, **encode_context)
    logger.info("Embeddings of %d evaluation, %d validation, %d few-shot texts", len(data.evaluation), len(data.validation), len(where))
    eval_x = embeddings.encode("evaluation", data.evaluation.texts)[positions]
    valid_x = embeddings.encode("validation", data.validation.texts)[positions]
    pool_x = np.concatenate([embeddings.encode("fewshot_pool", [data.fewshot_pool.texts[i] for i in call])[positions] for call in batches], axis=1)

    # Every (layer, level) is one job: k-means, within-parent k-means and every probe of that
    # level, in a worker process limited to one thread (L-BFGS holds the GIL, so threads would
    # not run in parallel; and single-threaded k-means gives the same result on every machine).
    # Largest jobs first, so that the last to finish is a small one: the finest level's, top layer
    # first (after coarse tuning the top layers' fine probes converge slowest: CLINC150's layer 6
    # job takes 14 s against layer 0's 5 s, and started last it left one core idle at the end).
    jobs = sorted(((k, depth) for k in range(len(layers)) for depth, _ in levels), key=lambda job: (-job[1], -job[0]))
    # Clustering depends on neither shots nor probes: kept beside the cached embeddings, it is
    # looked up here, so that a re-run with other few-shot settings runs no k-means.
    started = time.perf_counter()
    score_cache = embeddings.cache if embeddings.key is not None else None
    cache_keys, cached = {}, {}
    if score_cache is not None:
        layer_checksums = [array_checksum(layer_x) for layer_x in eval_x]  # once a layer, not once a level
        for k, depth in jobs:
            parents = data.evaluation.levels[depth - 1] if depth > 0 else None
            cache_keys[(k, depth)] = clustering_key(eval_x[k], data.evaluation.levels[depth], parents, protocol.clustering_seed_list, embeddings_checksum=layer_checksums[k])
            values = score_cache.load_scores(cache_keys[(k, depth)])
            if values is not None:
                cached[(k, depth)] = values
    seeds = protocol.probe_seed_list
    arguments = [
        LevelJob(
            stage=stage,
            layer=layers[k],
            level=data.level_names[depth],
            truth=data.evaluation.levels[depth],
            parents=data.evaluation.levels[depth - 1] if depth > 0 else None,
            eval_x=eval_x[k],
            # The few-shot rows of this level (every seed and shot count), looked up once here.
            pool_rows={(seed, n): pool_x[k][[where[i] for i in samples[(depth, seed)][n]]] for seed in seeds for n in fitted_shots},
            pool_labels={(seed, n): [data.fewshot_pool.levels[depth][i] for i in samples[(depth, seed)][n]] for seed in seeds for n in fitted_shots},
            valid_x=valid_x[k] if depth == finest else None,
            valid_truth=data.validation.levels[depth] if depth == finest else None,
            shots=protocol.shots,
            main_shots=protocol.main_shots,
            warm_start=protocol.probe_warm_start,
            probe_seeds=seeds,
            clustering_seeds=protocol.clustering_seed_list,
            clustering_values=cached.get((k, depth)),
        )
        for k, depth in jobs
    ]
    wait_for_scoring_workers()  # started early by the CLI (spawned while the model loaded)
    outcomes = Parallel(n_jobs=min(n_scoring_jobs(), len(jobs)), return_as="generator")(delayed(score_layer_level)(job) for job in arguments)
    done = dict(zip(jobs, list(tqdm(outcomes, total=len(jobs), desc=f"Scoring layers ({stage})", disable=not show_progress_bar))))
    for job, key in cache_keys.items():
        if job not in cached:
            score_cache.store_scores(key, done[job].clustering_values)
    records: list[dict] = []
    validation: dict[int, float] = {}
    for k, layer in enumerate(layers):
        per_level = [done[(k, depth)] for depth, _ in levels]
        records.extend(r for outcome in per_level for r in outcome.clustering)
        records.extend(r for outcome in per_level for r in outcome.probes)
        validation[layer] = per_level[finest].validation
    selected = max(layers, key=lambda layer: (validation[layer], -layer))
    return StageScores(records, validation, selected, time.perf_counter() - started, len(cached))
