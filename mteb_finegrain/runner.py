"""The engine: one model on one card's data, every stage and layer, to one subset's result.

:func:`run_subset` runs the protocol's stages (pretrained, then coarse_tuned: a copy of the
model fine-tuned on coarse labels, trained or taken from the checkpoint cache), scores each with
:func:`score_stage`, takes the main score at the layer the validation split selects, and returns
the result as :class:`~mteb_finegrain.schema.SubsetScores`. It knows nothing of mteb's task
machinery: ``task.AbsTaskFineGrainHidden`` hands it an encoder and the card's data.

Each split is encoded once for all layers (``LayerEncoder.encode_layers``), or read from the
embedding cache; the few-shot samples are drawn once per seed and shared by all layers, so layers
differ only in their embeddings. Scoring runs one job per (layer, level) on every core.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from mteb_finegrain.cards import TaskCard
from mteb_finegrain.coarse_tuning import coarse_tuned_encoder, stage_checkpoint_key
from mteb_finegrain.data import CardData
from mteb_finegrain.embedding_cache import StageEmbeddings, array_checksum, clustering_key, stage_key
from mteb_finegrain.encoder import LayerEncoder
from mteb_finegrain.protocol import MAIN_SCORE, PROTOCOL_VERSION, Protocol
from mteb_finegrain.results import records_by_key
from mteb_finegrain.runtime import runtime_record
from mteb_finegrain.schema import SubsetScores
from mteb_finegrain.scoring.fewshot_probe import fewshot_indices, warm_start_ladder
from mteb_finegrain.scoring.layer_level import LevelJob, LevelScores, score_layer_level
from mteb_finegrain.scoring.setfit_fewshot import setfit_records
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
    convergence_warnings : int
        Probe fits of this stage that stopped at the iteration cap before converging.
    """

    records: list[dict]
    validation: dict[int, float]
    selected_layer: int
    scoring_seconds: float = 0.0
    clustering_cached: int = 0
    convergence_warnings: int = 0


def resolve_layers(encoder: LayerEncoder, protocol: Protocol) -> list[int]:
    """The layers to score: all of the encoder's, or the protocol's after a range check."""
    if protocol.layers is None:
        return encoder.layers
    return [encoder.check_layer(layer) for layer in protocol.layers]


# -- one subset ----------------------------------------------------------------------------------


def run_subset(
    encoder: LayerEncoder,
    data: CardData,
    card: TaskCard,
    protocol: Protocol,
    *,
    embedding_cache: bool = True,
    show_progress_bar: bool = True,
    task_metadata: Any = None,
    hf_split: str = "test",
    hf_subset: str = "default",
) -> SubsetScores:
    """Score every stage and layer of ``encoder`` on one card's data.

    Parameters
    ----------
    encoder : LayerEncoder
        The model, pooling as ``protocol.pooling`` says.
    data : CardData
        The card's loaded splits.
    card : TaskCard
    protocol : Protocol
    embedding_cache : bool, default=True
        Read and write the embedding cache (it is also off with ``MTEB_FINEGRAIN_EMBEDDING_CACHE=0``).
    show_progress_bar : bool, default=True
    task_metadata : mteb TaskMetadata or None
        Chooses the model's own prompt for the task; passed on, with ``hf_split`` and
        ``hf_subset``, to a model without hidden states, whose own ``encode`` needs them.
    hf_split, hf_subset : str

    Returns
    -------
    SubsetScores
        What the task writes for this subset.

    Raises
    ------
    FineGrainError
        If a layer or the training level is out of range (before any work).
    """
    resolve_layers(encoder, protocol)  # a layer out of range fails before any work
    train_level = protocol.train_level_name(data.level_names)  # likewise a level out of range
    # A model fitted on a fixed corpus (the TF-IDF + SVD control) learns its space from this
    # card's coarse_train texts (texts only, never labels), once, so that the evaluation,
    # validation and few-shot texts are all encoded in the same space.
    if getattr(encoder.source, "fit_on_coarse_train_texts", False):
        encoder.source.fit(data.coarse_train.texts)
    context = {"task_metadata": task_metadata, "hf_split": hf_split, "hf_subset": hf_subset}
    # The text every layer sees: the model's own prompt for this task, if it has one.
    prompt = encoder.prompt_for(task_metadata)
    records, validation, selected, encoded, warnings = _run_stages(encoder, data, card, protocol, prompt, context, embedding_cache, show_progress_bar)
    main_stage = protocol.main_stage if protocol.main_stage in selected else next(iter(selected))
    main = records_by_key(records)[(main_stage, data.level_names[-1], selected[main_stage], "probe_accuracy", protocol.main_shots)]
    result = {
        MAIN_SCORE: main,
        "main_score_definition": protocol.main_score_definition(),
        "protocol_version": PROTOCOL_VERSION,
        "card": card_block(card, data),
        "coarse_training_level": train_level if "coarse_tuned" in selected else None,
        # Tokens kept per text when encoding (the model's limit) and in coarse training.
        "truncation": {
            "evaluation": encoder.truncation(data.evaluation.texts),
            "coarse_training_max_length": protocol.coarse_training.max_length,
        },
        "model": model_block(encoder, prompt),
        "settings": protocol.to_dict() | {"batch_size": encoder.batch_size},  # the batch size that was used
        # Where and how the numbers were computed (not part of the protocol; for the record).
        "runtime": runtime_record(encoder, encoded, warnings),
        "selected_layer": selected,
        "validation_probe_accuracy": validation,
        "records": records,
    }
    return SubsetScores.model_validate(result)


