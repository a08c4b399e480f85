"""The leaderboard's rules for what a protocol 4.0 result carries beside its records.

The main score's interval, the stored predictions (checked against the settings, and every
interval recomputed from them by :func:`mteb_finegrain.uncertainty.evidence.check_intervals`),
the coarse-training runs, the layer choice with the scoring seeds, and the per-layer label-free
signals and CKA drift of ``representation``. Each check says what is wrong and where, in the
words of :mod:`mteb_finegrain.leaderboard.rules`, which calls :func:`check_evidence`.
"""

from __future__ import annotations

import math
import re

import numpy as np

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import DRIFT_METRICS, INTERVAL_LEVEL, PROTOCOL_VERSION, SIGNAL_METRICS
from mteb_finegrain.schema import SubsetScores
from mteb_finegrain.uncertainty.evidence import TOLERANCE, Evidence, check_intervals, read_predictions

SPLITS = ("evaluation", "validation")
# A field the record checks already call missing: check_intervals' "None but ..." would say it twice.
_ALREADY_MISSING = re.compile(r": (ci95|runs_std|main_score_ci95) None but the stored predictions give")


def is_finite(value) -> bool:
    """A number (not a bool) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_interval(interval, value) -> bool:
    """``interval`` is ``[low, high]`` with ``0 <= low <= value <= high <= 1``."""
    return (
        isinstance(interval, list) and len(interval) == 2 and all(is_finite(end) and 0.0 <= end <= 1.0 for end in interval)
        and is_finite(value) and interval[0] <= value <= interval[1]
    )


def check_evidence(scores: dict, parsed: SubsetScores, layers: list[int], stages: tuple[str, ...], finest: str, where: str) -> list[str]:
    """Problems of the protocol 4.0 blocks of one subset's scores.

    Parameters
    ----------
    scores : dict
        The subset's scores as written.
    parsed : SubsetScores
        The same, validated against the schema.
    layers : list of int
        The model's layers (``[-1]`` without hidden states).
    stages : tuple of str
        The stages the model must have (see :func:`mteb_finegrain.leaderboard.rules.required_stages`).
    finest : str
        The card's finest level (the main score's).
    where : str
        The file and subset, prefixed to every problem.

    Returns
    -------
    list of str
        Empty when ``main_score_ci95``, ``interval``, ``predictions`` (and every interval they
        imply), ``coarse_training_runs``, ``selection`` and ``representation`` are as the
        protocol writes them.
    """
    settings = scores["settings"]  # the schema made it an object
    problems = []
    main_ci = parsed.main_score_ci95
    if main_ci is None:
        problems.append(f"{where}: main_score_ci95 is missing (the main score's 95% interval, [low, high])")
    elif not is_interval(main_ci, parsed.main_score):
        problems.append(f"{where}: main_score_ci95 {main_ci!r} must be [low, high] with 0 <= low <= main_score {parsed.main_score!r} <= high <= 1")
    if not isinstance(parsed.interval, dict) or parsed.interval.get("level") != INTERVAL_LEVEL:
        problems.append(f"{where}: interval must describe the intervals (uncertainty.evidence.INTERVAL_DESCRIPTION, level {INTERVAL_LEVEL}), got {parsed.interval!r}")
    evidence, found = _check_predictions(scores.get("predictions"), settings, layers, stages, finest, where)
    problems += found
    if evidence is not None:
        problems += [problem for problem in check_intervals(scores, where) if not _ALREADY_MISSING.search(problem)]
    problems += _check_runs(parsed.coarse_training_runs, settings, layers, stages, parsed.selected_layer.get(stages[-1]), evidence, where)
    problems += _check_choice(parsed, settings, layers, stages, finest, where)
    problems += check_representation(parsed.representation, layers, stages, where)
    return problems


def _check_predictions(block, settings: dict, layers: list[int], stages: tuple[str, ...], finest: str, where: str) -> tuple[Evidence | None, list[str]]:
    """The predictions block decoded, and how it departs from the settings and the model's stages and layers."""
    if block is None:
        return None, [
            f"{where}: predictions are missing: protocol {PROTOCOL_VERSION} stores every probe seed's predictions on the "
            "evaluation items, from which its intervals are checked"
        ]
    try:
        evidence = read_predictions(block, f"{where}: predictions")
    except FineGrainError as exc:
        return None, [str(exc)]
    except (ValueError, TypeError) as exc:  # e.g. a code string that is not ASCII: not base64 either
        return None, [f"{where}: predictions do not decode ({type(exc).__name__}: {exc})"]
    problems = []
    if evidence.level != finest:
        problems.append(f"{where}: predictions.level is {evidence.level!r}, the main score's level is {finest!r}")
    if evidence.shots != settings.get("main_shots"):
        problems.append(f"{where}: predictions.shots is {evidence.shots}, settings.main_shots is {settings.get('main_shots')!r}")
    if list(evidence.seeds) != settings.get("probe_seed_list"):
        problems.append(f"{where}: predictions.seeds are {list(evidence.seeds)}, the scoring probe seeds (settings.probe_seed_list) are {settings.get('probe_seed_list')!r}")
    coarse_seeds = settings.get("coarse_seed_list")
    coarse_seeds = coarse_seeds if isinstance(coarse_seeds, list) else None  # else the settings check reports it
    if "coarse_tuned" in stages and coarse_seeds is not None and list(evidence.coarse_seeds) != coarse_seeds:
        problems.append(f"{where}: predictions.coarse_seeds are {list(evidence.coarse_seeds)}, settings.coarse_seed_list is {coarse_seeds!r}")
    for stage in sorted({stage for stage, _ in evidence.predictions} - set(stages)):
        problems.append(f"{where}: predictions.stages holds stage {stage!r}, which this model does not have (stages: {list(stages)})")
    for stage in stages:
        stored = {layer: len(matrices) for (kind, layer), matrices in evidence.predictions.items() if kind == stage}
        missing, extra = [x for x in layers if x not in stored], sorted(x for x in stored if x not in layers)
        if missing:
            problems.append(f"{where}: predictions.stages.{stage} lacks layer(s) {missing}: every layer's predictions are stored")
        if extra:
            problems.append(f"{where}: predictions.stages.{stage} has layer(s) {extra} that are not in model.layers")
        if stage == "coarse_tuned" and coarse_seeds is None:
            continue  # the runs cannot be counted
        runs = len(coarse_seeds) if stage == "coarse_tuned" else 1
        wrong = [layer for layer, count in sorted(stored.items()) if count != runs and layer in layers]
        if wrong:
            one_each = f"one per coarse-training run {coarse_seeds}" if stage == "coarse_tuned" else "the pretrained stage has no training run"
            problems.append(f"{where}: predictions.stages.{stage} layer(s) {wrong} hold {stored[wrong[0]]} matrices, expected {runs} ({one_each})")
    return evidence, problems


