"""The leaderboard's rules for one subset's scores, beyond the result schema.

:mod:`mteb_finegrain.schema` says what a result is (fields and types); these rules say which
results are comparable: one protocol, the card's own data, every layer and both stages scored,
every score in range, and the selected layer and main score agreeing with the records. A model
without hidden states (a non-neural control, an API model) has one "layer", ``-1`` (its final
embedding), and only the ``pretrained`` stage: there is nothing to fine-tune on coarse labels,
so its main score is the pretrained stage's.

Since protocol 4.0 a result also carries its evidence: every probe seed's predictions on the
evaluation items (``predictions``), from which every probe accuracy's 95% interval (``ci95``)
is recomputed here (:func:`mteb_finegrain.uncertainty.evidence.check_intervals`); the
coarse-training runs, the layer choice with the scoring seeds, and per-layer label-free signals
and drift (``representation``) are checked for presence, shape, range and agreement with the
records and predictions (:mod:`mteb_finegrain.leaderboard.evidence_rules`).
"""

from __future__ import annotations

import json
import math
import re

from pydantic import ValidationError

from mteb_finegrain.cards import TaskCard, discover_cards
from mteb_finegrain.data import data_dir, has_packaged_data, load_card_data
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.leaderboard.evidence_rules import check_evidence, is_finite, is_interval
from mteb_finegrain.protocol import (
    CLUSTERING_METRICS,
    KNOWN_METRICS,
    MAIN_SCORE,
    PROBE_METRICS,
    PROTOCOL_VERSION,
    STAGES,
    WITHIN_PARENT_METRICS,
    Protocol,
)
from mteb_finegrain.results import TASK_PREFIX
from mteb_finegrain.schema import MAX_PROBLEMS, Record, SubsetScores, describe_errors

# ARI and AMI are chance-corrected and may go below zero; every other score is a share in [0, 1].
SIGNED_METRICS = ("ari", "ami", "within_coarse_ami")
# Settings that do not change the scores (encode batch size) or only add optional metrics.
_SETTINGS_NOT_COMPARED = ("batch_size", "fewshot", "setfit")
_HASH_RE = re.compile(r"^(sha256:[0-9a-f]{64}|hub:[^@\s]+@\S+)$")


class DataHashes:
    """The expected ``card.data`` hash of each card, computed once per run.

    Only computed when the card's data is on this machine (``MTEB_FINEGRAIN_DATA_DIR`` or the
    packaged copy): loading from the Hub would need the network, so otherwise only the hash's
    form is checked.
    """

    def __init__(self) -> None:
        self._cache: dict[str, str | None] = {}

    def expected(self, card: TaskCard) -> str | None:
        """The card's content hash, or None when its data is not available locally."""
        if card.name not in self._cache:
            root = data_dir()
            local = root is not None and card.local and (root / card.local).is_dir()
            self._cache[card.name] = load_card_data(card).content_hash if local or has_packaged_data(card) else None
        return self._cache[card.name]


def known_cards() -> dict[str, TaskCard]:
    """Card name -> card, for the built-in cards and those in ``MTEB_FINEGRAIN_TASK_PATH``."""
    builtin, user = discover_cards()
    return {card.name: card for card in builtin + user}


def _in_range(value, metric: str | None = None) -> bool:
    low = -1.0 if metric in SIGNED_METRICS else 0.0
    return is_finite(value) and low <= value <= 1.0


def required_stages(hidden_states: bool) -> tuple[str, ...]:
    """The stages a submission must hold: both, or ``pretrained`` alone without hidden states."""
    return STAGES if hidden_states else ("pretrained",)


