"""Reading FineGrainHidden results back from MTEB result folders.

``mteb run`` writes ``<output>/<model>/<revision>/<Task>.json`` (MTEB's ``TaskResult`` format)
beside a ``model_meta.json``. Each subset's scores are a :class:`~mteb_finegrain.schema.SubsetScores`
whose ``records`` are flattened here into one record per (task, subset, model, stage, level,
layer, metric, shots).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import PROTOCOL_VERSION
from mteb_finegrain.schema import SubsetScores, read_subset

TASK_PREFIX = "FineGrainHidden"
RECORD_FIELDS = ("task", "subset", "model", "revision", "stage", "level", "layer", "metric", "shots", "value", "std")
# What identifies one score inside a subset's ``records``.
RECORD_KEY = ("stage", "level", "layer", "metric", "shots")


def record_key(record: dict) -> tuple:
    """``(stage, level, layer, metric, shots)`` of one record dict (level None before protocol 2)."""
    return tuple(record.get(k) for k in RECORD_KEY)


def records_by_key(records: list[dict]) -> dict[tuple, float]:
    """``(stage, level, layer, metric, shots) -> value`` for a subset's record dicts."""
    return {record_key(r): r["value"] for r in records}


@dataclass
class SubsetResult:
    """One subset's scores of one FineGrainHidden result file.

    ``scores`` is the subset's dict as mteb reads it; ``parsed`` is the same, validated.
    """

    path: Path
    task: str
    subset: str
    model: str
    revision: str | None
    dataset_revision: str | None
    mteb_version: str | None
    scores: dict
    parsed: SubsetScores

    def records(self) -> list[dict]:
        """Flat records ``{task, subset, model, revision, stage, level, layer, metric, shots, value, std}``.

        Records of protocol 4.0 add ``ci95`` (probe accuracies) and ``runs_std`` (coarse_tuned
        with several coarse-training runs) where they hold them.
        """
        base = {"task": self.task, "subset": self.subset, "model": self.model, "revision": self.revision}
        out = []
        for r in self.parsed.records:
            flat = {**base, "stage": r.stage, "level": r.level, "layer": r.layer, "metric": r.metric, "shots": r.shots, "value": r.value, "std": r.std}
            flat.update({name: getattr(r, name) for name in ("ci95", "runs_std") if getattr(r, name) is not None})
            out.append(flat)
        return out

    @property
    def levels(self) -> list:
        """Level names, coarsest first (``[None]`` for results of protocol 1)."""
        return self.parsed.levels

    def lookup(self) -> dict[tuple, float]:
        """``(stage, level, layer, metric, shots) -> value``."""
        return self.parsed.lookup()


def _model_of(result_file: Path, scores: SubsetScores) -> tuple[str, str | None]:
    meta_file = result_file.parent / "model_meta.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]:
                revision = meta.get("revision")
                return meta["name"], revision if isinstance(revision, str) else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
    return scores.model.name or result_file.parent.parent.name, scores.model.revision


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


def check_subsets(data, path: Path) -> None:
    """Validate every subset of a parsed result file against :class:`SubsetScores`.

    Raises
    ------
    FineGrainError
        If ``data`` is not an MTEB result (no ``scores`` mapping of lists), or naming the split,
        the subset and each field that breaks the schema.
    """
    if not isinstance(data, dict) or not isinstance(data.get("scores"), dict):
        raise FineGrainError(f"{path}: not an MTEB result file (no 'scores' mapping)")
    for split, subsets in data["scores"].items():
        if not isinstance(subsets, list):
            raise FineGrainError(f"{path}: split {split!r} must hold a list of subsets")
        for i, scores in enumerate(subsets):
            read_subset(scores, path, split, i)


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
        valid MTEB result or breaks the result schema (the message names the file, the subset
        and the field).
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
        check_subsets(data, path)  # our own schema first: its errors name the field
        result = read_task_result(data, path)  # mteb's own reader: its fields, our records inside its scores
        for split, subsets in result.scores.items():
            for i, scores in enumerate(subsets):
                parsed = read_subset(scores, path, split, i)  # as mteb gives it back (with its mteb_version)
                model, revision = _model_of(path, parsed)
                out.append(
                    SubsetResult(
                        path=path,
                        task=result.task_name,
                        subset=parsed.hf_subset or "default",
                        model=model,
                        revision=revision,
                        dataset_revision=result.dataset_revision,
                        mteb_version=result.mteb_version,
                        scores=scores,
                        parsed=parsed,
                    )
                )
    return out


def load_records(results_dir: str | Path) -> list[dict]:
    """All flat records under ``results_dir`` (see :meth:`SubsetResult.records`)."""
    return [record for result in load_results(results_dir) for record in result.records()]


def task_label(result: SubsetResult) -> str:
    """The task's name, with the subset after a slash when the task has several (``FineGrainHidden/trec``)."""
    return result.task if result.subset in (None, "", "default") else f"{result.task}/{result.subset}"


def load_current_results(results_dirs: Sequence[str | Path]) -> list[SubsetResult]:
    """Every FineGrainHidden subset under the folders, all of the current protocol, each (model, task) once.

    Parameters
    ----------
    results_dirs : sequence of str or Path
        Result folders, as ``mteb run --output-folder`` or a leaderboard's ``results/`` hold them.

    Returns
    -------
    list of SubsetResult

    Raises
    ------
    FineGrainError
        When a folder holds no result, a result breaks the schema, a result is of another protocol
        version, or one (model, task) appears twice.
    """
    if not results_dirs:
        raise FineGrainError("give at least one results folder")
    results, seen = [], {}
    for folder in results_dirs:
        for result in load_results(folder):
            version = result.parsed.protocol_version
            if version != PROTOCOL_VERSION:
                raise FineGrainError(f"{result.path}: protocol {version}; this table reads protocol {PROTOCOL_VERSION} results only")
            key = (result.model, task_label(result))
            if key in seen:
                raise FineGrainError(f"{key[0]} on {key[1]} appears twice: {seen[key]} and {result.path}")
            seen[key] = result.path
            results.append(result)
    return results
