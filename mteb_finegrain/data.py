"""Loading and validating a card's data: the data directory, the packaged copy, then the Hub.

Every split is checked on load (columns present, texts non-empty, each label under exactly one
parent at every level, evaluation labels present in the few-shot pool). Nothing is silently dropped or
relabelled: a problem is a ``FineGrainError`` naming the file and line.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from mteb_finegrain.cards import TaskCard
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.store import sha256_chunks

DATA_DIR_ENV = "MTEB_FINEGRAIN_DATA_DIR"
# Share of each fine class carved from the few-shot pool when a card has no validation split
# (the default of ``Protocol.validation_fraction``).
CARVED_VALIDATION_FRACTION = 0.1
SPLIT_SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclass
class LabelledSplit:
    """Texts with one label per hierarchy level (coarsest first); ``source`` says where from.

    ``lines`` holds each row's line number in its file (row number for a Hub split), so that a
    problem found after loading still names the line.
    """

    texts: list[str]
    levels: list[list[str]]
    source: str
    lines: list[int] | None = None

    def __post_init__(self) -> None:
        if self.lines is None:
            self.lines = list(range(1, len(self.texts) + 1))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def coarse(self) -> list[str]:
        """Labels of the coarsest level."""
        return self.levels[0]

    @property
    def fine(self) -> list[str]:
        """Labels of the finest level."""
        return self.levels[-1]

    def subset(self, indices, source: str) -> LabelledSplit:
        return LabelledSplit(
            [self.texts[i] for i in indices],
            [[labels[i] for i in indices] for labels in self.levels],
            source,
            [self.lines[i] for i in indices],
        )


@dataclass
class CardData:
    """The four role splits of a card, ready for scoring.

    Attributes
    ----------
    coarse_train, fewshot_pool, validation, evaluation : LabelledSplit
    level_names : list of str
        Names of the hierarchy levels, coarsest first; ``LabelledSplit.levels`` follows it.
    parents : list of dict
        ``parents[i]`` maps each label of level ``i`` to its label at level ``i - 1``
        (``parents[0]`` is empty).
    content_hash : str
        ``sha256:`` of the rows read (split name, text and every level's label): the same rows
        give the same hash whatever the source (data directory, packaged copy, Hub).
    source : str
        Where the data came from: ``data directory``, ``packaged copy`` or ``hub``.
    validation_carved : bool
        True when validation was carved from the few-shot pool (card without a validation split).
    """

    coarse_train: LabelledSplit
    fewshot_pool: LabelledSplit
    validation: LabelledSplit
    evaluation: LabelledSplit
    level_names: list[str]
    parents: list[dict[str, str]]
    content_hash: str
    source: str
    validation_carved: bool

    @property
    def hierarchy(self) -> dict[str, str]:
        """Finest label -> its parent one level up."""
        return self.parents[-1]


def data_dir() -> Path | None:
    """``MTEB_FINEGRAIN_DATA_DIR`` as a path, or None when unset."""
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def packaged_data_dir() -> Path:
    """Where the data of the redistributable built-in cards ships inside the package."""
    return Path(__file__).parent / "datasets"


def find_split_file(folder: Path, split: str) -> Path | None:
    """``<split>.jsonl`` or ``<split>.jsonl.gz`` in ``folder``; None when neither exists."""
    found = [folder / f"{split}{suffix}" for suffix in SPLIT_SUFFIXES if (folder / f"{split}{suffix}").is_file()]
    if len(found) > 1:
        raise FineGrainError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def read_split_file(path: Path, card: TaskCard) -> LabelledSplit:
    """The validated rows of one split file (``.jsonl`` or ``.jsonl.gz``) of ``card``."""
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        content = raw.decode("utf-8")
    except OSError as exc:
        raise FineGrainError(f"{path}: cannot read split file ({exc.strerror or exc})") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise FineGrainError(f"{path}: not a complete gzip file ({exc})") from None
    except UnicodeDecodeError as exc:
        raise FineGrainError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = _RowCollector(card)
    # JSON Lines ends lines with "\n" only: str.splitlines() would also split inside a text at
    # characters such as U+2028 or a form feed, which JSON strings may hold unescaped.
    for lineno, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FineGrainError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise FineGrainError(f"{path}:{lineno}: each line must be a JSON object")
        missing = [c for c in rows.columns if c not in row]
        if missing:
            raise FineGrainError(f"{path}:{lineno}: missing column(s) {', '.join(missing)}")
        rows.add(row.get, f"{path}:{lineno}", lineno)
    if not rows.texts:
        raise FineGrainError(f"{path}: split file has no rows")
    return rows.split(str(path))


class _RowCollector:
    """Validates rows one at a time into texts and per-level labels."""

    def __init__(self, card: TaskCard, columns: dict[str, str] | None = None) -> None:
        self.card = card
        rename = columns or {}
        self.text_column = rename.get("text", card.columns["text"])
        # A level without a column ("") is derived: the coarse level of a card with `hierarchy:`.
        self.level_columns = [rename.get(name, column) if column else "" for name, column in card.levels]
        self.texts: list[str] = []
        self.levels: list[list[str]] = [[] for _ in card.levels]
        self.lines: list[int] = []

    @property
    def columns(self) -> list[str]:
        """The columns every row must have."""
        return [self.text_column, *(c for c in self.level_columns if c)]

    def add(self, get, where: str, line: int) -> None:
        text = get(self.text_column)
        if not isinstance(text, str) or not text.strip():
            raise FineGrainError(f"{where}: empty text" if isinstance(text, str) or text is None else f"{where}: text must be a string, got {type(text).__name__}")
        labels = []
        for (name, _), column in zip(self.card.levels, self.level_columns):
            if not column:
                continue
            label = get(column)
            if not isinstance(label, str) or not label:
                raise FineGrainError(f"{where}: {name} label (column {column!r}) must be a non-empty string, got {label!r}")
            labels.append(label)
        if self.card.hierarchy is not None:
            fine = labels[-1]
            if fine not in self.card.hierarchy:
                raise FineGrainError(f"{where}: fine label {fine!r} is not in the card's hierarchy ({self.card.source})")
            labels = [self.card.hierarchy[fine], fine]
        self.texts.append(text)
        for level, label in zip(self.levels, labels):
            level.append(label)
        self.lines.append(line)

    def split(self, source: str) -> LabelledSplit:
        return LabelledSplit(self.texts, self.levels, source, self.lines)


def _load_hub_split(card: TaskCard, split: str) -> LabelledSplit:
    from datasets import ClassLabel, load_dataset

    where = f"hub dataset {card.hub['path']}@{card.hub['revision']} split {split!r}"
    try:
        dataset = load_dataset(card.hub["path"], revision=card.hub["revision"], split=split)
    except Exception as exc:  # network, auth, missing split: one line, not a traceback
        raise FineGrainError(f"{where}: cannot load ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}){_how_to_get(card)}") from None
    rows = _RowCollector(card, card.hub.get("columns"))
    missing = [c for c in rows.columns if c not in dataset.column_names]
    if missing:
        raise FineGrainError(f"{where}: missing column(s) {', '.join(missing)}")

    def column(name: str) -> list:
        values = dataset[name]
        feature = dataset.features[name]
        return [feature.int2str(v) for v in values] if isinstance(feature, ClassLabel) else list(values)

    table = {name: column(name) for name in rows.columns}
    for i in range(len(dataset)):
        rows.add(lambda name, i=i: table[name][i], f"{where} row {i + 1}", i + 1)
    return rows.split(where)


def _how_to_get(card: TaskCard) -> str:
    return f". To get the data: {card.download}" if card.download else ""


def _rows_hash(splits: dict[str, LabelledSplit]) -> str:
    """Hash of the rows themselves, so that every source of the same rows agrees."""

    def lines():
        for name in sorted(splits):
            split = splits[name]
            yield b"split\0" + name.encode() + b"\n"
            for i, text in enumerate(split.texts):
                yield json.dumps([text, *(labels[i] for labels in split.levels)], ensure_ascii=False).encode() + b"\n"

    return "sha256:" + sha256_chunks(lines())


def _check_hierarchy(splits: list[LabelledSplit], level_names: list[str]) -> list[dict[str, str]]:
    """``parents[i]``: level-i label -> level-(i-1) label; a label under two parents is an error."""
    parents: list[dict[str, str]] = [{} for _ in level_names]
    first_seen: list[dict[str, str]] = [{} for _ in level_names]
    for split in splits:
        for i in range(len(split)):
            for depth in range(1, len(level_names)):
                child, parent = split.levels[depth][i], split.levels[depth - 1][i]
                known = parents[depth].get(child)
                if known is None:
                    parents[depth][child] = parent
                    first_seen[depth][child] = f"{split.source}:{split.lines[i]}"
                elif known != parent:
                    raise FineGrainError(
                        f"{split.source}:{split.lines[i]}: {level_names[depth]} label {child!r} is under "
                        f"{level_names[depth - 1]} label {parent!r}, but under {known!r} at {first_seen[depth][child]}; "
                        f"each {level_names[depth]} label needs exactly one {level_names[depth - 1]} label"
                    )
    return parents


def carve_validation(pool: LabelledSplit, seed: int, fraction: float = CARVED_VALIDATION_FRACTION) -> tuple[LabelledSplit, LabelledSplit]:
    """Split a stratified validation slice off the few-shot pool.

    Each fine class gives ``round(fraction * its size)`` of its examples (at least 1 when it has
    2 or more, none when it has 1), chosen with ``seed``. Returns ``(remaining_pool,
    validation)``; the two are disjoint, so no few-shot sample is ever a validation example.

    Raises
    ------
    FineGrainError
        If ``fraction`` is not strictly between 0 and 1.
    """
    if not 0 < fraction < 1:
        raise FineGrainError(f"the validation fraction must be between 0 and 1 (exclusive), got {fraction!r}")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(pool.fine):
        by_class[label].append(i)
    held = []
    for label in sorted(by_class):
        members = by_class[label]
        n = 0 if len(members) < 2 else max(1, round(fraction * len(members)))
        held.extend(rng.choice(members, size=n, replace=False).tolist())
    held_set = set(held)
    keep = [i for i in range(len(pool)) if i not in held_set]
    return (
        pool.subset(keep, pool.source + " (minus carved validation)"),
        pool.subset(sorted(held), pool.source + " (carved validation)"),
    )


def stratified_sample(split: LabelledSplit, size: int, seed: int, where: str) -> LabelledSplit:
    """``size`` rows of ``split``, stratified by the finest label, chosen with ``seed``, in file order.

    The card's ``sample:`` (as MTEB subsamples large test splits); a split of ``size`` rows or
    fewer is returned unchanged. ``where`` names the card and role in errors.
    """
    if size >= len(split):
        return split
    try:
        kept, _ = train_test_split(np.arange(len(split)), train_size=size, stratify=split.fine, random_state=seed)
    except ValueError as exc:  # a class with one row, or fewer rows than classes
        raise FineGrainError(f"{where}: cannot draw a stratified sample of {size} of {len(split)} rows: {exc}") from None
    return split.subset(sorted(kept.tolist()), f"{split.source} (stratified sample of {size})")


def local_data_folder(card: TaskCard) -> tuple[Path, str] | None:
    """The first folder holding this card's split files: the data directory, then the package."""
    if not card.local:
        return None
    root = data_dir()
    if root is not None:
        if not root.is_dir():
            raise FineGrainError(f"{DATA_DIR_ENV}={root}: data directory does not exist")
        if (root / card.local).is_dir():
            return root / card.local, "data directory"
    if has_packaged_data(card):
        return packaged_data_dir() / card.local, "packaged copy"
    return None


def has_packaged_data(card: TaskCard) -> bool:
    """Whether the card's data ships inside the package (so it runs offline, anywhere)."""
    return bool(card.local) and (packaged_data_dir() / card.local).is_dir()


def load_card_data(card: TaskCard, seed: int = 42, validation_fraction: float = CARVED_VALIDATION_FRACTION) -> CardData:
    """Load, validate and arrange the splits of ``card``.

    Sources, first match wins: ``MTEB_FINEGRAIN_DATA_DIR/<local>/<split>.jsonl[.gz]``, the copy
    packaged with mteb-finegrain (redistributable datasets only), the card's ``hub`` entry.

    Parameters
    ----------
    card : TaskCard
    seed : int, default=42
        Seed of the carved validation split and of the card's ``sample:`` (``Protocol.seed``).
    validation_fraction : float, default=0.1
        Share of each fine class carved from the few-shot pool as validation when the card has
        no validation split (``Protocol.validation_fraction``); unused otherwise.

    Raises
    ------
    FineGrainError
        On a missing data directory, file, split or column, an empty text, a label under two
        parents at any level, evaluation fine labels missing from the few-shot pool, or a
        ``sample:`` that cannot be stratified.
    """
    roles = card.splits
    wanted = sorted(set(roles.values()))
    local = local_data_folder(card)
    loaded: dict[str, LabelledSplit] = {}
    if local is not None:
        folder, source = local
        for split in wanted:
            path = find_split_file(folder, split)
            if path is None:
                raise FineGrainError(f"{folder / split}.jsonl: split file not found (card {card.source} needs split {split!r}; .jsonl or .jsonl.gz)")
            loaded[split] = read_split_file(path, card)
    elif card.hub is not None:
        source = "hub"
        loaded = {split: _load_hub_split(card, split) for split in wanted}
    else:
        where = f"'{card.local}/<split>.jsonl'" if card.local else "its split files"
        raise FineGrainError(
            f"{card.source}: no data for {card.task_name}: it is not packaged with mteb-finegrain and the card has "
            f"no 'hub' entry; set {DATA_DIR_ENV} to a directory holding {where}{_how_to_get(card)}"
        )

    parents = _check_hierarchy([loaded[s] for s in wanted], card.level_names)
    pool, coarse_train = loaded[roles["fewshot_pool"]], loaded[roles["coarse_train"]]
    carved = "validation" not in roles
    if carved:
        pool, validation = carve_validation(pool, seed, validation_fraction)
        if roles["coarse_train"] == roles["fewshot_pool"]:
            coarse_train = pool  # validation stays unseen by every stage of training
    else:
        validation = loaded[roles["validation"]]
    evaluation = loaded[roles["evaluation"]]
    sampled = {"coarse_train": coarse_train, "validation": validation, "evaluation": evaluation}
    for role, size in card.sample.items():
        sampled[role] = stratified_sample(sampled[role], size, seed, f"{card.source}: sample: {role}")
    coarse_train, validation, evaluation = sampled["coarse_train"], sampled["validation"], sampled["evaluation"]
    absent = sorted(set(evaluation.fine) - set(pool.fine))
    if absent:
        shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
        raise FineGrainError(
            f"{evaluation.source}: {len(absent)} fine label(s) of the evaluation split never occur "
            f"in the few-shot pool {pool.source}: {shown}"
        )
    return CardData(coarse_train, pool, validation, evaluation, card.level_names, parents, _rows_hash(loaded), source, carved)