def check_subset(scores, task: str, cards: dict[str, TaskCard], hashes: DataHashes, where: str) -> tuple[list[str], SubsetScores | None]:
    """Problems of one subset's scores (``where`` names its file) and the scores, when they fit the schema.

    Scores that break the schema are reported field by field and checked no further: the rules
    below would only repeat the same faults.
    """
    subset = scores.get("hf_subset", "default") if isinstance(scores, dict) else "?"
    where = f"{where} [{subset}]"
    try:
        parsed = SubsetScores.model_validate(scores)
    except ValidationError as exc:
        unreadable = describe_errors(exc)
        more = [f"{where}: and {len(unreadable) - MAX_PROBLEMS} more problem(s) of the same kind"] if len(unreadable) > MAX_PROBLEMS else []
        return [f"{where}: {problem}" for problem in unreadable[:MAX_PROBLEMS]] + more, None
    problems = []
    if parsed.protocol_version != PROTOCOL_VERSION:
        problems.append(f"{where}: protocol_version is {parsed.protocol_version!r}, the leaderboard accepts protocol {PROTOCOL_VERSION} only")

    card_block = parsed.card
    expected_name = task[len(TASK_PREFIX):] if task != TASK_PREFIX else subset
    card = cards.get(card_block.name)
    if card is None:
        problems.append(f"{where}: card {card_block.name!r} is not a known dataset card")
    elif card_block.name != expected_name or (task != TASK_PREFIX and subset != "default"):
        problems.append(f"{where}: card {card_block.name!r} does not belong to task {task} subset {subset!r}")
    else:
        if card_block.levels != card.level_names:
            problems.append(f"{where}: card.levels is {card_block.levels!r}, card {card.name} has levels {card.level_names}")
        if card_block.version != card.version:
            problems.append(f"{where}: card version is {card_block.version!r}, the card is at version {card.version!r}")
        problems.extend(_check_data_hash(card_block.data, card, hashes, where))

    model = parsed.model
    layers = model.layers
    if model.hidden_states and not (layers and layers == list(range(len(layers)))):
        problems.append(f"{where}: model.layers must list every layer 0..L, got {layers!r}")
    elif not model.hidden_states and layers != [-1]:
        problems.append(f"{where}: a model without hidden states is scored on its final embedding only: model.layers must be [-1], got {layers!r}")
        layers = [-1]
    stages = required_stages(model.hidden_states)

    settings = parsed.settings
    problems.extend(_check_settings(scores["settings"], where, model.hidden_states))
    if model.hidden_states and model.pooling is not None and settings.pooling != "model" and model.pooling != settings.pooling:
        problems.append(f"{where}: model.pooling {model.pooling!r} contradicts settings.pooling {settings.pooling!r}")
    levels = card.level_names if card is not None else None
    coarse_seeds = scores["settings"].get("coarse_seed_list")
    n_runs = len(coarse_seeds) if model.hidden_states and isinstance(coarse_seeds, list) else 1
    record_problems, values = _check_records(parsed.records, layers, settings.shots, where, stages, levels, n_runs)
    problems.extend(record_problems)
    finest = (levels or ["fine"])[-1]
    problems.extend(_check_selection(parsed, layers, values, settings.main_shots, where, main_stage=stages[-1], finest=finest))
    problems.extend(check_evidence(scores, parsed, layers, stages, finest, where))
    return problems, parsed


def _check_settings(settings: dict, where: str, hidden_states: bool = True) -> list[str]:
    """``settings`` (as written) against the protocol's, key by key."""
    expected = Protocol().to_dict()
    problems = []
    for key in sorted(expected):
        if key in _SETTINGS_NOT_COMPARED:
            continue
        if key == "stages" and not hidden_states and settings.get(key) in (["pretrained"], expected[key]):
            continue  # coarse_tuned does not apply: asking for it or not gives the same scores
        if settings.get(key) != expected[key]:
            problems.append(
                f"{where}: settings.{key} is {json.dumps(settings.get(key))} but protocol "
                f"{PROTOCOL_VERSION} uses {json.dumps(expected[key])}"
            )
    return problems


