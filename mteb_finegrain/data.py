"""Loading and validating a card's data: local JSON Lines first, the Hugging Face Hub otherwise.

Every split is checked on load (columns present, texts non-empty, each fine label under exactly
one coarse label, evaluation labels present in the few-shot pool). Nothing is silently dropped or
relabelled: a problem is a ``FineGrainError`` naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mteb_finegrain.cards import TaskCard
from mteb_finegrain.errors import FineGrainError

DATA_DIR_ENV = "MTEB_FINEGRAIN_DATA_DIR"
# Share of each fine class carved from the few-shot pool when a card has no validation split.
CARVED_VALIDATION_FRACTION = 0.1


@dataclass
class LabelledSplit:
    """Texts with their coarse and fine labels; ``source`` says where they came from."""

    texts: list[str]
    coarse: list[str]
    fine: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices, source: str) -> LabelledSplit:
        return LabelledSplit(
            [self.texts[i] for i in indices],
            [self.coarse[i] for i in indices],
            [self.fine[i] for i in indices],
            source,
        )


@dataclass
class CardData:
    """The four role splits of a card, ready for scoring.

    Attributes
    ----------
    coarse_train, fewshot_pool, validation, evaluation : LabelledSplit
    hierarchy : dict
        Fine label -> coarse label over all splits.
    content_hash : str
        ``sha256:`` of the split files read (or ``hub:<path>@<revision>``): the dataset revision
        recorded in the results.
    validation_carved : bool
        True when validation was carved from the few-shot pool (card without a validation split).
    """

    coarse_train: LabelledSplit
    fewshot_pool: LabelledSplit
    validation: LabelledSplit
    evaluation: LabelledSplit
    hierarchy: dict[str, str]
    content_hash: str
    validation_carved: bool


def data_dir() -> Path | None:
    """``MTEB_FINEGRAIN_DATA_DIR`` as a path, or None when unset."""
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def _read_jsonl(path: Path, card: TaskCard, digest) -> LabelledSplit:
    text_col, fine_col = card.columns["text"], card.columns["fine"]
    coarse_col = card.columns.get("coarse")
    texts, coarse, fine = [], [], []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FineGrainError(f"{path}: cannot read split file ({exc.strerror})") from None
    digest.update(path.name.encode() + b"\0" + raw)
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FineGrainError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise FineGrainError(f"{path}:{lineno}: each line must be a JSON object")
        wanted = [text_col, fine_col] + ([coarse_col] if card.hierarchy is None else [])
        missing = [c for c in wanted if c not in row]
        if missing:
            raise FineGrainError(f"{path}:{lineno}: missing column(s) {', '.join(missing)}")
        _append_row(row.get(text_col), row.get(fine_col), row.get(coarse_col), card, f"{path}:{lineno}", texts, coarse, fine)
    if not texts:
        raise FineGrainError(f"{path}: split file has no rows")
    return LabelledSplit(texts, coarse, fine, str(path))


def _append_row(text, fine_label, coarse_label, card: TaskCard, where: str, texts, coarse, fine) -> None:
    if not isinstance(text, str) or not text.strip():
        raise FineGrainError(f"{where}: empty text")
    if not isinstance(fine_label, str) or not fine_label:
        raise FineGrainError(f"{where}: fine label must be a non-empty string, got {fine_label!r}")
    if card.hierarchy is not None:
        if fine_label not in card.hierarchy:
            raise FineGrainError(f"{where}: fine label {fine_label!r} is not in the card's hierarchy ({card.source})")
        coarse_label = card.hierarchy[fine_label]
    elif not isinstance(coarse_label, str) or not coarse_label:
        raise FineGrainError(f"{where}: coarse label must be a non-empty string, got {coarse_label!r}")
    texts.append(text)
    coarse.append(coarse_label)
    fine.append(fine_label)


def _load_hub_split(card: TaskCard, split: str) -> LabelledSplit:
    from datasets import ClassLabel, load_dataset

    where = f"hub dataset {card.hub['path']}@{card.hub['revision']} split {split!r}"
    try:
        dataset = load_dataset(card.hub["path"], revision=card.hub["revision"], split=split)
    except Exception as exc:  # network, auth, missing split: one line, not a traceback
        raise FineGrainError(f"{where}: cannot load ({exc})") from None
    columns = [card.columns["text"], card.columns["fine"]] + ([card.columns["coarse"]] if card.hierarchy is None else [])
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise FineGrainError(f"{where}: missing column(s) {', '.join(missing)}")

    def column(name: str | None) -> list:
        if name is None:
            return [None] * len(dataset)
        values = dataset[name]
        feature = dataset.features[name]
        return [feature.int2str(v) for v in values] if isinstance(feature, ClassLabel) else values

    texts, coarse, fine = [], [], []
    rows = zip(column(card.columns["text"]), column(card.columns["fine"]), column(card.columns.get("coarse")))
    for i, (text, fine_label, coarse_label) in enumerate(rows):
        _append_row(text, fine_label, coarse_label, card, f"{where} row {i}", texts, coarse, fine)
    return LabelledSplit(texts, coarse, fine, where)


def _check_hierarchy(splits: list[LabelledSplit]) -> dict[str, str]:
    hierarchy: dict[str, str] = {}
    first_seen: dict[str, str] = {}
    for split in splits:
        for i, (coarse, fine) in enumerate(zip(split.coarse, split.fine)):
            if fine not in hierarchy:
                hierarchy[fine], first_seen[fine] = coarse, f"{split.source} row {i + 1}"
            elif hierarchy[fine] != coarse:
                raise FineGrainError(
                    f"{split.source} row {i + 1}: fine label {fine!r} is under coarse label {coarse!r}, "
                    f"but under {hierarchy[fine]!r} at {first_seen[fine]}; each fine label needs exactly one coarse label"
                )
    return hierarchy


def carve_validation(pool: LabelledSplit, seed: int) -> tuple[LabelledSplit, LabelledSplit]:
    """Split a stratified validation slice off the few-shot pool.

    Each fine class gives ``round(10%)`` of its examples (at least 1 when it has 2 or more, none
    when it has 1), chosen with ``seed``. Returns ``(remaining_pool, validation)``; the two are
    disjoint, so no few-shot sample is ever a validation example.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(pool.fine):
        by_class[label].append(i)
    held = []
    for label in sorted(by_class):
        members = by_class[label]
        n = 0 if len(members) < 2 else max(1, round(CARVED_VALIDATION_FRACTION * len(members)))
        held.extend(rng.choice(members, size=n, replace=False).tolist())
    held_set = set(held)
    keep = [i for i in range(len(pool)) if i not in held_set]
    return (
        pool.subset(keep, pool.source + " (minus carved validation)"),
        pool.subset(sorted(held), pool.source + " (carved validation)"),
    )