def _run_stages(encoder: LayerEncoder, data: CardData, card: TaskCard, protocol: Protocol, prompt: str | None, context: dict, embedding_cache: bool, show_progress_bar: bool) -> tuple[list[dict], dict, dict, dict, dict]:
    """Score the protocol's stages in order.

    Returns ``(records, validation, selected, encoded, warnings)``: every record; per stage the
    validation accuracy of each layer, the selected layer, how its embeddings were obtained, and
    its probe convergence warnings.
    """
    records, validation, selected, encoded, warnings = [], {}, {}, {}, {}
    for stage in protocol.stages:
        load_stage_encoder, stage_id = _stage_source(encoder, data, card, protocol, stage, prompt, show_progress_bar)
        if load_stage_encoder is None:
            continue
        key = stage_key(encoder, stage_id, data.content_hash, prompt) if embedding_cache else None
        embeddings = StageEmbeddings(load_stage_encoder, key, prompt=prompt, **context)
        scores = score_stage(encoder, data, protocol, stage, show_progress_bar=show_progress_bar, prompt=prompt, embeddings=embeddings)
        records.extend(scores.records)
        if protocol.fewshot == "setfit":
            records.extend(setfit_records(embeddings.encoder, data, protocol, stage, selected_layer=scores.selected_layer, show_progress_bar=show_progress_bar))
        validation[stage] = {str(layer): value for layer, value in scores.validation.items()}
        selected[stage] = scores.selected_layer
        encoded[stage] = _stage_runtime(embeddings, scores)
        warnings[stage] = scores.convergence_warnings
    return records, validation, selected, encoded, warnings


def _stage_source(encoder: LayerEncoder, data: CardData, card: TaskCard, protocol: Protocol, stage: str, prompt: str | None, show_progress_bar: bool) -> tuple[Callable[[], LayerEncoder] | None, str | dict]:
    """How a stage gets its encoder (None: the stage is skipped) and what names it in cache keys.

    The coarse-tuned encoder is loaded (or trained) only when an embedding is missing from the
    cache; its cache name is its checkpoint's key, computed without loading anything.
    """
    if stage != "coarse_tuned":
        return (lambda: encoder), stage
    if not encoder.has_hidden_states:
        logger.warning("%s exposes no hidden states and cannot be fine-tuned: stage coarse_tuned skipped", encoder.model_name)
        return None, stage

    def load_stage_encoder() -> LayerEncoder:
        return coarse_tuned_encoder(encoder, data.coarse_train, card=card, protocol=protocol, show_progress_bar=show_progress_bar, prompt=prompt)

    return load_stage_encoder, stage_checkpoint_key(encoder, data.coarse_train, card, protocol, prompt)


def _stage_runtime(embeddings: StageEmbeddings, scores: StageScores) -> dict:
    """``runtime.embeddings.<stage>``: texts encoded, cache use, and where the time went."""
    return {
        "texts_encoded": embeddings.encoded_texts,
        "cached": embeddings.key is not None,
        # Wall seconds of the forward passes and of the scoring (scoring should not exceed encoding).
        "encode_seconds": round(embeddings.encode_seconds, 2),
        "scoring_seconds": round(scores.scoring_seconds, 2),
        # (layer, level) clustering results read from the cache instead of computed.
        "clustering_cached": scores.clustering_cached,
    }


