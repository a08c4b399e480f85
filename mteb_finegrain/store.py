"""Everything mteb-finegrain writes to disk goes through here: cache folders, cache-key digests,
atomic writes and locks.

* Folders: ``cache_root()`` (``MTEB_FINEGRAIN_CACHE_DIR``, else the user cache directory) holds
  ``embeddings/`` and ``coarse_tuned/``.
* Digests: the hashes that name cache entries and identify data. Each is fixed for its inputs
  (``tests/test_store.py`` pins them): caches already on disk stay valid and the data hashes
  recorded in results stay comparable.
* Atomic writes: a file is written to a temporary file beside it and renamed over it, so a reader
  sees the old file or the new one, never a half-written one; a directory is staged beside its
  target and renamed into place. This module and the start-up hook that makes mteb's result
  writes atomic are the only places that rename files.
* Locks: ``file_lock`` (a lock file; waits, or raises ``TimeoutError``).

Only the standard library is imported at module level: the leaderboard uses this module and must
not import numpy, torch or mteb to do so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)
CACHE_DIR_ENV = "MTEB_FINEGRAIN_CACHE_DIR"
BACKUP_PREFIX = ".old-"  # a directory moved aside by atomic_replace_dir while its successor moves in

# -- folders -----------------------------------------------------------------------------------


def cache_root() -> Path:
    """``MTEB_FINEGRAIN_CACHE_DIR``, else the user cache directory of mteb-finegrain."""
    value = os.environ.get(CACHE_DIR_ENV)
    if value:
        return Path(value)
    import platformdirs

    return Path(platformdirs.user_cache_dir("mteb-finegrain"))


def embeddings_dir() -> Path:
    """``<cache root>/embeddings``: the embedding and clustering-score cache."""
    return cache_root() / "embeddings"


def checkpoints_dir() -> Path:
    """``<cache root>/coarse_tuned``: the coarse-tuned checkpoints."""
    return cache_root() / "coarse_tuned"


# -- digests -----------------------------------------------------------------------------------


def _cut(hexdigest: str, length: int | None) -> str:
    return hexdigest if length is None else hexdigest[:length]


def sha256_json(obj: Any, length: int | None = None, default: Callable[[Any], Any] | None = None) -> str:
    """sha256 hex digest of ``json.dumps(obj, sort_keys=True, default=default)`` (UTF-8).

    Parameters
    ----------
    obj : JSON-serialisable
    length : int or None
        Keep the first ``length`` hex digits; None keeps all 64.
    default : callable or None
        ``json.dumps``'s ``default`` (``str`` for keys holding paths or dtypes).
    """
    return _cut(hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest(), length)


def sha256_chunks(chunks: Iterable[bytes | memoryview], length: int | None = None) -> str:
    """sha256 hex digest of the concatenation of ``chunks`` (fed one at a time, never joined)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return _cut(digest.hexdigest(), length)


def sha256_texts(texts: Iterable[str]) -> str:
    """sha256 of an ordered list of texts, each UTF-8 and NUL-terminated (a split's rows, its labels)."""
    return sha256_chunks(text.encode() + b"\0" for text in texts)


def sha256_files(root: str | os.PathLike, files: Sequence[str | os.PathLike], length: int | None = None) -> str:
    """sha256 over ``files`` in the order given: each one's path relative to ``root`` + NUL, then its bytes.

    Files are read in blocks of 1 MiB, so model weights are hashed without holding them in memory.
    """
    root = Path(root)

    def chunks() -> Iterator[bytes]:
        for file in map(Path, files):
            yield str(file.relative_to(root)).encode() + b"\0"
            with file.open("rb") as handle:
                yield from iter(lambda: handle.read(1 << 20), b"")

    return sha256_chunks(chunks(), length)


def blake2b_array(array: np.ndarray) -> str:
    """128-bit BLAKE2b hex digest of an array's bytes in C order (its dtype and shape are not included)."""
    import numpy as np

    return hashlib.blake2b(memoryview(np.ascontiguousarray(array)).cast("B"), digest_size=16).hexdigest()


