"""The evidence a result keeps for its intervals: per-seed predictions, and the intervals they imply.

A result of protocol 4.0 stores, in its ``predictions`` block, what every probe behind the main
score and the main-shot layer curves predicted: for each stage, layer and coarse-training run, one
row per probe seed and one column per evaluation item, at the finest level and ``main_shots``
shots, with the gold labels and the hash of the evaluation split as scored. Every interval, paired
comparison and leaderboard check is computed from it by the functions here, so that the writer
(:mod:`mteb_finegrain.runner`), the validator and ``leaderboard compare`` cannot disagree.

The block::

    {"format": "mteb-finegrain-predictions/2",
     "level": "fine", "shots": 8, "seeds": [42, ..., 46], "coarse_seeds": [42, 43, 44],
     "split_sha256": "sha256:...", "labels": [...], "dtype": "uint8",
     "gold": "<base64 of n codes>",
     "stages": {"pretrained": {"0": ["<base64 of S x n codes>"], ...},
                "coarse_tuned": {"0": ["<run 1>", "<run 2>", "<run 3>"], ...}}}

Codes index ``labels`` (every class of the finest level, sorted, so two models' codes agree);
matrices are row-major little-endian ``dtype`` (uint8 up to 256 labels, else uint16).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import INTERVAL_LEVEL
from mteb_finegrain.uncertainty.intervals import probe_interval

FORMAT = "mteb-finegrain-predictions/2"
_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2")}
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Stored and recomputed intervals agree to this: both come from runs_interval, and mteb rounds
# every float of a result to 6 decimals when it writes the file.
TOLERANCE = 1.01e-6

INTERVAL_DESCRIPTION = {
    "level": INTERVAL_LEVEL,
    "method": "variance components of the (probe seed x item) correctness matrix, Satterthwaite t quantile",
    "covers": "new evaluation items, new few-shot support sets and, for coarse_tuned, new coarse-training runs (s_runs^2 / runs added)",
    "conditional_on": "the chosen layer, the dataset and its label set, the model's prompt, the device and its arithmetic",
    "clustering": "no interval: a record's std is the spread over k-means seeds, not a standard error",
}


def encode_codes(matrix: np.ndarray, dtype: str) -> str:
    """Base64 of an integer code matrix as little-endian ``dtype`` (row-major)."""
    return base64.b64encode(np.ascontiguousarray(matrix, dtype=_DTYPES[dtype]).tobytes()).decode("ascii")


def decode_codes(data, dtype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The code matrix of ``encode_codes``; FineGrainError naming ``where`` when it does not fit ``shape``."""
    if not isinstance(data, str):
        raise FineGrainError(f"{where}: must be a base64 string, got {type(data).__name__}")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise FineGrainError(f"{where}: is not valid base64") from None
    expected = int(np.prod(shape)) * _DTYPES[dtype].itemsize
    if len(raw) != expected:
        raise FineGrainError(f"{where}: holds {len(raw)} bytes, {shape} {dtype} codes take {expected}")
    return np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape).astype(np.int64)


def code_dtype(n_labels: int) -> str:
    if n_labels > 65536:
        raise FineGrainError(f"{n_labels} labels do not fit uint16 codes (at most 65,536)")
    return "uint8" if n_labels <= 256 else "uint16"


def predictions_block(
    *,
    level: str,
    shots: int,
    seeds: Sequence[int],
    coarse_seeds: Sequence[int],
    split_sha256: str,
    labels: Sequence[str],
    gold: Sequence[int],
    runs: Mapping[str, Mapping[int, Sequence[np.ndarray]]],
) -> dict:
    """The ``predictions`` block of a result.

    Parameters
    ----------
    level : str
        The finest level's name.
    shots : int
        The main shot count.
    seeds : sequence of int
        Probe seeds, one row each.
    coarse_seeds : sequence of int
        Training seeds of the coarse_tuned runs, in the order of each layer's list.
    split_sha256 : str
        ``predictions.split_sha256`` of the evaluation texts and finest gold labels.
    labels : sequence of str
        The vocabulary the codes index.
    gold : sequence of int
        The evaluation items' gold codes.
    runs : mapping
        ``stage -> layer -> [S x n code matrix per run]``.
    """
    if not _HASH_RE.match(split_sha256 or ""):
        raise FineGrainError(f"split_sha256 {split_sha256!r} is not 'sha256:<64 hex>'")
    dtype = code_dtype(len(labels))
    gold = np.asarray(gold)
    stages = {}
    for stage, per_layer in runs.items():
        stages[stage] = {}
        for layer, matrices in per_layer.items():
            encoded = []
            for matrix in matrices:
                matrix = np.asarray(matrix)
                if matrix.shape != (len(seeds), gold.size):
                    raise FineGrainError(f"{stage} layer {layer}: predictions have shape {matrix.shape}, expected {(len(seeds), gold.size)}")
                encoded.append(encode_codes(matrix, dtype))
            stages[stage][str(layer)] = encoded
    return {
        "format": FORMAT,
        "level": level,
        "shots": int(shots),
        "seeds": [int(s) for s in seeds],
        "coarse_seeds": [int(s) for s in coarse_seeds],
        "split_sha256": split_sha256,
        "labels": list(labels),
        "dtype": dtype,
        "gold": encode_codes(gold, dtype),
        "stages": stages,
    }


