"""Checking a submitted results folder before it may enter the leaderboard.

Every problem is collected (not just the first), so a submitter fixes them all in one go. This
module walks the folder (result files, ``model_meta.json``, the model they name); each subset's
scores are checked by :mod:`mteb_finegrain.leaderboard.rules`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.leaderboard.rules import DataHashes, check_subset, known_cards
from mteb_finegrain.protocol import EVAL_SPLIT
from mteb_finegrain.results import TASK_PREFIX, find_result_files, read_task_result

MODEL_META = "model_meta.json"
__all__ = ["MODEL_META", "DataHashes", "Submission", "absolute_paths", "validate_submission"]


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
        Listing every problem found, one per line: a field that breaks the result schema, unknown
        task or card, wrong protocol version or settings, a missing stage, layer, metric or shot
        count, a score out of range, a missing or wrong 95% interval (every stored interval is
        recomputed from the stored predictions), missing predictions, coarse-training runs,
        selection or representation, a missing model name or revision, or a data hash that does
        not match the card's data.
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
            found, parsed = check_subset(scores, task, cards, hashes, shown)
            problems.extend(found)
            if parsed is None:  # not a result: its fields were reported
                models.add((None, None, str(path.parent)))
                continue
            if parsed.card.name in cards:
                if parsed.card.name in covered:
                    problems.append(f"{shown}: card {parsed.card.name} is scored twice (also in {covered[parsed.card.name]})")
                covered[parsed.card.name] = shown
            models.add((parsed.model.name, parsed.model.revision, str(path.parent)))

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
