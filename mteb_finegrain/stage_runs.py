"""From one or several scored runs of a stage to the stage's records, intervals and layer signals.

The pretrained stage is one run. The coarse_tuned stage is one run per coarse-training seed
(``Protocol.coarse_seed_list``), each scored in full; this module averages them: every record's
value is the mean over runs (``runs_std`` their spread), the layer is chosen on the validation
accuracy averaged over runs, and every ``probe_accuracy`` record gets its 95% interval from the
runs' correctness matrices (:func:`mteb_finegrain.uncertainty.evidence.runs_interval`, the
function the leaderboard uses to check it).

It also computes the per-layer numbers that are not scores against labels
(``SubsetScores.representation``): effective rank and dataset entropy of every layer, the layer x
layer CKA matrix, and the CKA of each coarse-tuned layer to the same pretrained layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.scoring.drift import debiased_linear_cka, layer_cka_matrix, permutation_baseline
from mteb_finegrain.scoring.layer_signals import dataset_entropy, effective_rank
from mteb_finegrain.uncertainty.evidence import runs_interval


@dataclass
class StageRun:
    """What one scored run of a stage hands on to be combined.

    Attributes
    ----------
    records : list of dict
        The run's records (``{stage, level, layer, metric, shots, value, std}``).
    validation : dict
        Layer -> mean validation accuracy of the validation seeds' main-shot probes.
    validation_with_scoring_seeds : dict
        Layer -> the same with the evaluation seeds' own probes.
    correct : dict
        ``(level, layer, shots) -> (probe seeds x items)`` boolean correctness.
    predicted : dict
        Finest level, main shots: layer -> (probe seeds x items) predicted label codes.
    labels : list of str
        The labels the codes index (the finest level's, sorted).
    eval_x, valid_x : numpy.ndarray of shape (layers, n, d)
        The scored layers' embeddings of the evaluation and validation texts.
    layers : list of int
    """

    records: list[dict]
    validation: dict[int, float]
    validation_with_scoring_seeds: dict[int, float]
    correct: dict[tuple, np.ndarray]
    predicted: dict[int, np.ndarray]
    labels: list[str]
    eval_x: np.ndarray
    valid_x: np.ndarray
    layers: list[int]
    scoring_seconds: float = 0.0
    clustering_cached: int = 0
    convergence_warnings: int = 0
    representation: dict = field(default_factory=dict)


def best_layer(validation: dict[int, float]) -> int:
    """The layer with the best validation score; ties go to the lower layer."""
    return max(validation, key=lambda layer: (validation[layer], -layer))


def layer_representation(run: StageRun) -> dict:
    """Label-free signals of every layer (evaluation and validation texts) and the layer x layer CKA."""
    out: dict = {}
    for name, signal in (("effective_rank", effective_rank), ("dataset_entropy", dataset_entropy)):
        out[name] = {
            split: {str(layer): signal(x[k]) for k, layer in enumerate(run.layers)}
            for split, x in (("evaluation", run.eval_x), ("validation", run.valid_x))
        }
    if len(run.layers) > 1:
        try:
            matrix = layer_cka_matrix(list(run.eval_x)).tolist()
        except FineGrainError:  # a layer without variance (see _cka_or_none): pair by pair
            matrix = [[_cka_or_none(debiased_linear_cka, a, b) for b in run.eval_x] for a in run.eval_x]
        out["cka_between_layers"] = {"layers": list(run.layers), "matrix": matrix}
    return out


def _cka_or_none(function, *arguments) -> float | None:
    # CKA is undefined for a layer whose embedding is the same for every text (CLS pooling at the
    # embedding layer gives one vector for all texts): recorded as null, not as a number.
    try:
        return function(*arguments)
    except FineGrainError:
        return None


def drift_to_pretrained(pretrained_x: np.ndarray, tuned_x: np.ndarray, layers: Sequence[int], seed: int) -> dict:
    """Per layer, debiased linear CKA of the coarse-tuned to the pretrained embeddings, and its permutation baseline.

    Both on the L2-normalised pooled embeddings of the evaluation texts, as k-means sees them;
    null for a layer without variance.
    """
    return {
        "cka_to_pretrained": {str(layer): _cka_or_none(debiased_linear_cka, pretrained_x[k], tuned_x[k]) for k, layer in enumerate(layers)},
        "cka_to_pretrained_permuted": {str(layer): _cka_or_none(permutation_baseline, pretrained_x[k], tuned_x[k], seed) for k, layer in enumerate(layers)},
    }


def _mean_tree(trees: list):
    """Element-wise mean over runs of nested dicts and lists of numbers (None where any run has None)."""
    first = trees[0]
    if isinstance(first, dict):
        return {key: _mean_tree([tree[key] for tree in trees]) for key in first}
    if isinstance(first, list):
        if all(isinstance(x, int) and not isinstance(x, bool) for x in first):
            return first  # layer numbers, the same in every run
        return [_mean_tree([tree[i] for tree in trees]) for i in range(len(first))]
    if first is None or isinstance(first, float):
        return None if any(tree is None for tree in trees) else float(np.mean(trees))
    return first


@dataclass
class CombinedStage:
    """A stage's runs combined: what the result records for it."""

    records: list[dict]
    validation: dict[int, float]
    selected_layer: int
    selected_with_scoring_seeds: int
    run_selected_layers: list[int]
    representation: dict
    correct_main: dict[int, list[np.ndarray]]  # finest level, main shots: layer -> per-run correctness
    predicted: dict[int, list[np.ndarray]]  # finest level, main shots: layer -> per-run predicted codes
    labels: list[str]  # what the codes index


def combine_runs(runs: list[StageRun], *, finest: str, main_shots: int) -> CombinedStage:
    """Average a stage's runs: records (with ``runs_std`` and ``ci95``), layer choice, signals."""
    several = len(runs) > 1
    by_key: dict[tuple, list[dict]] = {}
    for run in runs:
        for record in run.records:
            by_key.setdefault((record["level"], record["layer"], record["metric"], record["shots"]), []).append(record)
    records = []
    for (level, layer, metric, shots), group in by_key.items():
        record = dict(group[0])
        values = [r["value"] for r in group]
        record["value"] = float(np.mean(values))
        record["std"] = float(np.mean([r["std"] for r in group]))
        if metric == "probe_accuracy":
            interval = runs_interval([run.correct[(level, layer, shots)] for run in runs])
            record["value"] = interval.value
            if interval.ci95 is not None:
                record["ci95"] = [interval.ci95[0], interval.ci95[1]]
            if several:
                record["runs_std"] = interval.runs_std
        elif several:
            record["runs_std"] = float(np.std(values, ddof=1)) if all(np.isfinite(values)) else float("nan")
        records.append(record)
    layers = runs[0].layers
    validation = {layer: float(np.mean([run.validation[layer] for run in runs])) for layer in layers}
    same_seeds = {layer: float(np.mean([run.validation_with_scoring_seeds[layer] for run in runs])) for layer in layers}
    representation = _mean_tree([run.representation for run in runs])
    return CombinedStage(
        records=records,
        validation=validation,
        selected_layer=best_layer(validation),
        selected_with_scoring_seeds=best_layer(same_seeds),
        run_selected_layers=[best_layer(run.validation) for run in runs],
        representation=representation,
        correct_main={layer: [run.correct[(finest, layer, main_shots)] for run in runs] for layer in layers},
        predicted={layer: [run.predicted[layer] for run in runs] for layer in layers},
        labels=runs[0].labels,
    )