def blake2b_json(obj: Any) -> str:
    """128-bit BLAKE2b hex digest of ``json.dumps(obj, sort_keys=True)`` (UTF-8)."""
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=16).hexdigest()


# -- atomic writes -----------------------------------------------------------------------------


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new, empty file next to ``path`` (same folder, so the final rename stays on one filesystem).

    Created with mode 0o666 less the umask, as ``open`` would create ``path`` itself (``mkstemp``'s
    0o600 would carry over to the renamed file).
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: cannot create a temporary file beside {path.name}")


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, Path]]:
    """A temporary file beside ``path`` (its open descriptor and name) that replaces ``path`` when
    the ``with`` block completes, and is removed when the block fails or is interrupted."""
    handle, tmp = _temporary_beside(path)
    try:
        yield handle, tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` atomically: ``write(out)`` fills a temporary file beside it, which then replaces it.

    On any failure (including an interrupt) the temporary file is removed and ``path`` is left as
    it was. The folder must exist.

    Parameters
    ----------
    path : str or path-like
    write : callable
        Called with the temporary file opened for binary writing.
    """
    with _replacing(Path(path)) as (handle, _):
        with os.fdopen(handle, "wb") as out:
            write(out)


def atomic_save(path: str | os.PathLike, save: Callable[[Path], None]) -> None:
    """Like ``atomic_write`` for a writer that takes a file name: ``save(tmp)`` writes the temporary file."""
    with _replacing(Path(path)) as (handle, tmp):
        os.close(handle)
        save(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, encoded as is (no newline translation)."""
    data = text.encode(encoding)
    atomic_write(path, lambda out: out.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any, **json_dumps_kwargs: Any) -> None:
    """Write ``json.dumps(obj, **json_dumps_kwargs)`` to ``path`` atomically (UTF-8, no final newline)."""
    atomic_write_text(path, json.dumps(obj, **json_dumps_kwargs))


def _backup_of(target: Path) -> Path:
    return target.with_name(BACKUP_PREFIX + target.name)


def recover_replaced_dir(target: str | os.PathLike) -> None:
    """Finish or undo an ``atomic_replace_dir`` of ``target`` that a killed process left half done.

    A replacement moves the old directory aside (``.old-<name>``) and then the new one into place.
    If the process died between the two renames, the old directory is put back; if it died after,
    the backup is deleted. Call it holding the lock that guards ``target``.
    """
    target = Path(target)
    backup = _backup_of(target)
    if not backup.exists():
        return
    if target.exists():
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(backup, target)


def atomic_replace_dir(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the complete directory ``staging`` to ``target``, replacing any directory there.

    ``staging`` must be in ``target``'s folder (a rename, not a copy). Directories cannot be
    swapped in one rename: an existing ``target`` is moved aside to ``.old-<name>`` first, and put
    back if the second rename fails; see ``recover_replaced_dir`` for a process killed in between.
    Call it holding the lock that guards ``target``.
    """
    staging, target = Path(staging), Path(target)
    recover_replaced_dir(target)
    if not target.exists():
        os.replace(staging, target)
        return
    backup = _backup_of(target)
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


# -- locks -------------------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float = -1, waiting_message: str | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` (created if missing) for the ``with`` block.

    Parameters
    ----------
    path : str or path-like
        The lock file; its folder must exist.
    timeout : float, default=-1
        Seconds to wait for another holder; -1 waits as long as it takes, 0 does not wait.
    waiting_message : str or None
        Logged (warning) once when the lock is held elsewhere and this process starts to wait.

    Raises
    ------
    TimeoutError
        When the lock is still held elsewhere after ``timeout`` seconds.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if timeout == 0:
            raise
        if waiting_message:
            logger.warning("%s", waiting_message)
        lock.acquire(timeout=timeout)
    try:
        yield
    finally:
        lock.release()