def load_card_data(card: TaskCard, seed: int = 42) -> CardData:
    """Load, validate and arrange the splits of ``card``.

    ``MTEB_FINEGRAIN_DATA_DIR/<local>/<split>.jsonl`` takes precedence; without it the card's
    ``hub`` entry is used.

    Raises
    ------
    FineGrainError
        On a missing data directory, file, split or column, an empty text, a fine label under two
        coarse labels, or evaluation fine labels missing from the few-shot pool.
    """
    roles = card.splits
    wanted = sorted(set(roles.values()))
    root = data_dir()
    if root is not None and not root.is_dir():
        raise FineGrainError(f"{DATA_DIR_ENV}={root}: data directory does not exist")
    local_dir = root / card.local if root is not None and card.local else None
    loaded: dict[str, LabelledSplit] = {}
    if local_dir is not None and (local_dir.is_dir() or card.hub is None):
        digest = hashlib.sha256()
        for split in wanted:
            path = local_dir / f"{split}.jsonl"
            if not path.is_file():
                raise FineGrainError(f"{path}: split file not found (card {card.source} needs split {split!r})")
            loaded[split] = _read_jsonl(path, card, digest)
        content_hash = "sha256:" + digest.hexdigest()
    elif card.hub is not None:
        loaded = {split: _load_hub_split(card, split) for split in wanted}
        content_hash = f"hub:{card.hub['path']}@{card.hub['revision']}"
    else:
        raise FineGrainError(
            f"{card.source}: no data for {card.task_name}: set {DATA_DIR_ENV} to a directory "
            f"holding '{card.local}/<split>.jsonl' (the card has no 'hub' entry)"
        )

    hierarchy = _check_hierarchy([loaded[s] for s in wanted])
    pool, coarse_train = loaded[roles["fewshot_pool"]], loaded[roles["coarse_train"]]
    carved = "validation" not in roles
    if carved:
        pool, validation = carve_validation(pool, seed)
        if roles["coarse_train"] == roles["fewshot_pool"]:
            coarse_train = pool  # validation stays unseen by every stage of training
    else:
        validation = loaded[roles["validation"]]
    evaluation = loaded[roles["evaluation"]]
    absent = sorted(set(evaluation.fine) - set(pool.fine))
    if absent:
        shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
        raise FineGrainError(
            f"{evaluation.source}: {len(absent)} fine label(s) of the evaluation split never occur "
            f"in the few-shot pool {pool.source}: {shown}"
        )
    return CardData(coarse_train, pool, validation, evaluation, hierarchy, content_hash, carved)

