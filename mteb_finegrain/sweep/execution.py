"""Running a sweep's jobs on Ray (a new local Ray, or a cluster), longest first, skipping complete pairs."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.run import RunOptions
from mteb_finegrain.sweep.jobs import FAILED, SKIPPED, JobOutcome, complete_result, one_line, run_job
from mteb_finegrain.sweep.specs import ModelSpec

INSTALL_HINT = 'pip install "mteb-finegrain[sweep]"'
# Environment a job needs to see what the sweep sees (data, cards, checkpoint cache, Hub switches).
# A local Ray's workers inherit it anyway; a cluster started elsewhere (ray start) does not.
FORWARDED_ENV_PREFIXES = ("MTEB_FINEGRAIN_", "HF_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_", "TORCH_HOME", "TQDM_DISABLE", "TOKENIZERS_PARALLELISM")
PATH_ENV = ("MTEB_FINEGRAIN_DATA_DIR", "MTEB_FINEGRAIN_CACHE_DIR", "MTEB_FINEGRAIN_TASK_PATH")


@dataclass
class SweepResources:
    """What each job asks Ray for, and which Ray to run on.

    Attributes
    ----------
    address : str or None
        Ray cluster address (``auto``, ``host:6379``, ``ray://host:10001``); None: ``RAY_ADDRESS``,
        else a new local Ray.
    num_cpus : int or None
        CPUs of a new local Ray (default: all cores).
    cpus_per_job : int
        CPUs a job asks for.
    threads_per_job : int or None
        Torch threads of a job (default ``cpus_per_job``). The coarse_tuned stage's scores depend
        on it (the order in which training sums gradients): a job reproduces ``mteb run`` record
        for record when both use the same number of threads.
    gpus_per_job : float
        GPUs a job asks for (fractions share a GPU).
    memory_per_job_gb : float or None
        Memory a job reserves, in GB (Ray schedules no more jobs on a node than fit).
    job_logs : bool
        Show the jobs' own output on this terminal.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_job: int = 1
    threads_per_job: int | None = None
    gpus_per_job: float = 0.0
    memory_per_job_gb: float | None = None
    job_logs: bool = False


def import_ray():
    """``ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FineGrainError(f"the sweep runs on Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def job_environment() -> dict[str, str]:
    """The environment variables each job gets (see ``FORWARDED_ENV_PREFIXES``), paths made absolute."""
    env = {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)}
    for key in PATH_ENV:
        if env.get(key):
            env[key] = os.pathsep.join(os.path.abspath(os.path.expanduser(p)) if p else p for p in env[key].split(os.pathsep))
    return env


def _start_ray(ray, resources: SweepResources) -> bool:
    """Connect to or start Ray; True when this call started it (and must shut it down)."""
    if ray.is_initialized():  # the caller (a notebook, a test) is connected already: use that
        return False
    settings = {"include_dashboard": False, "log_to_driver": resources.job_logs, "logging_level": logging.ERROR}
    target = resources.address or os.environ.get("RAY_ADDRESS")
    try:
        if target:
            if resources.num_cpus is not None:
                raise FineGrainError(f"--num-cpus sizes a new local Ray; the cluster at {target} has its own resources")
            ray.init(address=target, **settings)
        else:
            # "local": a new Ray on this machine even when a `ray start` one runs (use --address auto for that)
            ray.init(address="local", num_cpus=resources.num_cpus, **settings)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if isinstance(exc, FineGrainError):
            raise
        raise FineGrainError(f"cannot start or reach Ray{f' at {target}' if target else ''}: {one_line(exc)}") from None
    return True


def _check_feasible(ray, resources: SweepResources) -> None:
    """Refuse jobs that no node could ever run: Ray would wait for them forever."""
    total = ray.cluster_resources()
    has = f"the Ray cluster has {total.get('CPU', 0):g} CPU(s), {total.get('GPU', 0):g} GPU(s), {total.get('memory', 0) / 1e9:.1f} GB of memory"
    if total.get("CPU", 0) < resources.cpus_per_job:
        raise FineGrainError(f"--cpus-per-job {resources.cpus_per_job}: more than {has}")
    if total.get("GPU", 0) < resources.gpus_per_job:
        raise FineGrainError(f"--gpus-per-job {resources.gpus_per_job:g}: more than {has}")
    if resources.memory_per_job_gb and total.get("memory", 0) < resources.memory_per_job_gb * 1e9:
        raise FineGrainError(f"--memory-per-job {resources.memory_per_job_gb:g}: more than {has}")


def run_sweep(specs: list[ModelSpec], tasks: list[str], options: RunOptions, resources: SweepResources | None = None, *, progress: bool = True) -> list[JobOutcome]:
    """Run every (model, task) pair as an independent Ray job; skip the complete ones.

    Parameters
    ----------
    specs : list of ModelSpec
    tasks : list of str
        Registered FineGrainHidden task names.
    options : RunOptions
        The protocol and where results go (``output_folder`` absolute: jobs do not share this
        working directory).
    resources : SweepResources, optional
        Which Ray to use and what each job asks for (default: a local Ray, 1 CPU per job).
    progress : bool
        Show jobs done / total.

    Returns
    -------
    list of JobOutcome
        One per pair, models first, in the order given.

    Raises
    ------
    FineGrainError
        If Ray is missing or unreachable, a task is unknown, or a job asks for more than the
        cluster has. A failing job raises nothing: it is in the outcomes.
    """
    resources = resources or SweepResources()
    ray = import_ray()  # first: without Ray, nothing else is worth doing
    import mteb  # noqa: F401  (before require_tasks: importing mteb is what registers the tasks)

    from mteb_finegrain._plugin import require_tasks

    known = require_tasks(tasks)
    from tqdm.auto import tqdm

    located: list[ModelSpec | FineGrainError] = []
    for spec in specs:
        try:
            located.append(spec.located())
        except FineGrainError as error:  # its jobs fail with this reason; the others run
            located.append(error)
    pairs = [(spec, task) for spec in located for task in tasks]
    bar = tqdm(total=len(pairs), desc="sweep", unit="job", disable=not progress)
    outcomes = _settled_without_running(pairs, specs, tasks, options, bar)
    # Longest jobs first: the last jobs to finish are then short ones, so workers idle less at the
    # end (two workers given a long and a short task in that order leave one idle at the end).
    weight = {task: _task_weight(known[task]) for task in tasks}
    todo = sorted((i for i in range(len(pairs)) if i not in outcomes), key=lambda i: -weight[pairs[i][1]])
    if todo:
        started = _start_ray(ray, resources)
        try:
            _check_feasible(ray, resources)
            _run_on_ray(ray, pairs, todo, options, resources, outcomes, bar)
        finally:
            if started:
                ray.shutdown()
    bar.close()
    return [outcomes[i] for i in range(len(pairs))]


def _settled_without_running(pairs: list[tuple], specs: list[ModelSpec], tasks: list[str], options: RunOptions, bar) -> dict[int, JobOutcome]:
    """The outcomes known before any job runs: pairs whose model was not found, and complete pairs."""
    outcomes: dict[int, JobOutcome] = {}
    for index, (spec, task) in enumerate(pairs):
        if isinstance(spec, FineGrainError):
            outcomes[index] = JobOutcome(specs[index // len(tasks)].label, task, FAILED, 0.0, reason=one_line(spec))
            bar.update(1)
            continue
        if options.overwrite_strategy != "always" and spec.is_local():
            start = time.perf_counter()
            try:
                existing = complete_result(spec, task, options.protocol, options.output_folder, options.overwrite_strategy)
            except Exception:  # noqa: BLE001  (unreadable or unknown: the job decides, as run would)
                existing = None
            if existing is not None:
                outcomes[index] = JobOutcome(spec.label, task, SKIPPED, time.perf_counter() - start, result=str(existing))
                bar.update(1)
    return outcomes


def _run_on_ray(ray, pairs: list[tuple], todo: list[int], options: RunOptions, resources: SweepResources, outcomes: dict[int, JobOutcome], bar) -> None:
    """Submit the ``todo`` pairs as Ray jobs and put each outcome in ``outcomes`` as it finishes."""
    job_options = {"num_cpus": resources.cpus_per_job, "num_gpus": resources.gpus_per_job, "max_retries": 0, "runtime_env": {"env_vars": job_environment()}}
    if resources.memory_per_job_gb:
        job_options["memory"] = int(resources.memory_per_job_gb * 1e9)
    remote_job = ray.remote(run_job).options(**job_options)
    threads = resources.threads_per_job or resources.cpus_per_job
    # A model this process could check needs no second check in its job.
    running = {remote_job.remote(pairs[i][0], pairs[i][1], options, threads, not pairs[i][0].is_local()): i for i in todo}
    pending = list(running)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            index = running[ref]
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # noqa: BLE001  (the worker died: killed, out of memory)
                spec, task = pairs[index]
                outcome = JobOutcome(spec.label, task, FAILED, 0.0, reason=one_line(exc))
            outcomes[index] = outcome
            bar.update(1)
            failed = sum(o.status == FAILED for o in outcomes.values())
            if failed:
                bar.set_postfix(failed=failed)


def _task_weight(task_class) -> int:
    """Bytes of a task's local data files: a stand-in for how long its jobs take (0 if unknown)."""
    from mteb_finegrain.data import local_data_folder

    total = 0
    for card in task_class.cards.values():
        try:
            found = local_data_folder(card)
        except FineGrainError:  # a missing data directory: the job fails with one line, at any weight
            found = None
        if found is not None:
            total += sum(path.stat().st_size for path in found[0].iterdir() if path.is_file())
    return total
