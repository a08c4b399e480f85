"""Checking a submitted results folder before it may enter the leaderboard.

Every problem is collected (not just the first), so a submitter fixes them all in one go. Scores
are only comparable under one protocol, on the same data, with every layer and both stages
scored; each rule below guards one of those. A model without hidden states (a non-neural control,
an API model) has one "layer", ``-1`` (its final embedding), and only the ``pretrained`` stage:
there is nothing to fine-tune on coarse labels, so its main score is the pretrained stage's.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mteb_finegrain.cards import TaskCard, discover_cards
from mteb_finegrain.data import data_dir, has_packaged_data, load_card_data
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import (
    CLUSTERING_METRICS,
    EVAL_SPLIT,
    KNOWN_METRICS,
    MAIN_SCORE,
    PROBE_METRICS,
    PROTOCOL_VERSION,
    STAGES,
    WITHIN_PARENT_METRICS,
    Protocol,
)
from mteb_finegrain.results import TASK_PREFIX, find_result_files, read_task_result, record_key, subset_problems

# ARI is chance-corrected and may go below zero; every other score is a share in [0, 1].
SIGNED_METRICS = ("ari",)
# Settings that do not change the scores (encode batch size) or only add optional metrics.
_SETTINGS_NOT_COMPARED = ("batch_size", "fewshot", "setfit")
_HASH_RE = re.compile(r"^(sha256:[0-9a-f]{64}|hub:[^@\s]+@\S+)$")
MODEL_META = "model_meta.json"


@dataclass
class Submission:
    """A results folder that passed every check.

    Attributes
    ----------
    model, revision : str
        The model's name and revision, as recorded in ``model_meta.json``.
    meta_file : Path
        The ``model_meta.json`` beside the result files.
    result_files : list of Path
        The ``FineGrainHidden*.json`` files, sorted.
    cards : list of str
        Names of the dataset cards the results cover, sorted.
    notes : list of str
        Checks that could not be done (e.g. the data hash without local data).
    """

    model: str
    revision: str
    meta_file: Path
    result_files: list[Path]
    cards: list[str]
    notes: list[str] = field(default_factory=list)


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


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _in_range(value, metric: str | None = None) -> bool:
    low = -1.0 if metric in SIGNED_METRICS else 0.0
    return _is_number(value) and low <= value <= 1.0


def required_stages(hidden_states: bool) -> tuple[str, ...]:
    """The stages a submission must hold: both, or ``pretrained`` alone without hidden states."""
    return STAGES if hidden_states else ("pretrained",)


def _check_settings(settings, where: str, hidden_states: bool = True) -> list[str]:
    if not isinstance(settings, dict):
        return [f"{where}: 'settings' is missing, so the protocol cannot be checked"]
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


def _check_records(records, layers: list[int], shots: list[int], where: str, stages: tuple[str, ...] = STAGES, levels: list[str] | None = None) -> tuple[list[str], dict]:
    """Problems with the records, and ``(stage, level, layer, metric, shots) -> value`` of the good ones.

    ``stages`` are the stages that must be present (see :func:`required_stages`); records of any
    other stage are rejected. ``levels`` are the card's levels, coarsest first: every level needs
    every clustering and probe score, and within-parent V-measure except at the coarsest.
    """
    levels = levels or ["coarse", "fine"]
    if not isinstance(records, list):
        return [f"{where}: 'records' must be a list"], {}
    problems, seen = [], {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(f"{where}: record {i} is not an object")
            continue
        stage, level, layer, metric, n = record_key(record)
        label = f"{where}: record {i} ({stage}, level {level}, layer {layer}, {metric}" + (f", {n} shots)" if n is not None else ")")
        if stage not in STAGES:
            problems.append(f"{label}: unknown stage {stage!r}; stages are {list(STAGES)}")
            continue
        if stage not in stages:
            problems.append(f"{label}: a model without hidden states has no {stage} stage")
            continue
        if metric not in KNOWN_METRICS:
            problems.append(f"{label}: unknown metric {metric!r}")
            continue
        if layer not in layers:
            problems.append(f"{label}: layer {layer!r} is not one of model.layers")
            continue
        if level not in levels:
            problems.append(f"{label}: level {level!r} is not one of the card's levels {levels}")
            continue
        key = (stage, level, layer, metric, n)
        if key in seen:
            problems.append(f"{label}: duplicate record")
            continue
        value, std = record.get("value"), record.get("std")
        if not _in_range(value, metric):
            bounds = "[-1, 1]" if metric in SIGNED_METRICS else "[0, 1]"
            problems.append(f"{label}: value {value!r} is out of range {bounds}")
        if not (_is_number(std) and std >= 0):
            problems.append(f"{label}: std {std!r} must be a number >= 0")
        seen[key] = value
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


def _check_subset(scores, task: str, cards: dict[str, TaskCard], hashes: DataHashes, where: str) -> tuple[list[str], str | None, dict]:
    """Problems of one subset's scores, its card name, and its ``model`` block."""
    if not isinstance(scores, dict):
        return [f"{where}: subset scores must be an object"], None, {}
    subset = scores.get("hf_subset", "default")
    where = f"{where} [{subset}]"
    unreadable = subset_problems(scores)
    if unreadable:  # wrong types: the checks below would only repeat them
        return [f"{where}: {problem}" for problem in unreadable], None, {}
    problems = []
    version = scores.get("protocol_version")
    if version != PROTOCOL_VERSION:
        problems.append(f"{where}: protocol_version is {version!r}, the leaderboard accepts protocol {PROTOCOL_VERSION} only")

    card_block = scores.get("card") if isinstance(scores.get("card"), dict) else {}
    card_name = card_block.get("name") if isinstance(card_block.get("name"), str) else None
    expected_name = task[len(TASK_PREFIX):] if task != TASK_PREFIX else subset
    card = cards.get(card_name)
    if card is None:
        problems.append(f"{where}: card {card_name!r} is not a known dataset card")
    elif card_name != expected_name or (task != TASK_PREFIX and subset != "default"):
        problems.append(f"{where}: card {card_name!r} does not belong to task {task} subset {subset!r}")
    else:
        if card_block.get("levels") != card.level_names:
            problems.append(f"{where}: card.levels is {card_block.get('levels')!r}, card {card.name} has levels {card.level_names}")
        if str(card_block.get("version")) != card.version:
            problems.append(f"{where}: card version is {card_block.get('version')!r}, the card is at version {card.version!r}")
        problems.extend(_check_data_hash(card_block.get("data"), card, hashes, where))

    model = scores.get("model") if isinstance(scores.get("model"), dict) else {}
    layers = model.get("layers")
    hidden_states = model.get("hidden_states")
    if hidden_states not in (True, False):
        problems.append(f"{where}: model.hidden_states must be true or false, got {hidden_states!r}")
        hidden_states = True
    if hidden_states and not (isinstance(layers, list) and layers and layers == list(range(len(layers)))):
        problems.append(f"{where}: model.layers must list every layer 0..L, got {layers!r}")
        layers = [x for x in layers if isinstance(x, int) and not isinstance(x, bool)] if isinstance(layers, list) else []
    elif not hidden_states and layers != [-1]:
        problems.append(f"{where}: a model without hidden states is scored on its final embedding only: model.layers must be [-1], got {layers!r}")
        layers = [-1]
    stages = required_stages(hidden_states)

    settings = scores.get("settings")
    problems.extend(_check_settings(settings, where, hidden_states))
    applied = model.get("pooling")  # absent in results written before it was recorded
    asked = settings.get("pooling") if isinstance(settings, dict) else None
    if hidden_states and applied is not None and asked != "model" and applied != asked:
        problems.append(f"{where}: model.pooling {applied!r} contradicts settings.pooling {asked!r}")
    shots = settings.get("shots") if isinstance(settings, dict) and isinstance(settings.get("shots"), list) else []
    shots = [n for n in shots if isinstance(n, int) and not isinstance(n, bool)]  # a bad one is reported by _check_settings
    main_shots = settings.get("main_shots") if isinstance(settings, dict) else None
    main_shots = main_shots if isinstance(main_shots, int) and not isinstance(main_shots, bool) else None
    levels = card.level_names if card is not None else None
    record_problems, values = _check_records(scores.get("records"), layers, shots, where, stages, levels)
    problems.extend(record_problems)
    problems.extend(_check_selection(scores, layers, values, main_shots, where, main_stage=stages[-1], finest=(levels or ["fine"])[-1]))
    return problems, card_name, model