def _check_records(
    records: list[Record], layers: list[int], shots: list[int], where: str, stages: tuple[str, ...] = STAGES,
    levels: list[str] | None = None, n_runs: int = 1,
) -> tuple[list[str], dict]:
    """Problems with the records, and ``(stage, level, layer, metric, shots) -> value`` of the good ones.

    ``stages`` are the stages that must be present (see :func:`required_stages`); records of any
    other stage are rejected. ``levels`` are the card's levels, coarsest first: every level needs
    every clustering and probe score, and within-parent V-measure and AMI except at the coarsest.
    Every probe_accuracy record needs its ``ci95``; with ``n_runs >= 2`` coarse-training runs,
    every coarse_tuned record its ``runs_std``.
    """
    levels = levels or ["coarse", "fine"]
    problems, seen = [], {}
    lacking: dict[str, list[str]] = {"ci95": [], "runs_std": []}
    for i, record in enumerate(records):
        stage, level, layer, metric, n = key = record.key
        label = f"{where}: record {i} ({stage}, level {level}, layer {layer}, {metric}" + (f", {n} shots)" if n is not None else ")")
        if stage not in STAGES:
            problems.append(f"{label}: unknown stage {stage!r}; stages are {list(STAGES)}")
        elif stage not in stages:
            problems.append(f"{label}: a model without hidden states has no {stage} stage")
        elif metric not in KNOWN_METRICS:
            problems.append(f"{label}: unknown metric {metric!r}")
        elif layer not in layers:
            problems.append(f"{label}: layer {layer!r} is not one of model.layers")
        elif level not in levels:
            problems.append(f"{label}: level {level!r} is not one of the card's levels {levels}")
        elif key in seen:
            problems.append(f"{label}: duplicate record")
        else:
            if not _in_range(record.value, metric):
                bounds = "[-1, 1]" if metric in SIGNED_METRICS else "[0, 1]"
                problems.append(f"{label}: value {record.value!r} is out of range {bounds}")
            if not (math.isfinite(record.std) and record.std >= 0):
                problems.append(f"{label}: std {record.std!r} must be a number >= 0")
            problems.extend(_check_uncertainty(record, label, n_runs, lacking))
            seen[key] = record.value
    for name, labels in lacking.items():
        if labels:
            more = f" (and {len(labels) - 1} more record(s) of the kind)" if len(labels) > 1 else ""
            problems.append(f"{labels[0]}: {_LACKS[name]}{more}")
    expected = [
        (level, m, None) for depth, level in enumerate(levels) for m in CLUSTERING_METRICS + (WITHIN_PARENT_METRICS if depth > 0 else ())
    ] + [(level, m, n) for level in levels for n in shots for m in PROBE_METRICS]
    for stage in stages:
        if not any(key[0] == stage for key in seen):
            problems.append(f"{where}: stage {stage} is missing (both {' and '.join(STAGES)} are required for a model with hidden states)")
            continue
        for layer in layers:
            missing = [(lv, m, n) for lv, m, n in expected if (stage, lv, layer, m, n) not in seen]
            if len(missing) == len(expected):
                problems.append(f"{where}: stage {stage}, layer {layer} is missing (no records)")
            elif missing:
                shown = ", ".join(f"{lv}:{m}" if n is None else f"{lv}:{m}@{n}" for lv, m, n in missing)
                problems.append(f"{where}: stage {stage}, layer {layer} lacks metric(s) {shown}")
    return problems, seen


_LACKS = {
    "ci95": f"ci95 is missing (protocol {PROTOCOL_VERSION} gives every probe_accuracy record its 95% interval [low, high])",
    "runs_std": "runs_std is missing (the spread over the coarse-training runs of every coarse_tuned record)",
}


