"""Reading FineGrainHidden results back from MTEB result folders.

``mteb run`` writes ``<output>/<model>/<revision>/<Task>.json`` (MTEB's ``TaskResult`` format)
beside a ``model_meta.json``. Each subset's scores carry this plugin's ``records`` list, which is
flattened here into one record per (task, subset, model, stage, layer, metric, shots).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mteb_finegrain.errors import FineGrainError

TASK_PREFIX = "FineGrainHidden"
RECORD_FIELDS = ("task", "subset", "model", "revision", "stage", "level", "layer", "metric", "shots", "value", "std")
# What identifies one score inside a subset's ``records``.
RECORD_KEY = ("stage", "level", "layer", "metric", "shots")


def record_key(record: dict) -> tuple:
    """``(stage, level, layer, metric, shots)`` of one record (level None before protocol 2)."""
    return tuple(record.get(k) for k in RECORD_KEY)


def records_by_key(records: list[dict]) -> dict[tuple, float]:
    """``(stage, level, layer, metric, shots) -> value`` for a subset's records."""
    return {record_key(r): r["value"] for r in records}


def level_names(scores: dict) -> list:
    """The card's levels, coarsest first, as a result records them (``[None]`` before protocol 2)."""
    card = scores.get("card") if isinstance(scores.get("card"), dict) else {}
    levels = card.get("levels")
    return list(levels) if isinstance(levels, list) and levels and all(isinstance(x, str) for x in levels) else [None]


@dataclass
class SubsetResult:
    """One subset's scores of one FineGrainHidden result file."""

    path: Path
    task: str
    subset: str
    model: str
    revision: str | None
    dataset_revision: str | None
    mteb_version: str | None
    scores: dict

    def records(self) -> list[dict]:
        """Flat records ``{task, subset, model, revision, stage, level, layer, metric, shots, value, std}``."""
        base = {"task": self.task, "subset": self.subset, "model": self.model, "revision": self.revision}
        return [{**base, **{k: r.get(k) for k in (*RECORD_KEY, "value", "std")}} for r in self.scores.get("records", [])]

    @property
    def levels(self) -> list:
        """Level names, coarsest first (``[None]`` for results of protocol 1)."""
        return level_names(self.scores)

    def lookup(self) -> dict[tuple, float]:
        """``(stage, level, layer, metric, shots) -> value``."""
        return records_by_key(self.scores.get("records", []))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional(scores: dict, key: str, kind, what: str) -> list[str]:
    return [] if key not in scores or isinstance(scores[key], kind) else [f"'{key}' must be {what}, got {type(scores[key]).__name__}"]


def subset_problems(scores) -> list[str]:
    """What keeps one subset's scores from being read back: wrong types of the fields the report uses.

    Returns one short phrase per problem (empty when the scores are readable).
    """
    if not isinstance(scores, dict):
        return [f"subset scores must be an object, got {type(scores).__name__}"]
    records = scores.get("records")
    if not isinstance(records, list):
        return ["no FineGrainHidden 'records' list"]
    problems = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(f"records[{i}] must be an object")
            continue
        checks = (
            ("stage", isinstance(record.get("stage"), str), "a string"),
            ("level", record.get("level") is None or isinstance(record.get("level"), str), "a string"),
            ("layer", _is_int(record.get("layer")), "an integer"),
            ("metric", isinstance(record.get("metric"), str), "a string"),
            ("shots", record.get("shots") is None or _is_int(record.get("shots")), "an integer or null"),
            ("value", _is_number(record.get("value")), "a number"),
            ("std", _is_number(record.get("std")), "a number"),
        )
        problems += [f"records[{i}].{key} must be {what}, got {record.get(key)!r}" for key, ok, what in checks if not ok]
        if len(problems) > 5:
            break
    problems += _optional(scores, "main_score", (int, float), "a number")
    problems += _optional(scores, "selected_layer", dict, "an object")
    problems += _optional(scores, "card", dict, "an object")
    problems += _optional(scores, "model", dict, "an object")
    problems += _optional(scores, "hf_subset", str, "a string")
    problems += _optional(scores, "coarse_training_level", (str, type(None)), "a string")
    if isinstance(scores.get("main_score"), bool):
        problems.append("'main_score' must be a number, got bool")
    selected = scores.get("selected_layer")
    if isinstance(selected, dict) and not all(_is_int(v) for v in selected.values()):
        problems.append(f"'selected_layer' values must be integers, got {selected!r}")
    card = scores.get("card")
    if isinstance(card, dict):
        levels = card.get("levels")
        if levels is not None and not (isinstance(levels, list) and levels and all(isinstance(x, str) for x in levels)):
            problems.append(f"'card.levels' must be a list of level names, got {levels!r}")
        if not isinstance(card.get("classes_per_level", {}), dict):
            problems.append("'card.classes_per_level' must be an object")
    model = scores.get("model")
    if isinstance(model, dict) and model.get("name") is not None and not isinstance(model.get("name"), str):
        problems.append(f"'model.name' must be a string, got {model.get('name')!r}")
    return problems


