"""Dataset cards: the declarative YAML files that define one FineGrainHidden task each.

A card names the data (a folder under ``MTEB_FINEGRAIN_DATA_DIR`` and/or a Hugging Face Hub
dataset), its columns, which split plays which role, and the citation metadata. Built-in cards live
in ``tasks/``; users add their own in a directory listed in ``MTEB_FINEGRAIN_TASK_PATH``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mteb_finegrain.errors import FineGrainError

TASK_PATH_ENV = "MTEB_FINEGRAIN_TASK_PATH"

_REQUIRED = ("name", "description", "reference", "license", "citation", "columns", "splits")
_OPTIONAL = ("local", "hub", "hierarchy", "levels", "download", "version", "sample", "languages", "domains", "task_subtypes", "date")
_SPLIT_ROLES_REQUIRED = ("coarse_train", "fewshot_pool", "evaluation")
_SPLIT_ROLES = (*_SPLIT_ROLES_REQUIRED, "validation")
# Roles a card may cap with a stratified sample (``sample:``); few-shot draws are small already.
_SAMPLE_ROLES = ("coarse_train", "validation", "evaluation")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_LOCAL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # one folder name, never a path
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class TaskCard:
    """One dataset card, validated.

    Attributes
    ----------
    name : str
        Short dataset name; the MTEB task is ``FineGrainHidden<name>``.
    splits : dict
        Role -> split name, for the roles ``coarse_train``, ``fewshot_pool``, ``evaluation`` and
        optionally ``validation``.
    columns : dict
        ``text`` and, for a two-level card, ``fine`` and (unless ``hierarchy`` is given)
        ``coarse`` column names.
    levels : tuple of (str, str)
        ``(level name, column)`` from the coarsest to the finest level. A two-level card without
        a ``levels:`` key has ``(("coarse", <coarse column>), ("fine", <fine column>))``.
    hierarchy : dict or None
        Fine label -> coarse label, for two-level sources without a coarse column.
    download : str or None
        How to obtain the data when it is not shipped (printed when no source has it).
    version : str
        Card version, reported in the results; bump it when the data, splits or samples change.
    sample : dict
        Role -> number of rows kept: a stratified sample (by the finest label, with the
        protocol's seed) of the ``coarse_train``, ``validation`` or ``evaluation`` rows, as MTEB
        subsamples large test splits. For datasets whose full run would cost too much (long texts).
    """

    name: str
    description: str
    reference: str
    license: str
    citation: str
    columns: dict[str, str]
    splits: dict[str, str]
    source: Path
    local: str | None = None
    hub: dict[str, str] | None = None
    hierarchy: dict[str, str] | None = None
    levels: tuple[tuple[str, str], ...] = ()
    download: str | None = None
    version: str = "1"
    sample: dict[str, int] = field(default_factory=dict)
    languages: list[str] = field(default_factory=lambda: ["eng-Latn"])
    domains: list[str] | None = None
    task_subtypes: list[str] = field(default_factory=list)
    date: tuple[str, str] | None = None

    @property
    def level_names(self) -> list[str]:
        """Level names, coarsest first (``["coarse", "fine"]`` for a plain two-level card)."""
        return [name for name, _ in self.levels]

    @property
    def task_name(self) -> str:
        """The MTEB task name, ``FineGrainHidden<name>``."""
        return f"FineGrainHidden{self.name}"


def _fail(source: Path, message: str) -> FineGrainError:
    return FineGrainError(f"{source}: {message}")


def _mapping(raw: dict, key: str, source: Path) -> dict[str, str]:
    value = raw[key]
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise _fail(source, f"'{key}' must be a mapping of non-empty strings to non-empty strings, got {value!r}")
    return dict(value)


def _string_list(raw: dict, key: str, source: Path, default):
    """An optional list of non-empty strings."""
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(source, f"'{key}' must be a non-empty list of strings, got {value!r}")
    return list(value)


def _levels(value: Any, source: Path) -> tuple[tuple[str, str], ...]:
    """``levels:`` as ``(name, column)`` pairs; an item is a column name or ``{name:, column:}``."""
    if not isinstance(value, list):
        raise _fail(source, f"'levels' must be a list of levels, coarsest first, got {value!r}")
    levels = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item:
            levels.append((item, item))
        elif isinstance(item, dict) and set(item) == {"name", "column"} and all(isinstance(v, str) and v for v in item.values()):
            levels.append((item["name"], item["column"]))
        else:
            raise _fail(source, f"'levels' item {i} must be a column name or {{name: ..., column: ...}}, got {item!r}")
    if len(levels) < 2:
        raise _fail(source, f"'levels' needs at least two levels (coarsest first), got {len(levels)}")
    names = [name for name, _ in levels]
    for label, values in (("name", names), ("column", [column for _, column in levels])):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise _fail(source, f"'levels': {label}(s) {', '.join(repeated)} used twice")
    bad = [name for name in names if not _NAME_RE.match(name)]
    if bad:
        raise _fail(source, f"'levels': level name {bad[0]!r} must be an identifier like 'sentiment'")
    return tuple(levels)


def _hub(value: Any, source: Path) -> dict:
    """``hub:`` with ``path``, ``revision`` and optional ``columns`` (the Hub copy's column names)."""
    if not isinstance(value, dict):
        raise _fail(source, f"'hub' must be a mapping with 'path' and 'revision', got {value!r}")
    unknown = sorted(set(value) - {"path", "revision", "columns"})
    if unknown:
        raise _fail(source, f"'hub': unknown key(s) {', '.join(unknown)}; keys are path, revision, columns")
    hub = {k: v for k, v in value.items() if k != "columns"}
    if not all(isinstance(v, str) and v for v in hub.values()):
        raise _fail(source, "'hub': 'path' and 'revision' must be non-empty strings")
    if "columns" in value:
        hub["columns"] = _mapping(value, "columns", source)
    return hub


def _sample(value: Any, source: Path) -> dict[str, int]:
    """``sample:`` as role -> positive number of rows."""
    if not isinstance(value, dict) or not value:
        raise _fail(source, f"'sample' must map split roles to numbers of rows, e.g. {{evaluation: 2048}}, got {value!r}")
    for role, size in value.items():
        if role not in _SAMPLE_ROLES:
            raise _fail(source, f"'sample': role {role!r} cannot be sampled; roles are {list(_SAMPLE_ROLES)}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise _fail(source, f"'sample': {role} must be a positive number of rows, got {size!r}")
    return dict(value)


def _read_yaml(source: Path) -> Any:
    """The parsed YAML of a card file; unreadable, non-UTF-8 or invalid YAML is one error line."""
    try:
        return yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise _fail(source, f"not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise _fail(source, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise _fail(source, f"cannot read card ({exc.strerror or exc})") from None


def _check_keys(raw: Any, source: Path) -> None:
    """The card is a mapping with every required key and no unknown one."""
    if not isinstance(raw, dict):
        raise _fail(source, "a card must be a YAML mapping")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise _fail(source, f"missing required key(s): {', '.join(missing)}")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _fail(source, f"unknown key(s): {', '.join(unknown)}")


def _check_texts(raw: dict, source: Path) -> None:
    """``name`` is an identifier; description, reference, license and citation are non-empty strings."""
    name = raw["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail(source, f"'name' must be an identifier like 'TREC', got {name!r}")
    for key in ("description", "reference", "license", "citation"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise _fail(source, f"'{key}' must be a non-empty string")


def _columns_and_levels(raw: dict, source: Path) -> tuple[dict[str, str], dict[str, str] | None, tuple[tuple[str, str], ...]]:
    """``columns``, ``hierarchy`` and the levels, from a ``levels:`` list or the two-level columns."""
    columns = _mapping(raw, "columns", source)
    if "text" not in columns:
        raise _fail(source, "'columns' needs text (the column holding the texts)")
    hierarchy = _mapping(raw, "hierarchy", source) if raw.get("hierarchy") is not None else None
    if raw.get("levels") is not None:
        if hierarchy is not None:
            raise _fail(source, "'hierarchy' maps fine -> coarse for two-level cards; a card with 'levels' reads every level from its own column")
        return columns, hierarchy, _levels(raw["levels"], source)
    needed = {"fine"} | (set() if hierarchy else {"coarse"})
    if needed - set(columns):
        raise _fail(
            source,
            f"'columns' needs {', '.join(sorted(needed - set(columns)))} "
            "(or a 'hierarchy:' mapping fine -> coarse instead of a coarse column, or a 'levels:' list)",
        )
    return columns, hierarchy, (("coarse", columns.get("coarse", "")), ("fine", columns["fine"]))


def _splits(raw: dict, source: Path) -> dict[str, str]:
    """``splits`` as role -> split name: every required role, no unknown one, evaluation kept apart."""
    splits = _mapping(raw, "splits", source)
    missing_roles = [r for r in _SPLIT_ROLES_REQUIRED if r not in splits]
    if missing_roles:
        raise _fail(source, f"'splits' needs role(s): {', '.join(missing_roles)}")
    bad_roles = sorted(set(splits) - set(_SPLIT_ROLES))
    if bad_roles:
        raise _fail(source, f"unknown split role(s) {bad_roles}; roles are {list(_SPLIT_ROLES)}")
    if splits["evaluation"] in (splits["fewshot_pool"], splits.get("validation")):
        raise _fail(source, "the evaluation split must differ from the few-shot and validation splits")
    return splits


def _data_source(raw: dict, source: Path) -> tuple[str | None, dict | None]:
    """``(local, hub)``: where the data is; at least one of the two is given."""
    local = raw.get("local")
    if local is not None and (not isinstance(local, str) or not _LOCAL_RE.match(local)):
        raise _fail(source, f"'local' must be a folder name (letters, digits, '.', '_', '-'), got {local!r}")
    hub = _hub(raw["hub"], source) if raw.get("hub") is not None else None
    if local is None and hub is None:
        raise _fail(source, "a card needs 'local' (folder under the data directory) or 'hub'")
    if hub is not None and not {"path", "revision"} <= set(hub):
        raise _fail(source, "'hub' needs both 'path' and 'revision'")
    return local, hub


def _download(raw: dict, source: Path) -> str | None:
    """The optional ``download`` instructions, stripped."""
    download = raw.get("download")
    if download is not None and (not isinstance(download, str) or not download.strip()):
        raise _fail(source, "'download' must be a non-empty string saying how to obtain the data")
    return download.strip() if download else None


def _version(raw: dict, source: Path) -> str:
    """``version`` as a string (YAML reads an unquoted ``2`` as a number); ``"1"`` when absent."""
    version = raw.get("version", "1")
    if isinstance(version, bool) or not isinstance(version, (str, int, float)) or not str(version).strip():
        raise _fail(source, f"'version' must be a string such as \"1\", got {version!r}")
    return str(version)


def _date(raw: dict, source: Path) -> tuple[str, str] | None:
    """The optional ``date`` as ``(first, last)`` ISO dates."""
    date = raw.get("date")
    if date is not None and not (isinstance(date, list) and len(date) == 2 and all(isinstance(d, str) and _DATE_RE.match(d) for d in date)):
        raise _fail(source, f"'date' must be two dates [\"YYYY-MM-DD\", \"YYYY-MM-DD\"], got {date!r}")
    return tuple(date) if date else None


def load_card(path: str | os.PathLike) -> TaskCard:
    """Read and validate one card.

    Parameters
    ----------
    path : str or path-like
        A ``.yaml`` card file.

    Returns
    -------
    TaskCard

    Raises
    ------
    FineGrainError
        If the file is not valid YAML or a key is missing, unknown or of the wrong type.
    """
    source = Path(path)
    raw = _read_yaml(source)
    # Checked in this order: of several faults in a card, the first one here is the one reported.
    _check_keys(raw, source)
    _check_texts(raw, source)
    columns, hierarchy, levels = _columns_and_levels(raw, source)
    splits = _splits(raw, source)
    local, hub = _data_source(raw, source)
    download = _download(raw, source)
    version = _version(raw, source)
    sample = _sample(raw["sample"], source) if raw.get("sample") is not None else {}
    languages = _string_list(raw, "languages", source, ["eng-Latn"])
    domains = _string_list(raw, "domains", source, None)
    task_subtypes = _string_list(raw, "task_subtypes", source, [])
    date = _date(raw, source)
    return TaskCard(
        name=raw["name"],
        description=raw["description"].strip(),
        reference=raw["reference"],
        license=raw["license"],
        citation=raw["citation"].strip(),
        columns=columns,
        splits=splits,
        source=source,
        local=local,
        hub=hub,
        hierarchy=hierarchy,
        levels=levels,
        download=download,
        version=version,
        sample=sample,
        languages=languages,
        domains=domains,
        task_subtypes=task_subtypes,
        date=date,
    )


def builtin_card_dir() -> Path:
    """Directory of the cards shipped with the package (``tasks/`` in a source checkout)."""
    packaged = Path(__file__).parent / "tasks"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "tasks"


def user_card_dirs() -> list[Path]:
    """Directories listed in ``MTEB_FINEGRAIN_TASK_PATH`` (``os.pathsep`` separated)."""
    value = os.environ.get(TASK_PATH_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p]


def discover_cards(skipped: list[FineGrainError] | None = None) -> tuple[list[TaskCard], list[TaskCard]]:
    """Load the built-in cards and the user's cards.

    Parameters
    ----------
    skipped : list, optional
        When given, a user card that is invalid (or reuses a name) is appended here as its
        ``FineGrainError`` and left out, so that one bad card cannot hide the others; a missing
        ``MTEB_FINEGRAIN_TASK_PATH`` directory likewise. Without it the first problem is raised.

    Returns
    -------
    builtin, user : list of TaskCard, list of TaskCard

    Raises
    ------
    FineGrainError
        If a built-in card is invalid, or (without ``skipped``) a user card is invalid, a
        directory in ``MTEB_FINEGRAIN_TASK_PATH`` does not exist, or two cards share a name.
    """

    def problem(error: FineGrainError) -> None:
        if skipped is None:
            raise error
        skipped.append(error)

    builtin = [load_card(p) for p in sorted(builtin_card_dir().glob("*.yaml"))]
    seen: dict[str, Path] = {card.name: card.source for card in builtin}
    user: list[TaskCard] = []
    for directory in user_card_dirs():
        if not directory.is_dir():
            problem(FineGrainError(f"{TASK_PATH_ENV}: '{directory}' is not a directory"))
            continue
        for path in sorted(directory.glob("*.y*ml")):
            try:
                card = load_card(path)
            except FineGrainError as error:
                problem(error)
                continue
            if card.name in seen:
                problem(FineGrainError(f"{card.source}: card name '{card.name}' is already used by {seen[card.name]}"))
                continue
            seen[card.name] = card.source
            user.append(card)
    return builtin, user
