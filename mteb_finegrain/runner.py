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

import dataclasses
import logging
import time
from collections.abc import Callable
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
from mteb_finegrain.results import record_key
from mteb_finegrain.runtime import runtime_record
from mteb_finegrain.schema import SubsetScores
from mteb_finegrain.stage_runs import CombinedStage, StageRun, best_layer, combine_runs, drift_to_pretrained, layer_representation
from mteb_finegrain.uncertainty.evidence import INTERVAL_DESCRIPTION, predictions_block
from mteb_finegrain.uncertainty.predictions import split_sha256
from mteb_finegrain.scoring.fewshot_probe import fewshot_indices, warm_start_ladder
from mteb_finegrain.scoring.layer_level import LevelJob, LevelScores, score_layer_level
from mteb_finegrain.scoring.setfit_fewshot import setfit_records
from mteb_finegrain.scoring.workers import n_scoring_jobs, wait_for_scoring_workers

logger = logging.getLogger(__name__)


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
    stages, encoded, warnings = _run_stages(encoder, data, card, protocol, prompt, context, embedding_cache, show_progress_bar)
    records = [record for combined in stages.values() for record in combined.records]
    selected = {stage: combined.selected_layer for stage, combined in stages.items()}
    main_stage = protocol.main_stage if protocol.main_stage in selected else next(iter(selected))
    by_key = {record_key(record): record for record in records}
    main_record = by_key[(main_stage, data.level_names[-1], selected[main_stage], "probe_accuracy", protocol.main_shots)]
    tuned = stages.get("coarse_tuned")
    result = {
        MAIN_SCORE: main_record["value"],
        "main_score_ci95": main_record.get("ci95"),
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
        "validation_probe_accuracy": {stage: {str(layer): value for layer, value in combined.validation.items()} for stage, combined in stages.items()},
        "interval": INTERVAL_DESCRIPTION,
        "coarse_training_runs": None if tuned is None else _runs_block(tuned, protocol, data.level_names[-1]),
        "selection": _selection_block(stages, by_key, protocol, data.level_names[-1], main_stage),
        "representation": {stage: combined.representation for stage, combined in stages.items()},
        "records": records,
        "predictions": _predictions(stages, data, protocol),
    }
    return SubsetScores.model_validate(result)


def _runs_block(tuned: CombinedStage, protocol: Protocol, finest: str) -> dict:
    """``coarse_training_runs``: the seeds, and what each run alone gives at the chosen layer."""
    runs = [matrix.mean() for matrix in tuned.correct_main[tuned.selected_layer]]
    return {
        "seeds": protocol.coarse_seed_list,
        "main_score": [float(value) for value in runs],
        "selected_layer": tuned.run_selected_layers,
        "runs_std": float(np.std(runs, ddof=1)) if len(runs) > 1 else None,
    }


def _selection_block(stages: dict, by_key: dict, protocol: Protocol, finest: str, main_stage: str) -> dict:
    """``selection``: the disjoint seeds, and what choosing with the scoring seeds (protocol 3.1) would give."""
    same = {stage: combined.selected_with_scoring_seeds for stage, combined in stages.items()}
    return {
        "validation_seeds": protocol.validation_probe_seed_list,
        "scoring_seeds": protocol.probe_seed_list,
        "selected_layer_with_scoring_seeds": same,
        "main_score_with_scoring_seeds": by_key[(main_stage, finest, same[main_stage], "probe_accuracy", protocol.main_shots)]["value"],
    }


def _predictions(stages: dict, data: CardData, protocol: Protocol) -> dict:
    """The ``predictions`` block: every run's finest-level main-shot predictions, per stage and layer."""
    labels = stages[next(iter(stages))].labels
    code = {label: i for i, label in enumerate(labels)}
    return predictions_block(
        level=data.level_names[-1],
        shots=protocol.main_shots,
        seeds=protocol.probe_seed_list,
        coarse_seeds=protocol.coarse_seed_list if "coarse_tuned" in stages else [],
        split_sha256=split_sha256(data.evaluation.texts, data.evaluation.levels[-1]),
        labels=labels,
        gold=[code[label] for label in data.evaluation.levels[-1]],
        runs={stage: combined.predicted for stage, combined in stages.items()},
    )