def _check_data_hash(value, card: TaskCard, hashes: DataHashes, where: str) -> list[str]:
    if not isinstance(value, str) or not _HASH_RE.match(value):
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


def _check_selection(scores: dict, layers: list[int], values: dict, main_shots, where: str, main_stage: str = "coarse_tuned", finest: str = "fine") -> list[str]:
    """The selected layers, validation accuracies and main score agree with the records.

    ``main_stage`` is the stage the main score comes from: ``coarse_tuned``, or ``pretrained``
    for a model without hidden states.
    """
    problems = []
    selected = scores.get("selected_layer") if isinstance(scores.get("selected_layer"), dict) else {}
    validation = scores.get("validation_probe_accuracy")
    validation = validation if isinstance(validation, dict) else {}
    for stage in sorted({key[0] for key in values}, key=STAGES.index):  # a missing stage is reported once, above
        layer = selected.get(stage)
        if layer not in layers:
            problems.append(f"{where}: selected_layer.{stage} is {layer!r}, not one of model.layers")
            continue
        accuracies = validation.get(stage) if isinstance(validation.get(stage), dict) else {}
        bad = [k for k, v in accuracies.items() if not _in_range(v)]
        if sorted(accuracies, key=str) != sorted((str(x) for x in layers), key=str) or bad:
            problems.append(f"{where}: validation_probe_accuracy.{stage} needs a score in [0, 1] for every layer")
        elif accuracies[str(layer)] != max(accuracies.values()):
            problems.append(f"{where}: selected_layer.{stage} = {layer} is not the layer with the best validation accuracy")
    for key in ("main_score", MAIN_SCORE):
        if not _in_range(scores.get(key)):
            problems.append(f"{where}: {key} {scores.get(key)!r} is out of range [0, 1]")
    main_value = values.get((main_stage, finest, selected.get(main_stage), "probe_accuracy", main_shots))
    if _in_range(scores.get("main_score")) and main_value is not None and not math.isclose(scores["main_score"], main_value, abs_tol=1e-9):
        problems.append(
            f"{where}: main_score {scores['main_score']} differs from the {main_stage} {main_shots}-shot probe "
            f"accuracy {main_value} at the finest level ({finest}) and the selected layer"
        )
    return problems