def _check_runs(runs, settings: dict, layers: list[int], stages: tuple[str, ...], layer, evidence: Evidence | None, where: str) -> list[str]:
    """``coarse_training_runs``: the settings' seeds, one main score per run (as the predictions give it), their sd."""
    if "coarse_tuned" not in stages:
        return [] if runs is None else [f"{where}: coarse_training_runs must be absent or null: a model without hidden states has no coarse-training runs"]
    if not isinstance(runs, dict):
        return [f"{where}: coarse_training_runs is missing (the seeds, per-run main scores and chosen layers of the coarse-training runs)"]
    seeds = settings.get("coarse_seed_list")
    if not isinstance(seeds, list):
        return []  # the settings check says what is wrong with it; the runs cannot be counted
    problems = []
    if runs.get("seeds") != seeds:
        problems.append(f"{where}: coarse_training_runs.seeds is {runs.get('seeds')!r}, settings.coarse_seed_list is {seeds!r}")
    chosen = runs.get("selected_layer")
    if not (isinstance(chosen, list) and len(chosen) == len(seeds) and all(x in layers for x in chosen)):
        problems.append(f"{where}: coarse_training_runs.selected_layer {chosen!r} must hold one of model.layers per run ({len(seeds)})")
    main = runs.get("main_score")
    if not (isinstance(main, list) and len(main) == len(seeds) and all(is_finite(x) and 0.0 <= x <= 1.0 for x in main)):
        return problems + [f"{where}: coarse_training_runs.main_score {main!r} must hold one score in [0, 1] per run ({len(seeds)})"]
    if evidence is not None and ("coarse_tuned", layer) in evidence.predictions:
        per_run = [float(np.mean(correct)) for correct in evidence.correctness("coarse_tuned", layer)]
        for run, (stored, computed) in enumerate(zip(main, per_run)):
            if not math.isclose(stored, computed, rel_tol=0.0, abs_tol=TOLERANCE):
                problems.append(f"{where}: coarse_training_runs.main_score[{run}] is {stored!r} but run {run}'s stored predictions at coarse_tuned layer {layer} give {computed!r}")
    expected = float(np.std(main, ddof=1)) if len(main) > 1 else None
    got = runs.get("runs_std")
    if not (got is None and expected is None or is_finite(got) and expected is not None and math.isclose(got, expected, rel_tol=0.0, abs_tol=TOLERANCE)):
        problems.append(f"{where}: coarse_training_runs.runs_std is {got!r}, the sd (ddof=1) of its main scores is {expected!r}")
    return problems