def card_block(card: TaskCard, data: CardData) -> dict:
    """``card``: the dataset card and the data the scores were computed on."""
    return {
        "name": card.name,
        "version": card.version,
        "data": data.content_hash,
        "data_source": data.source,
        "levels": data.level_names,
        "classes_per_level": {name: len(set(labels)) for name, labels in zip(data.level_names, data.evaluation.levels)},
        "validation": "carved from few-shot pool" if data.validation_carved else card.splits["validation"],
        "sample": dict(card.sample),  # roles cut to a stratified sample of this many rows
        "sizes": {
            "coarse_train": len(data.coarse_train),
            "fewshot_pool": len(data.fewshot_pool),
            "validation": len(data.validation),
            "evaluation": len(data.evaluation),
        },
        "fine_classes": len(set(data.evaluation.fine)),
        "coarse_classes": len(set(data.evaluation.coarse)),
    }


def model_block(encoder: LayerEncoder, prompt: str | None) -> dict:
    """``model``: the scored model, its layers, and the pooling and prompt applied."""
    return {
        "name": encoder.model_name,
        "revision": encoder.mteb_model_meta.revision,
        "layers": encoder.layers,
        "hidden_states": encoder.has_hidden_states,
        "pooling": encoder.pooling if encoder.has_hidden_states else None,  # what was applied ("model" resolved)
        "prompt": prompt,
        "note": None if encoder.has_hidden_states else "model exposes no hidden states: scored on its final embedding only (layer -1)",
    }


# -- one stage -----------------------------------------------------------------------------------


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
    depths = range(len(data.level_names))
    # Few-shot samples per level and seed: drawn from the labels alone, shared by every layer; also
    # for the shot counts the asked-for probes warm-start from (nested: no further texts).
    fitted_shots = warm_start_ladder(protocol.shots) if protocol.probe_warm_start else list(protocol.shots)
    samples = {(depth, seed): fewshot_indices(data.fewshot_pool.levels[depth], fitted_shots, seed) for depth in depths for seed in protocol.probe_seed_list}
    if embeddings is None:
        embeddings = StageEmbeddings(lambda: encoder, key=None, prompt=prompt, **encode_context)
    eval_x, valid_x, pool_x, where = _stage_arrays(embeddings, data, protocol, samples, positions)
    # Every (layer, level) is one job: k-means, within-parent k-means and every probe of that
    # level, in a worker process limited to one thread (L-BFGS holds the GIL, so threads would
    # not run in parallel; and single-threaded k-means gives the same result on every machine).
    # Largest jobs first, so that the last to finish is a small one: the finest level's, top layer
    # first (after coarse tuning the top layers' fine probes converge slowest, and a slow job
    # started last leaves the other cores idle at the end).
    jobs = sorted(((k, depth) for k in range(len(layers)) for depth in depths), key=lambda job: (-job[1], -job[0]))
    started = time.perf_counter()
    cache_keys, cached = _cached_clustering(embeddings, data, protocol, jobs, eval_x)
    arguments = [_level_job(stage, layers[k], depth, data, protocol, samples, fitted_shots, eval_x[k], valid_x[k], pool_x[k], where, cached.get((k, depth))) for k, depth in jobs]
    done = _run_level_jobs(jobs, arguments, stage, show_progress_bar)
    for job, key in cache_keys.items():
        if job not in cached:
            embeddings.cache.store_scores(key, done[job].clustering_values)
    records: list[dict] = []
    validation: dict[int, float] = {}
    for k, layer in enumerate(layers):
        per_level = [done[(k, depth)] for depth in depths]
        records.extend(r for outcome in per_level for r in outcome.clustering)
        records.extend(r for outcome in per_level for r in outcome.probes)
        validation[layer] = per_level[-1].validation
    selected = max(layers, key=lambda layer: (validation[layer], -layer))
    warnings = sum(getattr(outcome, "convergence_warnings", 0) for outcome in done.values())
    return StageScores(records, validation, selected, time.perf_counter() - started, len(cached), warnings)


