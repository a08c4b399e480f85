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
    return list(levels) if isinstance(levels, list) and levels else [None]


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


def _model_of(result_file: Path, scores: dict) -> tuple[str, str | None]:
    meta_file = result_file.parent / "model_meta.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if meta.get("name"):
                return meta["name"], meta.get("revision")
        except (OSError, json.JSONDecodeError):
            pass
    model = scores.get("model", {})
    return model.get("name") or result_file.parent.parent.name, model.get("revision")


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
        except (OSError, json.JSONDecodeError) as exc:
            raise FineGrainError(f"{path}: not a readable JSON result ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("scores"), dict):
            raise FineGrainError(f"{path}: not an MTEB result file (no 'scores' mapping)")
        for split, subsets in data["scores"].items():
            for scores in subsets:
                if "records" not in scores:
                    raise FineGrainError(f"{path}: split {split!r} has no FineGrainHidden 'records'")
                model, revision = _model_of(path, scores)
                out.append(
                    SubsetResult(
                        path=path,
                        task=data.get("task_name", path.stem),
                        subset=scores.get("hf_subset", "default"),
                        model=model,
                        revision=revision,
                        dataset_revision=data.get("dataset_revision"),
                        mteb_version=data.get("mteb_version"),
                        scores=scores,
                    )
                )
    return out


def load_records(results_dir: str | Path) -> list[dict]:
    """All flat records under ``results_dir`` (see :meth:`SubsetResult.records`)."""
    return [record for result in load_results(results_dir) for record in result.records()]