def _run_stages(encoder: LayerEncoder, data: CardData, card: TaskCard, protocol: Protocol, prompt: str | None, context: dict, embedding_cache: bool, show_progress_bar: bool) -> tuple[dict[str, CombinedStage], dict, dict]:
    """Score the protocol's stages in order, every coarse-training run of coarse_tuned.

    Returns ``(stages, encoded, warnings)``: per stage its runs combined, how its embeddings
    were obtained, and its probe convergence warnings.
    """
    stages, encoded, warnings = {}, {}, {}
    pretrained_x = None
    finest = data.level_names[-1]
    for stage in protocol.stages:
        sources = _stage_sources(encoder, data, card, protocol, stage, prompt, show_progress_bar)
        if not sources:
            continue
        runs, runtimes = [], []
        for load_stage_encoder, stage_id in sources:
            key = stage_key(encoder, stage_id, data.content_hash, prompt) if embedding_cache else None
            embeddings = StageEmbeddings(load_stage_encoder, key, prompt=prompt, **context)
            run = score_stage(encoder, data, protocol, stage, show_progress_bar=show_progress_bar, prompt=prompt, embeddings=embeddings)
            run.representation = layer_representation(run)
            if stage == "coarse_tuned" and pretrained_x is not None:
                run.representation.update(drift_to_pretrained(pretrained_x, run.eval_x, run.layers, protocol.seed))
            if stage == "pretrained":
                pretrained_x = run.eval_x
            runtimes.append(_stage_runtime(embeddings, run))
            runs.append((run, embeddings))
            # Only the numbers are kept from each run: its embeddings are dropped before the next.
            run.eval_x = run.valid_x = None
        if protocol.fewshot == "setfit":
            # SetFit trains each run's encoder at the layer the stage chooses over all its runs.
            chosen = best_layer({layer: float(np.mean([run.validation[layer] for run, _ in runs])) for layer in runs[0][0].layers})
            for run, embeddings in runs:
                run.records.extend(setfit_records(embeddings.encoder, data, protocol, stage, selected_layer=chosen, show_progress_bar=show_progress_bar))
        runs = [run for run, _ in runs]
        stages[stage] = combine_runs(runs, finest=finest, main_shots=protocol.main_shots)
        encoded[stage] = _merge_runtimes(runtimes)
        warnings[stage] = sum(run.convergence_warnings for run in runs)
    return stages, encoded, warnings


def _stage_sources(encoder: LayerEncoder, data: CardData, card: TaskCard, protocol: Protocol, stage: str, prompt: str | None, show_progress_bar: bool) -> list[tuple[Callable[[], LayerEncoder], str | dict]]:
    """How each run of a stage gets its encoder, and what names it in cache keys (empty: skipped).

    The pretrained stage is one run; coarse_tuned is one run per coarse-training seed. A
    coarse-tuned encoder is loaded (or trained) only when an embedding is missing from the
    cache; its cache name is its checkpoint's key, computed without loading anything.
    """
    if stage != "coarse_tuned":
        return [((lambda: encoder), stage)]
    if not encoder.has_hidden_states:
        logger.warning("%s exposes no hidden states and cannot be fine-tuned: stage coarse_tuned skipped", encoder.model_name)
        return []
    sources = []
    for seed in protocol.coarse_seed_list:
        run_protocol = dataclasses.replace(protocol, coarse_training=dataclasses.replace(protocol.coarse_training, seed=seed))

        def load_stage_encoder(run_protocol: Protocol = run_protocol) -> LayerEncoder:
            return coarse_tuned_encoder(encoder, data.coarse_train, card=card, protocol=run_protocol, show_progress_bar=show_progress_bar, prompt=prompt)

        sources.append((load_stage_encoder, stage_checkpoint_key(encoder, data.coarse_train, card, run_protocol, prompt)))
    return sources


