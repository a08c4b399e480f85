"""Run FineGrainHidden tasks on one model and write mteb result files: what ``mteb-finegrain run``
and every job of ``mteb-finegrain sweep`` do (:func:`run_tasks`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import PROTOCOL_VERSION, Protocol

OVERWRITE_STRATEGIES = ("always", "never", "only-missing", "only-cache")
# Names, anywhere in an exception's classes, of a failure to reach a server (requests', httpx's,
# huggingface_hub's): matched by name, so that no HTTP library needs importing to recognise them.
_NETWORK_ERRORS = {"ConnectionError", "TransportError", "TimeoutError", "OfflineModeIsEnabled", "LocalEntryNotFoundError"}


@dataclass(frozen=True)
class RunOptions:
    """How to run: the protocol, where results go, and what to show.

    Attributes
    ----------
    protocol : Protocol
    output_folder : str
        An mteb output folder (results are written under its ``results/``).
    overwrite_strategy : {"always", "never", "only-missing", "only-cache"}
        mteb's; ``only-missing`` also runs again a task whose result was made with other settings.
    quiet : bool
        No progress bars, and only mteb's errors logged.
    embedding_cache : bool
        Read and write the embedding cache.
    """

    protocol: Protocol = field(default_factory=Protocol)
    output_folder: str = "results"
    overwrite_strategy: str = "only-missing"
    quiet: bool = False
    embedding_cache: bool = True

    def __post_init__(self) -> None:
        if self.overwrite_strategy not in OVERWRITE_STRATEGIES:
            raise FineGrainError(f"overwrite_strategy must be one of {OVERWRITE_STRATEGIES}, got {self.overwrite_strategy!r}")


def run_tasks(model: str, tasks: list[str], options: RunOptions, *, model_name: str | None = None, model_revision: str | None = None) -> Path:
    """Run FineGrainHidden ``tasks`` on ``model`` and write their results.

    Parameters
    ----------
    model : str
        A Hugging Face model id, a name mteb's registry knows, or a local model directory.
    tasks : list of str
        Registered FineGrainHidden task names.
    options : RunOptions
    model_name : str or None
        Record a local model directory under this public name (``org/name``).
    model_revision : str or None
        The model's revision (for a local directory: recorded as given).

    Returns
    -------
    pathlib.Path
        The folder the results were written under.

    Raises
    ------
    FineGrainError
        On an unknown task, a missing model directory, a Hub id that cannot be reached, or any
        invalid input the tasks find, on one line.
    """
    import mteb

    from mteb_finegrain._plugin import require_tasks

    known = require_tasks(tasks)
    if options.quiet:
        logging.getLogger("mteb").setLevel(logging.ERROR)
        os.environ.setdefault("TQDM_DISABLE", "1")
    protocol = options.protocol
    task_objects = [known[name](protocol=protocol, show_progress_bar=not options.quiet, embedding_cache=options.embedding_cache) for name in tasks]
    _check_model_argument(model, model_name)
    # The scoring workers start before the model loads, on the cores that loading leaves idle, not
    # on the first stage's critical path (a cached re-run of a small card is half start-up).
    from mteb_finegrain.scoring.workers import start_scoring_workers

    start_scoring_workers()
    loaded = _load_model(model, model_name, model_revision)
    cache = mteb.ResultCache(options.output_folder)
    # mteb's only-missing keeps a result whatever settings made it; one made under other settings
    # (say, other shots) is not what was asked for, so that task is run again and its file replaced.
    meta = getattr(loaded, "mteb_model_meta", None)
    stale = results_with_other_settings(cache, meta, task_objects, protocol) if options.overwrite_strategy == "only-missing" and meta is not None else []
    for name in stale:
        print(f"{name}: the existing result was made with other settings; running it again", file=sys.stderr)
    fresh = [task for task in task_objects if task.metadata.name not in stale]
    # mteb fills in a batch size of 32 when none is given, which the task would take over --batch-size.
    encode_kwargs = {"batch_size": protocol.batch_size}
    if fresh:
        mteb.evaluate(loaded, fresh, cache=cache, overwrite_strategy=options.overwrite_strategy, encode_kwargs=encode_kwargs, show_progress_bar=not options.quiet)
    if stale:
        again = [task for task in task_objects if task.metadata.name in stale]
        mteb.evaluate(loaded, again, cache=cache, overwrite_strategy="always", encode_kwargs=encode_kwargs, show_progress_bar=not options.quiet)
    return Path(options.output_folder) / "results"


def _check_model_argument(model: str, model_name: str | None) -> None:
    if model.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(model)):
        raise FineGrainError(f"--model {model!r}: no such directory (a local model is a directory holding a sentence-transformers or transformers model; a Hub id looks like org/name)")
    if model_name and not os.path.isdir(model):
        raise FineGrainError(f"--model-name names a local model directory; {model!r} is not a directory (a Hub id is recorded under its own name)")


def _load_model(model: str, model_name: str | None, model_revision: str | None) -> Any:
    """The model as mteb loads it; a Hub id that cannot be reached is one FineGrainError line."""
    import mteb

    from mteb_finegrain._plugin import local_model_meta

    if model_name:
        return local_model_meta(model, model_revision, model_name).load_model()
    try:
        return mteb.get_model(model, model_revision)
    except FineGrainError:
        raise
    except Exception as exc:
        cause = network_failure(exc)
        if cause is None or os.path.isdir(model):
            raise
        raise FineGrainError(hub_unreachable_message(model, cause)) from None


def network_failure(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (itself, its causes and contexts) that failed to reach a server, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError)) or any(cls.__name__ in _NETWORK_ERRORS for cls in type(current).__mro__):
            return current
        current = current.__cause__ or current.__context__
    return None


def hub_unreachable_message(model: str, cause: BaseException) -> str:
    """One line: ``model`` could not be reached on the Hub, why, and what to do instead."""
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    if len(reason) > 200:
        reason = reason[:199] + "…"
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    advice = (
        "HF_HUB_OFFLINE is set, so nothing is downloaded: unset HF_HUB_OFFLINE, or pass a local model directory (-m ./path/to/model)"
        if offline
        else "check the network, or pass a local model directory (-m ./path/to/model; with HF_HUB_OFFLINE=1 nothing is downloaded)"
    )
    return f"--model {model!r}: the model could not be reached on the Hugging Face Hub ({reason}); {advice}"


def results_with_other_settings(cache: Any, meta: Any, tasks: list, protocol: Protocol) -> list[str]:
    """Names of ``tasks`` whose existing result in ``cache`` for the model ``meta`` was made with
    other settings or another protocol version (``run`` runs those again).

    Parameters
    ----------
    cache : mteb.ResultCache
    meta : mteb.ModelMeta
    tasks : list of AbsTaskFineGrainHidden
    protocol : Protocol
        The protocol of this run.
    """
    wanted = json.loads(json.dumps(protocol.to_dict()))
    stale = []
    for task in tasks:
        try:
            existing = cache.load_task_result(task.metadata.name, meta)
        except Exception:  # unreadable or absent: mteb's own strategy decides
            existing = None
        if existing is None:
            continue
        for scores in existing.scores.values():
            # Batch size too: it changes padding, hence the last bits of the embeddings.
            if any((entry.get("protocol_version"), entry.get("settings")) != (PROTOCOL_VERSION, wanted) for entry in scores):
                stale.append(task.metadata.name)
                break
    return stale