def _model_of(result_file: Path, scores: dict) -> tuple[str, str | None]:
    meta_file = result_file.parent / "model_meta.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]:
                revision = meta.get("revision")
                return meta["name"], revision if isinstance(revision, str) else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
    model = scores.get("model") if isinstance(scores.get("model"), dict) else {}
    revision = model.get("revision")
    return model.get("name") or result_file.parent.parent.name, revision if isinstance(revision, str) else None


def read_task_result(data: dict, path: Path):
    """``data`` (the parsed result file at ``path``) as mteb's own ``TaskResult``.

    A document mteb cannot read is a ``FineGrainError``. Parsed once by the caller, so the file
    is not read twice.
    """
    from mteb.results import TaskResult

    try:
        return TaskResult.model_validate(data)
    except Exception as exc:  # mteb's reader raises KeyError, ValidationError, ... on bad files
        raise FineGrainError(f"{path}: mteb cannot read this result file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def find_result_files(results_dir: str | Path) -> list[Path]:
    """Every ``FineGrainHidden*.json`` under ``results_dir``, sorted."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FineGrainError(f"{root}: results directory does not exist")
    return sorted(p for p in root.rglob(f"{TASK_PREFIX}*.json") if p.is_file())


def load_results(results_dir: str | Path) -> list[SubsetResult]:
    """Parse every FineGrainHidden result under ``results_dir``.

    Raises
    ------
    FineGrainError
        If the directory does not exist, holds no FineGrainHidden result, or a file is not a
        valid MTEB result.
    """
    files = find_result_files(results_dir)
    if not files:
        raise FineGrainError(f"{results_dir}: no {TASK_PREFIX}*.json result files found")
    out = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FineGrainError(f"{path}: not a readable JSON result ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("scores"), dict):
            raise FineGrainError(f"{path}: not an MTEB result file (no 'scores' mapping)")
        for split, subsets in data["scores"].items():
            if not isinstance(subsets, list):
                raise FineGrainError(f"{path}: split {split!r} must hold a list of subsets")
            for i, scores in enumerate(subsets):
                problems = subset_problems(scores)
                if problems:
                    raise FineGrainError(f"{path}: split {split!r} subset {i}: " + "; ".join(problems[:5]))
        result = read_task_result(data, path)  # mteb's own reader: its fields, our records inside its scores
        for split, subsets in result.scores.items():
            for scores in subsets:
                model, revision = _model_of(path, scores)
                out.append(
                    SubsetResult(
                        path=path,
                        task=result.task_name,
                        subset=scores.get("hf_subset", "default"),
                        model=model,
                        revision=revision,
                        dataset_revision=result.dataset_revision,
                        mteb_version=result.mteb_version,
                        scores=scores,
                    )
                )
    return out


def load_records(results_dir: str | Path) -> list[dict]:
    """All flat records under ``results_dir`` (see :meth:`SubsetResult.records`)."""
    return [record for result in load_results(results_dir) for record in result.records()]
