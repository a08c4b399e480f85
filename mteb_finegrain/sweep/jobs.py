"""One job of a sweep: one (model, task) pair, run as ``mteb-finegrain run -t TASK -m MODEL`` runs it."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import Protocol
from mteb_finegrain.run import RunOptions, results_with_other_settings, run_tasks
from mteb_finegrain.store import file_lock
from mteb_finegrain.sweep.specs import ModelSpec

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
# Held while a job saves a result: the jobs of one model share its model_meta.json and
# run_settings.jsonl, which mteb rewrites in place (the latter read-modify-write).
SAVE_LOCK = ".mteb-finegrain-sweep.lock"
_REASON_CHARS = 300


@dataclass
class JobOutcome:
    """How one (model, task) pair of a sweep ended.

    Attributes
    ----------
    model : str
        The model's label (:attr:`ModelSpec.label`).
    task : str
    status : str
        ``done``, ``skipped`` (its result was already complete) or ``failed``.
    seconds : float
        Wall time of the job itself (for a skipped pair: of the check).
    reason : str
        Why it failed, on one line.
    result : str or None
        The result file (done or skipped).
    """

    model: str
    task: str
    status: str
    seconds: float
    reason: str = ""
    result: str | None = None


def _model_meta(spec: ModelSpec):
    """The ModelMeta ``run`` records for this model (same name and revision)."""
    import mteb

    from mteb_finegrain._plugin import local_model_meta

    model = spec.locate()
    if spec.name is not None:
        return local_model_meta(model, spec.revision, spec.name)
    return mteb.get_model_meta(model, spec.revision)


def complete_result(spec: ModelSpec, task: str, protocol: Protocol, output_folder: str, overwrite_strategy: str = "only-missing") -> Path | None:
    """The pair's result file when ``run`` would skip the pair, else None.

    Complete as ``mteb.evaluate`` judges it before it skips a task (the file of this model name
    and revision holds every evaluation split and subset of the task) and, under
    ``only-missing``, made with the settings asked for (``run`` runs a task again otherwise).

    Parameters
    ----------
    spec : ModelSpec
    task : str
        A registered FineGrainHidden task name.
    protocol : Protocol
    output_folder : str
        An ``--output-folder`` (results are under its ``results/``).
    overwrite_strategy : str
    """
    import mteb

    from mteb_finegrain._plugin import register_tasks

    meta = _model_meta(spec)
    cache = mteb.ResultCache(output_folder)
    existing = cache.load_task_result(task, meta)
    task_object = register_tasks()[task](protocol=protocol, show_progress_bar=False)
    if existing is None or existing.get_missing_evaluations(task_object):
        return None
    # run's own rule (no model needs loading for it).
    if overwrite_strategy == "only-missing" and results_with_other_settings(cache, meta, [task_object], protocol):
        return None
    return cache.get_task_result_path(task, meta)


def result_file(spec: ModelSpec, task: str, output_folder: str) -> Path:
    """Where ``run`` writes the pair's result in ``output_folder``."""
    import mteb

    return mteb.ResultCache(output_folder).get_task_result_path(task, _model_meta(spec))


def _serialize_result_saves() -> None:
    """Make mteb's ``ResultCache.save_to_cache`` hold a lock on the output folder (in this process)."""
    from mteb.cache import ResultCache

    original = ResultCache.save_to_cache
    if getattr(original, "_finegrain_sweep", False):
        return

    @functools.wraps(original)
    def save_to_cache(self, *args, **kwargs):
        Path(self.cache_path).mkdir(parents=True, exist_ok=True)
        with file_lock(Path(self.cache_path) / SAVE_LOCK):
            return original(self, *args, **kwargs)

    save_to_cache._finegrain_sweep = True
    ResultCache.save_to_cache = save_to_cache


def one_line(exc: BaseException) -> str:
    """A failure's reason on one line: the message's first line (prefixed by the type, unless ours)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else "(no message)"
    if not isinstance(exc, FineGrainError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def run_job(spec: ModelSpec, task: str, options: RunOptions, threads: int = 1, check_first: bool = True) -> JobOutcome:
    """Run one pair as ``mteb-finegrain run -t TASK -m MODEL [options]`` does; never raises.

    This is what each Ray job executes (it also works in-process).

    Parameters
    ----------
    spec : ModelSpec
    task : str
    options : RunOptions
        The protocol and where results go, with an absolute ``output_folder``.
    threads : int
        Torch threads.
    check_first : bool
        Skip the pair when its result is already complete (unless ``overwrite_strategy`` is
        ``always``); False when the sweep has just checked.

    Returns
    -------
    JobOutcome
    """
    start = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        import mteb  # noqa: F401  (importing mteb registers the tasks in this worker)

        import mteb_finegrain  # noqa: F401

        _serialize_result_saves()
        options = replace(options, quiet=True)
        if check_first and options.overwrite_strategy != "always":
            try:
                existing = complete_result(spec, task, options.protocol, options.output_folder, options.overwrite_strategy)
            except Exception:  # noqa: BLE001  (cannot tell here, e.g. a Hub id offline: run decides)
                existing = None
            if existing is not None:
                return JobOutcome(spec.label, task, SKIPPED, time.perf_counter() - start, result=str(existing))
        run_tasks(spec.locate(), [task], options, model_name=spec.name, model_revision=spec.revision)
        result = result_file(spec, task, options.output_folder)
        return JobOutcome(spec.label, task, DONE, time.perf_counter() - start, result=str(result) if result.is_file() else None)
    except Exception as exc:  # noqa: BLE001  (a failing job is reported in the table, the others go on)
        return JobOutcome(spec.label, task, FAILED, time.perf_counter() - start, reason=one_line(exc))