def _stage_runtime(embeddings: StageEmbeddings, run: StageRun) -> dict:
    """``runtime.embeddings.<stage>`` of one run: texts encoded, cache use, and where the time went."""
    return {
        "texts_encoded": embeddings.encoded_texts,
        "cached": embeddings.key is not None,
        # Wall seconds of the forward passes and of the scoring (scoring should not exceed encoding).
        "encode_seconds": round(embeddings.encode_seconds, 2),
        "scoring_seconds": round(run.scoring_seconds, 2),
        # (layer, level) clustering results read from the cache instead of computed.
        "clustering_cached": run.clustering_cached,
    }


def _merge_runtimes(runtimes: list[dict]) -> dict:
    """One stage's runtime over its runs: counts and seconds summed."""
    merged = dict(runtimes[0])
    for name in ("texts_encoded", "encode_seconds", "scoring_seconds", "clustering_cached"):
        merged[name] = sum(r[name] for r in runtimes)
    merged["encode_seconds"] = round(merged["encode_seconds"], 2)
    merged["scoring_seconds"] = round(merged["scoring_seconds"], 2)
    if len(runtimes) > 1:
        merged["runs"] = len(runtimes)
    return merged


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
) -> StageRun:
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
    StageRun
        The run's records, validation scores, correctness matrices, main-shot predictions and
        embeddings of the evaluation and validation texts.
    """
    layers = resolve_layers(encoder, protocol)
    positions = [encoder.layers.index(layer) for layer in layers]
    depths = range(len(data.level_names))
    # Few-shot samples per level and seed: drawn from the labels alone, shared by every layer; also
    # for the shot counts the asked-for probes warm-start from (nested: no further texts).
    fitted_shots = warm_start_ladder(protocol.shots) if protocol.probe_warm_start else list(protocol.shots)
    samples = {(depth, seed): fewshot_indices(data.fewshot_pool.levels[depth], fitted_shots, seed) for depth in depths for seed in protocol.probe_seed_list}
    # The finest level's validation probes (the layer choice) have seeds of their own.
    finest = len(data.level_names) - 1
    samples.update({(finest, seed): fewshot_indices(data.fewshot_pool.levels[finest], fitted_shots, seed) for seed in protocol.validation_probe_seed_list})
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
    correct: dict[tuple, np.ndarray] = {}
    for k, layer in enumerate(layers):
        per_level = [done[(k, depth)] for depth in depths]
        records.extend(r for outcome in per_level for r in outcome.clustering)
        records.extend(r for outcome in per_level for r in outcome.probes)
        for depth, outcome in zip(depths, per_level):
            correct.update({(data.level_names[depth], layer, n): matrix for n, matrix in outcome.correct.items()})
    top = {layer: done[(k, finest)] for k, layer in enumerate(layers)}
    warnings = sum(getattr(outcome, "convergence_warnings", 0) for outcome in done.values())
    return StageRun(
        records=records,
        validation={layer: outcome.validation for layer, outcome in top.items()},
        validation_with_scoring_seeds={layer: outcome.validation_with_scoring_seeds for layer, outcome in top.items()},
        correct=correct,
        predicted={layer: outcome.predicted for layer, outcome in top.items()},
        labels=top[layers[0]].labels,
        eval_x=eval_x,
        valid_x=valid_x,
        layers=list(layers),
        scoring_seconds=time.perf_counter() - started,
        clustering_cached=len(cached),
        convergence_warnings=warnings,
    )


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
    canonical.update({(finest, seed): fewshot_indices(data.fewshot_pool.levels[finest], default.shots, seed) for seed in default.validation_probe_seed_list})

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
    seeds = protocol.probe_seed_list + (protocol.validation_probe_seed_list if finest else [])
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
        probe_seeds=protocol.probe_seed_list,
        validation_seeds=protocol.validation_probe_seed_list if finest else None,
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