# file:// URLs, POSIX absolute paths of two or more parts, Windows drive paths.
_ABSOLUTE_PATH_RE = re.compile(r"(file://|^/[^/\s]+/\S|^[A-Za-z]:[\\/])")


def absolute_paths(document, where: str = "") -> list[tuple[str, str]]:
    """``(json path, value)`` of every string in ``document`` that is an absolute local path."""
    if isinstance(document, str):
        return [(where or "the file", document)] if _ABSOLUTE_PATH_RE.search(document) else []
    if isinstance(document, dict):
        return [hit for key, value in document.items() for hit in absolute_paths(value, f"{where}.{key}" if where else str(key))]
    if isinstance(document, list):
        return [hit for i, value in enumerate(document) for hit in absolute_paths(value, f"{where}[{i}]")]
    return []


def _path_problems(shown: str, document) -> list[str]:
    return [
        f"{shown}: {where} holds the absolute path {value!r} of the machine that ran it; leave it out (a result must not depend on where it was made)"
        for where, value in absolute_paths(document)
    ]


def _text(value) -> str | None:
    """``value`` when it is a string (or None), else its repr: hashable and printable."""
    return value if value is None or isinstance(value, str) else repr(value)


def _read_json(path: Path, problems: list[str], shown: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{shown}: not a readable JSON file ({exc})")
        return None


def validate_submission(results_dir: str | Path, hashes: DataHashes | None = None) -> Submission:
    """Check a results folder of one model against every leaderboard rule.

    Parameters
    ----------
    results_dir : str or path-like
        A folder holding ``FineGrainHidden*.json`` result files (at any depth, e.g. an ``mteb``
        output folder) and, beside them, the ``model_meta.json`` that ``mteb`` writes.
    hashes : DataHashes, optional
        Cache of the cards' data hashes; a new one by default.

    Returns
    -------
    Submission

    Raises
    ------
    FineGrainError
        Listing every problem found, one per line: unknown task or card, wrong protocol version
        or settings, a missing stage, layer, metric or shot count, a score out of range, a
        missing model name or revision, or a data hash that does not match the card's data.
    """
    root = Path(results_dir)
    files = find_result_files(root)
    if not files:
        raise FineGrainError(f"{root}: no {TASK_PREFIX}*.json result files found")
    hashes = hashes or DataHashes()
    cards = known_cards()
    known_tasks = {TASK_PREFIX} | {TASK_PREFIX + name for name in cards}
    problems: list[str] = []
    covered: dict[str, str] = {}
    models: set[tuple] = set()
    meta_files = sorted({f.parent / MODEL_META for f in files})
    for path in files:
        shown = str(path.relative_to(root))
        data = _read_json(path, problems, shown)
        if data is None:
            continue
        problems.extend(_path_problems(shown, data))
        task = data.get("task_name") if isinstance(data, dict) else None
        task = task if isinstance(task, str) else repr(task)
        if task not in known_tasks:
            problems.append(f"{shown}: task {task!r} is not a FineGrainHidden task of a known card ({', '.join(sorted(known_tasks))})")
            continue
        splits = data.get("scores")
        if not isinstance(splits, dict) or not isinstance(splits.get(EVAL_SPLIT), list) or not splits[EVAL_SPLIT]:
            problems.append(f"{shown}: no scores for split {EVAL_SPLIT!r}")
            continue
        try:
            read_task_result(data, path)  # what mteb itself can read back, beyond our own checks
        except FineGrainError as error:
            problems.append(f"{shown}: {str(error).split(': ', 1)[1]}")
        for scores in splits[EVAL_SPLIT]:
            subset_problems, card_name, model = _check_subset(scores, task, cards, hashes, shown)
            problems.extend(subset_problems)
            if card_name in cards:
                if card_name in covered:
                    problems.append(f"{shown}: card {card_name} is scored twice (also in {covered[card_name]})")
                covered[card_name] = shown
            models.add((_text(model.get("name")), _text(model.get("revision")), str(path.parent)))

    model_names: set[tuple[str, str]] = set()
    for meta_file in meta_files:
        shown = str(meta_file.relative_to(root))
        if not meta_file.is_file():
            problems.append(f"{shown}: missing; mteb writes it beside the results and it records the model name and revision")
            continue
        meta = _read_json(meta_file, problems, shown)
        if meta is None:
            continue
        problems.extend(_path_problems(shown, meta))
        name, revision = (meta.get(k) if isinstance(meta, dict) else None for k in ("name", "revision"))
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{shown}: model name is not recorded")
        if not isinstance(revision, str) or not revision.strip():
            problems.append(f"{shown}: model revision is not recorded")
        if isinstance(name, str) and isinstance(revision, str):
            model_names.add((name, revision))
            for result_name, result_revision, folder in sorted(models, key=str):
                if folder == str(meta_file.parent) and (result_name, result_revision) != (name, revision):
                    problems.append(
                        f"{shown}: records model {name!r} revision {revision!r}, but the results beside it "
                        f"name {result_name!r} revision {result_revision!r}"
                    )
    if len(model_names) > 1:
        listed = ", ".join(f"{n} ({r})" for n, r in sorted(model_names))
        problems.append(f"{root}: holds results of {len(model_names)} models or revisions ({listed}); add one at a time")
    if problems:
        raise FineGrainError(f"{root}: submission rejected, {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    (model, revision), = model_names
    notes = [
        f"card {name}: data hash not compared (no data under MTEB_FINEGRAIN_DATA_DIR and none packaged); its form was checked"
        for name in sorted(covered)
        if hashes.expected(cards[name]) is None
    ]
    return Submission(model, revision, meta_files[0], files, sorted(covered), notes)