def _check_uncertainty(record: Record, label: str, n_runs: int, lacking: dict[str, list[str]]) -> list[str]:
    """A record's ``ci95`` and ``runs_std``: present where due (a missing one is added to ``lacking``), in range."""
    problems = []
    if record.metric == "probe_accuracy":
        if record.ci95 is None:
            lacking["ci95"].append(label)
        elif not is_interval(record.ci95, record.value):
            problems.append(f"{label}: ci95 {record.ci95!r} must be [low, high] with 0 <= low <= value {record.value!r} <= high <= 1")
    elif record.ci95 is not None and record.metric in CLUSTERING_METRICS + WITHIN_PARENT_METRICS:
        problems.append(f"{label}: has a ci95, but a clustering score has no interval (its std is the spread over k-means seeds)")
    if record.stage == "coarse_tuned" and n_runs >= 2:
        if record.runs_std is None:
            lacking["runs_std"].append(label)
        elif not (is_finite(record.runs_std) and record.runs_std >= 0):
            problems.append(f"{label}: runs_std {record.runs_std!r} must be a number >= 0")
    elif record.stage != "coarse_tuned" and record.runs_std is not None:
        problems.append(f"{label}: has a runs_std, but the {record.stage} stage has no coarse-training runs")
    return problems


def _check_data_hash(value: str, card: TaskCard, hashes: DataHashes, where: str) -> list[str]:
    if not _HASH_RE.match(value):
        return [f"{where}: card.data {value!r} is not a data hash ('sha256:<64 hex>' or 'hub:<path>@<revision>')"]
    if value.startswith("hub:"):
        if card.hub is None:
            return [f"{where}: card.data {value!r} names a Hub dataset, but card {card.name} has no 'hub' entry"]
        wanted = f"hub:{card.hub['path']}@{card.hub['revision']}"
        return [] if value == wanted else [f"{where}: card.data is {value!r}, expected {wanted!r}"]
    try:
        expected = hashes.expected(card)
    except FineGrainError as exc:
        return [f"{where}: cannot compute the data hash of card {card.name} to compare: {exc}"]
    if expected is not None and value != expected:
        return [f"{where}: card.data is {value}, but the data of card {card.name} hashes to {expected} (different data)"]
    return []


def _check_selection(scores: SubsetScores, layers: list[int], values: dict, main_shots: int, where: str, main_stage: str = "coarse_tuned", finest: str = "fine") -> list[str]:
    """The selected layers, validation accuracies and main score agree with the records.

    ``main_stage`` is the stage the main score comes from: ``coarse_tuned``, or ``pretrained``
    for a model without hidden states.
    """
    problems = []
    selected = scores.selected_layer
    for stage in sorted({key[0] for key in values}, key=STAGES.index):  # a missing stage is reported once, above
        layer = selected.get(stage)
        if layer not in layers:
            problems.append(f"{where}: selected_layer.{stage} is {layer!r}, not one of model.layers")
            continue
        accuracies = scores.validation_probe_accuracy.get(stage, {})
        bad = [k for k, v in accuracies.items() if not _in_range(v)]
        if sorted(accuracies) != sorted(str(x) for x in layers) or bad:
            problems.append(f"{where}: validation_probe_accuracy.{stage} needs a score in [0, 1] for every layer")
        elif accuracies[str(layer)] != max(accuracies.values()):
            problems.append(f"{where}: selected_layer.{stage} = {layer} is not the layer with the best validation accuracy")
    main_score = scores.main_score
    for key, value in (("main_score", main_score), (MAIN_SCORE, scores.selected_layer_probe_accuracy)):
        if not _in_range(value):
            problems.append(f"{where}: {key} {value!r} is out of range [0, 1]")
    main_value = values.get((main_stage, finest, selected.get(main_stage), "probe_accuracy", main_shots))
    if _in_range(main_score) and main_value is not None and not math.isclose(main_score, main_value, abs_tol=1e-9):
        problems.append(
            f"{where}: main_score {main_score} differs from the {main_stage} {main_shots}-shot probe "
            f"accuracy {main_value} at the finest level ({finest}) and the selected layer"
        )
    return problems
