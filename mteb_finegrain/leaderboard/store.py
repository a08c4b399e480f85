"""The leaderboard's store of accepted results: ``<leaderboard>/results/<model_as_path>/``.

Each entry holds one model's ``FineGrainHidden*.json`` result files and its ``model_meta.json``,
copied byte for byte. Adding is atomic: files are staged in a hidden folder inside the
leaderboard directory and renamed into place, so an interrupted add leaves no half entry.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.leaderboard.validate import MODEL_META, DataHashes, Submission, validate_submission
from mteb_finegrain.store import BACKUP_PREFIX, atomic_replace_dir, file_lock, recover_replaced_dir

RESULTS = "results"
LOCK = ".leaderboard.lock"
DEFAULT_LEADERBOARD_DIR = Path("leaderboard")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def model_dir_name(model: str) -> str:
    """The folder name of a model's entry.

    Like mteb's ``org__name`` for Hub names; any other character outside ``[A-Za-z0-9._-]``
    becomes ``_`` so that no model name can escape the results folder.
    """
    name = _UNSAFE.sub("_", model.replace("/", "__"))
    return name if name and not name.startswith(".") else "_" + name


@dataclass
class Entry:
    """One accepted model in the leaderboard."""

    model: str
    revision: str
    path: Path
    meta: dict


def entries(leaderboard_dir: str | Path) -> list[Entry]:
    """The accepted entries, sorted by folder name (hidden staging folders are skipped).

    Raises
    ------
    FineGrainError
        If an entry folder lacks a readable ``model_meta.json``.
    """
    results = Path(leaderboard_dir) / RESULTS
    if not results.is_dir():
        return []
    out = []
    for folder in sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta_file = folder / MODEL_META
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise FineGrainError(f"{meta_file}: leaderboard entry without a readable model_meta.json ({exc})") from None
        if not isinstance(meta, dict) or not meta.get("name") or not meta.get("revision"):
            raise FineGrainError(f"{meta_file}: leaderboard entry without a model name and revision")
        out.append(Entry(meta["name"], meta["revision"], folder, meta))
    return out


def find_entry(leaderboard_dir: str | Path, name: str) -> Entry:
    """The accepted entry of a model, by its public name (``org/model``) or its entry folder name.

    Raises
    ------
    FineGrainError
        If no entry matches; the message lists the models in the leaderboard.
    """
    found = entries(leaderboard_dir)
    for entry in found:
        if name in (entry.model, entry.path.name):
            return entry
    known = ", ".join(entry.model for entry in found) or "none yet"
    raise FineGrainError(f"model {name!r} is not in the leaderboard at {leaderboard_dir}; models: {known}")


def add_submission(results_dir: str | Path, leaderboard_dir: str | Path, *, replace: bool = False, hashes: DataHashes | None = None) -> tuple[Submission, Path]:
    """Validate a results folder and copy it into the leaderboard.

    Parameters
    ----------
    results_dir : str or path-like
        One model's results (see :func:`validate_submission`).
    leaderboard_dir : str or path-like
        The leaderboard root; ``results/`` is created inside it when needed.
    replace : bool
        Replace the model's existing entry. Without it, adding a model already in the
        leaderboard is refused.
    hashes : DataHashes, optional
        Cache of the cards' data hashes.

    Returns
    -------
    submission : Submission
    entry : Path
        The entry folder.

    Raises
    ------
    FineGrainError
        If the submission is rejected, the model is already in the leaderboard and ``replace``
        is false, or its folder name is taken by another model. Nothing is changed then.
    """
    root = Path(leaderboard_dir)
    if root.exists() and not root.is_dir():
        raise FineGrainError(f"{root}: leaderboard directory is not a directory")
    submission = validate_submission(results_dir, hashes)
    root.mkdir(parents=True, exist_ok=True)
    with leaderboard_lock(root):
        return submission, _store(submission, root, replace)


def leaderboard_lock(root: Path):
    """The lock every writer of the leaderboard holds: a second ``add`` or ``build`` waits."""
    return file_lock(root / LOCK)


def recover(root: Path) -> None:
    """Finish or undo what a killed ``add`` left (call with the lock held).

    A replace moves the old entry to ``.old-<entry>`` and then the new one into place: when the
    process dies between the two renames, the old entry is put back; when it died after, the
    backup is deleted. Staging folders (``.add-*``) never held an accepted entry and are removed.
    """
    results = root / RESULTS
    if not results.is_dir():
        return
    for backup in results.glob(BACKUP_PREFIX + "*"):
        recover_replaced_dir(results / backup.name.removeprefix(BACKUP_PREFIX))
    for staging in results.glob(".add-*"):
        shutil.rmtree(staging, ignore_errors=True)


def _store(submission: Submission, root: Path, replace: bool) -> Path:
    recover(root)
    target = root / RESULTS / model_dir_name(submission.model)
    existing = {entry.path: entry for entry in entries(root)}
    if target in existing:
        entry = existing[target]
        if entry.model != submission.model:
            raise FineGrainError(
                f"{target}: this entry belongs to model {entry.model!r}; {submission.model!r} maps to the same "
                "folder name and cannot be added (entries of other models are never overwritten)"
            )
        if not replace:
            raise FineGrainError(
                f"model {submission.model!r} is already in the leaderboard (revision {entry.revision}); "
                "use --replace to replace its entry"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".add-", dir=target.parent))
    try:
        for path in [*submission.result_files, submission.meta_file]:
            shutil.copyfile(path, staging / path.name)
        atomic_replace_dir(staging, target)  # an interrupted swap is undone by recover()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