@dataclass(frozen=True)
class Evidence:
    """A decoded ``predictions`` block.

    Attributes
    ----------
    level, shots, seeds, coarse_seeds, split_sha256, labels
        As stored.
    gold : numpy.ndarray of shape (n,)
        Gold codes.
    predictions : dict
        ``(stage, layer) -> [S x n code matrix per run]``.
    """

    level: str
    shots: int
    seeds: tuple[int, ...]
    coarse_seeds: tuple[int, ...]
    split_sha256: str
    labels: tuple[str, ...]
    gold: np.ndarray
    predictions: dict[tuple[str, int], list[np.ndarray]]

    def correctness(self, stage: str, layer: int) -> list[np.ndarray]:
        """Per run, the ``S x n`` boolean matrix: did seed ``s``'s probe get item ``i`` right."""
        key = (stage, layer)
        if key not in self.predictions:
            raise FineGrainError(f"no stored predictions for stage {stage!r} layer {layer}")
        return [matrix == self.gold[None, :] for matrix in self.predictions[key]]

    def interval(self, stage: str, layer: int) -> RunsInterval:
        """``runs_interval`` of the stored predictions of ``stage`` at ``layer``."""
        return runs_interval(self.correctness(stage, layer))


def read_predictions(block, where: str = "predictions") -> Evidence:
    """Decode and check a ``predictions`` block; FineGrainError naming ``where`` and the fault."""
    if not isinstance(block, Mapping):
        raise FineGrainError(f"{where}: must be an object, got {type(block).__name__}")
    if block.get("format") != FORMAT:
        raise FineGrainError(f"{where}.format is {block.get('format')!r}, expected {FORMAT!r}")
    for name, kind in (("level", str), ("shots", int), ("split_sha256", str), ("dtype", str), ("gold", str)):
        if not isinstance(block.get(name), kind) or isinstance(block.get(name), bool):
            raise FineGrainError(f"{where}.{name} must be a {kind.__name__}, got {block.get(name)!r}")
    if not _HASH_RE.match(block["split_sha256"]):
        raise FineGrainError(f"{where}.split_sha256 {block['split_sha256']!r} is not 'sha256:<64 hex>'")
    seeds, coarse_seeds, labels = block.get("seeds"), block.get("coarse_seeds"), block.get("labels")
    for name, values, kind in (("seeds", seeds, int), ("coarse_seeds", coarse_seeds, int), ("labels", labels, str)):
        if not isinstance(values, list) or any(not isinstance(v, kind) or isinstance(v, bool) for v in values):
            raise FineGrainError(f"{where}.{name} must be a list of {kind.__name__}, got {values!r}")
    if not seeds or not labels or len(set(labels)) != len(labels):
        raise FineGrainError(f"{where}: needs at least one seed and distinct labels")
    dtype = block["dtype"]
    if dtype != code_dtype(len(labels)):
        raise FineGrainError(f"{where}.dtype is {dtype!r}, {len(labels)} labels are stored as {code_dtype(len(labels))!r}")
    try:
        raw = base64.b64decode(block["gold"].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise FineGrainError(f"{where}.gold: is not valid base64") from None
    n = len(raw) // _DTYPES[dtype].itemsize
    gold = decode_codes(block["gold"], dtype, (n,), f"{where}.gold")
    if n == 0 or gold.max() >= len(labels):
        raise FineGrainError(f"{where}.gold: needs at least one item, every code below {len(labels)}")
    stages = block.get("stages")
    if not isinstance(stages, Mapping) or not stages:
        raise FineGrainError(f"{where}.stages must be a non-empty object")
    predictions = {}
    for stage, per_layer in stages.items():
        if not isinstance(per_layer, Mapping):
            raise FineGrainError(f"{where}.stages.{stage} must be an object of layers")
        for layer, matrices in per_layer.items():
            here = f"{where}.stages.{stage}.{layer}"
            try:
                layer_int = int(layer)
            except ValueError:
                raise FineGrainError(f"{here}: {layer!r} is not a layer number") from None
            if not isinstance(matrices, list) or not matrices:
                raise FineGrainError(f"{here}: must be a non-empty list, one matrix per run")
            decoded = [decode_codes(m, dtype, (len(seeds), n), f"{here}[{r}]") for r, m in enumerate(matrices)]
            if any(m.max() >= len(labels) for m in decoded):
                raise FineGrainError(f"{here}: a code is not below {len(labels)} (the number of labels)")
            predictions[(stage, layer_int)] = decoded
    return Evidence(block["level"], block["shots"], tuple(seeds), tuple(coarse_seeds), block["split_sha256"], tuple(labels), gold, predictions)


@dataclass(frozen=True)
class RunsInterval:
    """A probe accuracy over one or several coarse-training runs, with its 95% interval.

    Attributes
    ----------
    value : float
        The mean over runs, seeds and items.
    runs_std : float or None
        Standard deviation (ddof=1) of the runs' accuracies; None for a single run.
    ci95 : (float, float) or None
        None with fewer than 2 probe seeds or items (no support-set variance to estimate).
    matrix : numpy.ndarray of shape (S, n)
        The correctness matrix averaged over runs (what paired comparisons pair).
    n_runs : int
    """

    value: float
    runs_std: float | None
    ci95: tuple[float, float] | None
    matrix: np.ndarray
    n_runs: int


def runs_interval(run_matrices: Sequence[np.ndarray], level: float = INTERVAL_LEVEL) -> RunsInterval:
    """The probe accuracy and its interval from each run's ``S x n`` correctness matrix.

    The matrices are averaged over runs; the interval is :func:`probe_interval` of that average,
    with the runs' spread added as ``s_runs^2 / runs`` (``s_runs`` estimated from these runs,
    ``runs - 1`` degrees of freedom). A single run adds nothing: a pretrained model has no
    training run.
    """
    matrices = [np.asarray(m, dtype=np.float64) for m in run_matrices]
    if not matrices:
        raise FineGrainError("runs_interval needs at least one run's correctness matrix")
    if any(m.shape != matrices[0].shape for m in matrices):
        raise FineGrainError(f"the runs' correctness matrices differ in shape: {[m.shape for m in matrices]}")
    average = np.mean(matrices, axis=0)
    runs_std = float(np.std([m.mean() for m in matrices], ddof=1)) if len(matrices) > 1 else None
    if average.ndim != 2 or average.shape[0] < 2 or average.shape[1] < 2:
        # One probe seed cannot show the support sets' variance: no interval rather than a wrong one.
        return RunsInterval(float(average.mean()), runs_std, None, average, len(matrices))
    low, high = probe_interval(average, runs_sd=runs_std or 0.0, n_runs=len(matrices), level=level)
    return RunsInterval(float(average.mean()), runs_std, (low, high), average, len(matrices))


def _same_interval(stored, expected) -> bool:
    if expected is None:
        return stored is None
    return isinstance(stored, list) and len(stored) == 2 and all(_close(a, b) for a, b in zip(stored, expected))


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=0.0, abs_tol=TOLERANCE)