def _stage_arrays(embeddings: StageEmbeddings, data: CardData, protocol: Protocol, samples: dict, positions: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """The scored layers' embeddings of the evaluation, validation and few-shot texts.

    Returns ``(eval_x, valid_x, pool_x, where)``; ``where`` maps a few-shot pool index to its
    row of ``pool_x``.
    """
    # Which few-shot texts are encoded, and in which calls, never depends on the shots or seeds
    # asked for: batch composition changes padding, hence the last float bits of an embedding, so
    # a text must always be encoded with the same companions for a cached re-run to give the numbers
    # of a fresh run. The calls are fixed by the default shots and seeds: that set's finest-level
    # texts, then its coarser levels' other texts; only texts beyond it (more shots or seeds than
    # the default) are encoded in further calls.
    batches = fewshot_encoding_calls(data, protocol, samples)
    where = {pool_index: row for row, pool_index in enumerate(i for call in batches for i in call)}
    logger.info("Embeddings of %d evaluation, %d validation, %d few-shot texts", len(data.evaluation), len(data.validation), len(where))
    eval_x = embeddings.encode("evaluation", data.evaluation.texts)[positions]
    valid_x = embeddings.encode("validation", data.validation.texts)[positions]
    pool_x = np.concatenate([embeddings.encode("fewshot_pool", [data.fewshot_pool.texts[i] for i in call])[positions] for call in batches], axis=1)
    return eval_x, valid_x, pool_x, where


def fewshot_encoding_calls(data: CardData, protocol: Protocol, samples: dict) -> list[list[int]]:
    """The few-shot pool indices to encode, as the list of separate encoding calls.

    The default protocol's samples (same base seed) come first, finest level then the others, so
    that the calls do not depend on the shots or seeds asked for; ``samples`` adds calls only for
    texts beyond them.
    """
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


def _cached_clustering(embeddings: StageEmbeddings, data: CardData, protocol: Protocol, jobs: list[tuple[int, int]], eval_x: np.ndarray) -> tuple[dict, dict]:
    """Clustering cache keys of the jobs, and the values the cache already holds.

    Clustering depends on neither shots nor probes: kept beside the cached embeddings, it is
    looked up here, so that a re-run with other few-shot settings runs no k-means. Both dicts are
    empty when the stage is not cached.
    """
    cache_keys, cached = {}, {}
    if embeddings.key is None:
        return cache_keys, cached
    layer_checksums = [array_checksum(layer_x) for layer_x in eval_x]  # once a layer, not once a level
    for k, depth in jobs:
        parents = data.evaluation.levels[depth - 1] if depth > 0 else None
        cache_keys[(k, depth)] = clustering_key(eval_x[k], data.evaluation.levels[depth], parents, protocol.clustering_seed_list, embeddings_checksum=layer_checksums[k], protocol=protocol)
        values = embeddings.cache.load_scores(cache_keys[(k, depth)])
        if values is not None:
            cached[(k, depth)] = values
    return cache_keys, cached


def _level_job(stage: str, layer: int, depth: int, data: CardData, protocol: Protocol, samples: dict, fitted_shots: list[int], eval_x: np.ndarray, valid_x: np.ndarray, pool_x: np.ndarray, where: dict[int, int], clustering_values: dict | None) -> LevelJob:
    """The job of one layer at one level: its embeddings, labels and few-shot rows."""
    finest = depth == len(data.level_names) - 1
    seeds = protocol.probe_seed_list
    return LevelJob(
        stage=stage,
        layer=layer,
        level=data.level_names[depth],
        truth=data.evaluation.levels[depth],
        parents=data.evaluation.levels[depth - 1] if depth > 0 else None,
        eval_x=eval_x,
        # The few-shot rows of this level (every seed and shot count), looked up once here.
        pool_rows={(seed, n): pool_x[[where[i] for i in samples[(depth, seed)][n]]] for seed in seeds for n in fitted_shots},
        pool_labels={(seed, n): [data.fewshot_pool.levels[depth][i] for i in samples[(depth, seed)][n]] for seed in seeds for n in fitted_shots},
        valid_x=valid_x if finest else None,
        valid_truth=data.validation.levels[depth] if finest else None,
        shots=protocol.shots,
        main_shots=protocol.main_shots,
        warm_start=protocol.probe_warm_start,
        probe_seeds=seeds,
        clustering_seeds=protocol.clustering_seed_list,
        clustering_values=clustering_values,
        **protocol.clustering_options(),
        **protocol.probe_options(),
    )


def _run_level_jobs(jobs: list[tuple[int, int]], arguments: list[LevelJob], stage: str, show_progress_bar: bool) -> dict[tuple[int, int], LevelScores]:
    """Run the jobs on the scoring workers (one thread each); ``(layer index, depth) -> outcome``."""
    wait_for_scoring_workers()  # started early by the CLI (spawned while the model loaded)
    outcomes = Parallel(n_jobs=min(n_scoring_jobs(), len(jobs)), return_as="generator")(delayed(score_layer_level)(job) for job in arguments)
    return dict(zip(jobs, list(tqdm(outcomes, total=len(jobs), desc=f"Scoring layers ({stage})", disable=not show_progress_bar))))
