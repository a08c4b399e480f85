"""What ``mteb-finegrain report`` reads from a result besides its scores.

* the interval fields of the records (``ci95``, ``runs_std``; protocol 4.0);
* the ``representation`` block: label-free layer signals of both stages, the coarse-tuned
  layers' drift from the pretrained ones (linear CKA) and the layer x layer CKA of each stage;
* the coarse-tuning effect per layer: coarse_tuned minus pretrained finest-level probe
  accuracy at the main shot count, on the same items and support sets, with a paired 95%
  interval computed from the stored per-seed predictions.

Results of protocols before 4.0 have none of these: every reader here then returns an empty
mapping, so that the report shows the scores alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import DRIFT_METRICS, INTERVAL_LEVEL, SIGNAL_METRICS
from mteb_finegrain.results import SubsetResult
from mteb_finegrain.uncertainty.evidence import read_predictions
from mteb_finegrain.uncertainty.intervals import satterthwaite_df, two_way_anova
from mteb_finegrain.uncertainty.matrix import as_matrix

STAGE_ORDER = ("pretrained", "coarse_tuned")
STAGE_SHORT = {"pretrained": "pre", "coarse_tuned": "tuned"}
SIGNAL_SPLITS = ("evaluation", "validation")
# The split the drift (CKA to the pretrained model) is computed on: the evaluation texts.
DRIFT_SPLIT = "evaluation"
EFFECT_METRIC = "coarse_tuning_effect"


@dataclass(frozen=True)
class RecordInterval:
    """The interval fields of one record: its 95% interval and its spread over coarse-training runs.

    Attributes
    ----------
    ci95 : (float, float) or None
        The record's 95% interval (probe_accuracy records of protocol 4.0).
    runs_std : float or None
        Standard deviation of the record's value over coarse-training runs (coarse_tuned
        records with at least 2 runs).
    """

    ci95: tuple[float, float] | None
    runs_std: float | None


def record_intervals(result: SubsetResult) -> dict[tuple, RecordInterval]:
    """``(stage, level, layer, metric, shots) -> RecordInterval`` of every record that has either field."""
    out = {}
    for record in result.parsed.records:
        ci95, runs_std = getattr(record, "ci95", None), getattr(record, "runs_std", None)
        if ci95 is None and runs_std is None:
            continue
        if ci95 is not None and len(ci95) != 2:
            raise FineGrainError(f"{result.path}: record {record.key}: ci95 must be [low, high], got {ci95!r}")
        out[record.key] = RecordInterval(None if ci95 is None else (float(ci95[0]), float(ci95[1])), runs_std)
    return out


@dataclass(frozen=True)
class Representation:
    """A result's ``representation`` block, checked.

    Attributes
    ----------
    layer_values : dict
        ``(stage, metric, split) -> {layer: value}``: ``effective_rank`` and
        ``dataset_entropy`` of both stages on the ``evaluation`` and ``validation`` splits,
        ``cka_to_pretrained`` and ``cka_to_pretrained_permuted`` of the coarse_tuned stage (split
        ``evaluation``, the texts the CKA is computed on).
    cka_between_layers : dict
        ``stage -> (layers, matrix)``: the debiased linear CKA of every pair of the stage's
        layers (absent for a stage with one layer).
    """

    layer_values: dict[tuple[str, str, str], dict[int, float]]
    cka_between_layers: dict[str, tuple[list[int], np.ndarray]]

    def drift(self, metric: str = "cka_to_pretrained") -> dict[int, float]:
        """``{layer: value}`` of a drift metric of the coarse_tuned stage (empty when not recorded)."""
        return self.layer_values.get(("coarse_tuned", metric, DRIFT_SPLIT), {})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _per_layer(values, where: str) -> dict[int, float]:
    if not isinstance(values, Mapping):
        raise FineGrainError(f"{where} must be an object of layers, got {type(values).__name__}")
    out = {}
    for layer, value in values.items():
        try:
            layer_number = int(layer)
        except (TypeError, ValueError):
            raise FineGrainError(f"{where}: {layer!r} is not a layer number") from None
        if not _is_number(value):
            raise FineGrainError(f"{where}.{layer} must be a number, got {value!r}")
        out[layer_number] = float(value)
    return dict(sorted(out.items()))


def _layer_matrix(block, where: str) -> tuple[list[int], np.ndarray]:
    layers, matrix = (block.get("layers"), block.get("matrix")) if isinstance(block, Mapping) else (None, None)
    if not isinstance(layers, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
        raise FineGrainError(f"{where}.layers must be a list of layer numbers, got {layers!r}")
    if not (isinstance(matrix, list) and len(matrix) == len(layers)
            and all(isinstance(row, list) and len(row) == len(layers) and all(map(_is_number, row)) for row in matrix)):
        raise FineGrainError(f"{where}.matrix must be a {len(layers)} x {len(layers)} list of lists of numbers")
    return list(layers), np.asarray(matrix, dtype=np.float64).reshape(len(layers), len(layers))


def read_representation(result: SubsetResult) -> Representation:
    """The ``representation`` block of ``result``; empty for a result without one.

    Raises
    ------
    FineGrainError
        Naming the file and the entry, when a value is not a number or a layer key not a layer.
    """
    block = result.parsed.representation or {}
    where = f"{result.path}: representation"
    layer_values: dict[tuple[str, str, str], dict[int, float]] = {}
    cka_between_layers = {}
    for stage in STAGE_ORDER:
        stage_block = block.get(stage)
        if stage_block is None:
            continue
        if not isinstance(stage_block, Mapping):
            raise FineGrainError(f"{where}.{stage} must be an object, got {type(stage_block).__name__}")
        for metric in SIGNAL_METRICS:
            splits = stage_block.get(metric) or {}
            if not isinstance(splits, Mapping):
                raise FineGrainError(f"{where}.{stage}.{metric} must be an object of splits")
            for split in SIGNAL_SPLITS:
                if split in splits:
                    layer_values[(stage, metric, split)] = _per_layer(splits[split], f"{where}.{stage}.{metric}.{split}")
        for metric in DRIFT_METRICS:
            if metric in stage_block:
                layer_values[(stage, metric, DRIFT_SPLIT)] = _per_layer(stage_block[metric], f"{where}.{stage}.{metric}")
        if "cka_between_layers" in stage_block:
            cka_between_layers[stage] = _layer_matrix(stage_block["cka_between_layers"], f"{where}.{stage}.cka_between_layers")
    return Representation(layer_values, cka_between_layers)


@dataclass(frozen=True)
class CoarseTuningEffect:
    """coarse_tuned minus pretrained probe accuracy at one layer, paired on items and support sets.

    Attributes
    ----------
    value : float
        The coarse_tuned accuracy (mean over coarse-training runs) minus the pretrained one.
    ci95 : (float, float)
        Paired 95% interval: variance components of the difference matrix (new items, new
        support sets) plus ``runs_std**2 / n_runs`` (new coarse-training runs).
    runs_std : float or None
        Standard deviation (ddof=1) of the coarse_tuned accuracy over runs; None for one run.
    n_runs : int
        Coarse-training runs averaged.
    """

    value: float
    ci95: tuple[float, float]
    runs_std: float | None
    n_runs: int


def _t_quantile(level: float, df: float) -> float:
    upper = 0.5 + level / 2
    return float(stats.norm.ppf(upper) if math.isinf(df) else stats.t.ppf(upper, df))


def paired_runs_interval(coarse_runs: Sequence, pretrained, level: float = INTERVAL_LEVEL) -> CoarseTuningEffect:
    """The coarse-tuning effect and its paired interval from correctness matrices.

    The coarse runs' matrices are averaged; the difference ``average - pretrained`` is analysed
    as :func:`mteb_finegrain.uncertainty.intervals.paired_interval` does (two-way variance
    components, Satterthwaite t quantile), with the coarse runs' variance ``runs_std**2 / n_runs``
    (``n_runs - 1`` degrees of freedom) added: a run shifts every cell of its matrix, so the
    matrix cannot show it. With one run the interval is ``paired_interval``'s.

    Parameters
    ----------
    coarse_runs : sequence of array-like of shape (S, n)
        Per coarse-training run, whether seed ``s``'s probe got item ``i`` right.
    pretrained : array-like of shape (S, n)
        The same for the pretrained model: same seeds (support sets) and items.
    level : float, default 0.95
        Confidence level.

    Returns
    -------
    CoarseTuningEffect
        Its interval clipped to [-1, 1].

    Raises
    ------
    FineGrainError
        When there is no run, a matrix is not a valid correctness matrix, or the shapes differ.
    """
    if not coarse_runs:
        raise FineGrainError("the coarse-tuning effect needs at least one coarse-training run's correctness matrix")
    runs = [as_matrix(m, f"coarse run {r}", low=0.0, high=1.0) for r, m in enumerate(coarse_runs)]
    base = as_matrix(pretrained, "pretrained", low=0.0, high=1.0)
    if any(m.shape != base.shape for m in runs):
        raise FineGrainError(f"coarse runs {[m.shape for m in runs]} and pretrained {base.shape}: a paired difference needs the same seeds and items")
    anova = two_way_anova(np.mean(runs, axis=0) - base)
    runs_std = float(np.std([m.mean() for m in runs], ddof=1)) if len(runs) > 1 else None
    runs_variance = (runs_std or 0.0) ** 2 / len(runs)
    terms = anova.satterthwaite_terms() + ([(runs_variance, len(runs) - 1)] if runs_variance > 0 else [])
    variance = anova.variance + runs_variance
    half = _t_quantile(level, satterthwaite_df(terms)) * math.sqrt(variance) if variance > 0 else 0.0
    ci95 = (max(-1.0, anova.mean - half), min(1.0, anova.mean + half))
    return CoarseTuningEffect(anova.mean, ci95, runs_std, len(runs))


@dataclass(frozen=True)
class CoarseTuningEffects:
    """A result's coarse-tuning effect per layer, and the probes it compares.

    Attributes
    ----------
    level : str
        The level of the stored predictions (the finest).
    shots : int
        Their shot count (the main shots).
    by_layer : dict
        ``layer -> CoarseTuningEffect``, for every layer with stored predictions of both stages.
    """

    level: str | None
    shots: int | None
    by_layer: dict[int, CoarseTuningEffect]


def coarse_tuning_effects(result: SubsetResult) -> CoarseTuningEffects:
    """The coarse-tuning effect of every layer of ``result`` with stored predictions of both stages.

    Empty (``by_layer == {}``) for a result without a ``predictions`` block or without the
    coarse_tuned stage.

    Raises
    ------
    FineGrainError
        Naming the file, when the predictions block is malformed.
    """
    block = result.parsed.predictions
    if not block:
        return CoarseTuningEffects(None, None, {})
    evidence = read_predictions(block, f"{result.path}: predictions")
    by_layer = {}
    for stage, layer in sorted(evidence.predictions):
        if stage != "coarse_tuned" or ("pretrained", layer) not in evidence.predictions:
            continue
        pretrained_runs = evidence.correctness("pretrained", layer)
        pretrained = np.mean([m.astype(np.float64) for m in pretrained_runs], axis=0)
        try:
            by_layer[layer] = paired_runs_interval(evidence.correctness(stage, layer), pretrained)
        except FineGrainError as exc:
            raise FineGrainError(f"{result.path}: coarse-tuning effect at layer {layer}: {exc}") from None
    return CoarseTuningEffects(evidence.level, evidence.shots, by_layer)