def _check_choice(parsed: SubsetScores, settings: dict, layers: list[int], stages: tuple[str, ...], finest: str, where: str) -> list[str]:
    """``selection``: the seeds that chose and scored, and what choosing with the scoring seeds gives."""
    selection = parsed.selection
    if not isinstance(selection, dict):
        return [f"{where}: selection is missing (the validation and scoring seeds, and the layer and main score the scoring seeds would choose)"]
    problems = []
    for key, setting in (("validation_seeds", "validation_probe_seed_list"), ("scoring_seeds", "probe_seed_list")):
        if selection.get(key) != settings.get(setting):
            problems.append(f"{where}: selection.{key} is {selection.get(key)!r}, settings.{setting} is {settings.get(setting)!r}")
    chosen = selection.get("selected_layer_with_scoring_seeds")
    if not (isinstance(chosen, dict) and all(chosen.get(stage) in layers for stage in stages)):
        return problems + [f"{where}: selection.selected_layer_with_scoring_seeds {chosen!r} must give one of model.layers for each stage {list(stages)}"]
    score = selection.get("main_score_with_scoring_seeds")
    main_stage, layer = stages[-1], chosen[stages[-1]]
    expected = parsed.lookup().get((main_stage, finest, layer, "probe_accuracy", parsed.settings.main_shots))
    if not (is_finite(score) and 0.0 <= score <= 1.0):
        problems.append(f"{where}: selection.main_score_with_scoring_seeds {score!r} is out of range [0, 1]")
    elif expected is not None and not math.isclose(score, expected, rel_tol=0.0, abs_tol=TOLERANCE):
        problems.append(
            f"{where}: selection.main_score_with_scoring_seeds {score!r} differs from the {main_stage} probe accuracy "
            f"{expected!r} at layer {layer}, the layer it says the scoring seeds choose"
        )
    return problems


def check_representation(block, layers: list[int], stages: tuple[str, ...], where: str) -> list[str]:
    """Problems of a ``representation`` block.

    Parameters
    ----------
    block : dict or None
        ``SubsetScores.representation``.
    layers : list of int
        The model's layers.
    stages : tuple of str
        The model's stages.
    where : str
        Prefixed to every problem.

    Returns
    -------
    list of str
        Empty when every stage has ``effective_rank`` and ``dataset_entropy`` for every layer on
        both splits (finite), coarse_tuned has ``cka_to_pretrained`` for every layer, and every
        CKA value (drift, its permuted baseline, ``cka_between_layers``) is in [-1, 1], or null
        where it is undefined (a layer whose embedding is the same for every text).
    """
    if not isinstance(block, dict):
        return [f"{where}: representation is missing (per stage and layer {' and '.join(SIGNAL_METRICS)}; {DRIFT_METRICS[0]} for coarse_tuned)"]
    problems = [
        f"{where}: representation.{stage}: the model has no {stage} stage (stages: {list(stages)})" for stage in sorted(set(block) - set(stages))
    ]
    for stage in stages:
        signals = block.get(stage)
        if not isinstance(signals, dict):
            problems.append(f"{where}: representation.{stage} is missing (its per-layer {' and '.join(SIGNAL_METRICS)})")
            continue
        for name in SIGNAL_METRICS:
            splits = signals.get(name) if isinstance(signals.get(name), dict) else {}
            for split in SPLITS:
                problems += _per_layer(splits.get(split), layers, f"{where}: representation.{stage}.{name}.{split}", cka=False)
        for name in DRIFT_METRICS:
            if stage == "coarse_tuned" and (name == DRIFT_METRICS[0] or name in signals):
                problems += _per_layer(signals.get(name), layers, f"{where}: representation.{stage}.{name}", cka=True)
        if "cka_between_layers" in signals:
            problems += _between_layers(signals["cka_between_layers"], layers, f"{where}: representation.{stage}.cka_between_layers")
    return problems


def _per_layer(values, layers: list[int], label: str, *, cka: bool) -> list[str]:
    if not isinstance(values, dict):
        return [f"{label} is missing: it needs a number for every layer"]
    wanted = [str(layer) for layer in layers]
    problems = []
    missing, extra = [k for k in wanted if k not in values], sorted(set(values) - set(wanted))
    if missing:
        problems.append(f"{label} lacks layer(s) {', '.join(missing)}")
    if extra:
        problems.append(f"{label} has layer(s) {', '.join(extra)} that are not in model.layers")
    bad = [k for k in wanted if k in values and not (_is_cka(values[k]) if cka else is_finite(values[k]))]
    if bad:
        shown = ", ".join(f"{k}: {values[k]!r}" for k in bad)
        problems.append(f"{label}: {'a CKA must be in [-1, 1] (null where undefined)' if cka else 'values must be finite numbers'}, got {shown}")
    return problems


def _is_cka(value) -> bool:
    # null: CKA is undefined for a layer whose embedding does not vary over the texts (the
    # runner records it so rather than invent a number).
    return value is None or is_finite(value) and -1.0 <= value <= 1.0


def _between_layers(block, layers: list[int], label: str) -> list[str]:
    if not isinstance(block, dict) or block.get("layers") != layers:
        return [f"{label}.layers must be model.layers {layers}, got {block.get('layers') if isinstance(block, dict) else block!r}"]
    matrix = block.get("matrix")
    size = len(layers)
    if not (isinstance(matrix, list) and len(matrix) == size and all(isinstance(row, list) and len(row) == size for row in matrix)):
        return [f"{label}.matrix must be {size} x {size} (one row and column per layer)"]
    if not all(_is_cka(v) for row in matrix for v in row):
        return [f"{label}.matrix: every CKA must be in [-1, 1] (null where undefined)"]
    return []