def _shown(interval) -> str:
    return "no interval (fewer than 2 probe seeds)" if interval is None else f"[{interval[0]!r}, {interval[1]!r}]"


def check_intervals(scores: Mapping, where: str) -> list[str]:
    """Every way a result's stored intervals differ from what its stored predictions imply.

    For each stage and layer with stored predictions: the record
    ``(stage, level, layer, probe_accuracy, shots)`` must hold the value, ``runs_std`` and
    ``ci95`` that :func:`runs_interval` computes from them, and ``main_score_ci95`` must be the
    interval of the main score's record. ``scores`` is one subset's dict as written.
    """
    try:
        evidence = read_predictions(scores.get("predictions"), f"{where}: predictions")
    except FineGrainError as exc:
        return [str(exc)]
    records = {
        (r.get("stage"), r.get("level"), r.get("layer"), r.get("metric"), r.get("shots")): r for r in scores.get("records", []) if isinstance(r, Mapping)
    }
    problems = []
    for stage, layer in sorted(evidence.predictions):
        expected = evidence.interval(stage, layer)
        record = records.get((stage, evidence.level, layer, "probe_accuracy", evidence.shots))
        label = f"{where}: {stage} layer {layer} probe_accuracy@{evidence.shots}"
        if record is None:
            problems.append(f"{label}: predictions are stored but the record is missing")
            continue
        stored_ci = record.get("ci95")
        if not _close(record.get("value"), expected.value):
            problems.append(f"{label}: value {record.get('value')!r} but the stored predictions give {expected.value!r}")
        if not _close(record.get("runs_std"), expected.runs_std):
            problems.append(f"{label}: runs_std {record.get('runs_std')!r} but the stored predictions give {expected.runs_std!r}")
        if not _same_interval(stored_ci, expected.ci95):
            problems.append(f"{label}: ci95 {stored_ci!r} but the stored predictions give {_shown(expected.ci95)}")
    selected, main_ci = scores.get("selected_layer") or {}, scores.get("main_score_ci95")
    main_stage = "coarse_tuned" if "coarse_tuned" in selected else "pretrained"
    if (main_stage, selected.get(main_stage)) in evidence.predictions:
        expected = evidence.interval(main_stage, selected[main_stage]).ci95
        if not _same_interval(main_ci, expected):
            problems.append(f"{where}: main_score_ci95 {main_ci!r} but the stored predictions give {_shown(expected)}")
    else:
        problems.append(f"{where}: no stored predictions for the main score ({main_stage} layer {selected.get(main_stage)!r})")
    return problems
