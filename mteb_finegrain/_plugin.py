"""How mteb-finegrain plugs into mteb: task registration, local model directories, CLI errors.

Called by the start-up hook (``mteb_finegrain_autoload``) right after ``mteb`` or ``mteb.cli``
has been imported, and by ``import mteb_finegrain``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.store import sha256_files

_registered: dict[str, type] = {}
_skipped: list[str] = []  # the files of the user cards skipped (named in the unknown-task error)


def register_tasks(refresh: bool = False) -> dict[str, type]:
    """Add the FineGrainHidden tasks of every card to mteb's task registry (idempotent).

    With ``refresh``, cards that appeared since the first call (a card directory added to
    ``MTEB_FINEGRAIN_TASK_PATH`` later in the process) are registered too.
    """
    if _registered and not refresh:
        return _registered
    task_module = sys.modules.get("mteb_finegrain.task")
    if task_module is not None and not hasattr(task_module, "make_task_class"):
        # mteb_finegrain.task was imported first and is itself importing mteb: it cannot be used
        # yet. The start-up hook calls ``on_import`` again when it is complete.
        return _registered
    import mteb.get_tasks  # noqa: F401  (the module; ``mteb.get_tasks`` the attribute is the function)

    registry = sys.modules["mteb.get_tasks"]

    from mteb_finegrain.cards import discover_cards
    from mteb_finegrain.data import has_packaged_data
    from mteb_finegrain.task import make_aggregate_class, make_task_class

    problems: list[FineGrainError] = []
    builtin, user = discover_cards(skipped=problems)
    # FineGrainHidden holds the built-in cards whose data ships with the package, so that it runs
    # on a fresh offline install; a card whose data may not be redistributed stays a task of its own.
    shipped = [card for card in builtin if has_packaged_data(card)]
    classes = [make_aggregate_class(shipped)] if shipped and "FineGrainHidden" not in _registered else []
    classes += [make_task_class(card) for card in builtin if card.task_name not in _registered]
    for card in (card for card in user if card.task_name not in _registered):  # a user card mteb's metadata refuses is skipped like an invalid one
        try:
            classes.append(make_task_class(card))
        except FineGrainError as error:
            problems.append(error)
    for error in (e for e in problems if str(e).split(": ", 1)[0] not in _skipped):
        # One line per bad card, once per process; every other task still registers.
        sys.stderr.write(f"mteb-finegrain: card skipped: {error}\n")
        _skipped.append(str(error).split(": ", 1)[0])  # the card file the message starts with
    for cls in classes:
        name = cls.metadata.name
        if name in registry._TASKS_REGISTRY and registry._TASKS_REGISTRY[name] is not cls:
            raise FineGrainError(f"task name {name} is already used by mteb")
        registry._TASKS_REGISTRY[name] = cls
        _registered[name] = cls
    rebind_task_list(registry.TASK_LIST, (*registry.TASK_LIST, *classes))
    return _registered


def rebind_task_list(old: tuple, new: tuple) -> None:
    """Replace mteb's ``TASK_LIST`` by ``new`` wherever a loaded module holds the ``old`` tuple.

    ``mteb.get_tasks`` owns it, but a module that did ``from mteb.get_tasks import TASK_LIST``
    earlier (mteb's API server does) holds its own reference: rebinding only the owner would let
    the two listings disagree.
    """
    for module in list(sys.modules.values()):
        if getattr(module, "TASK_LIST", None) is old:
            module.TASK_LIST = new


def register_models() -> None:
    """Add the plugin's own models (``mteb-finegrain/tfidf-svd``) to mteb's model registry.

    So that ``mteb.get_model`` and ``mteb run -m`` find them without asking the Hub (idempotent).
    """
    from mteb.models.model_implementations import MODEL_REGISTRY

    from mteb_finegrain.tfidf_svd import tfidf_svd_model_meta

    meta = tfidf_svd_model_meta()
    MODEL_REGISTRY.setdefault(meta.name, meta)


_HUB_SNAPSHOT_RE = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})/?$")


def hub_snapshot_identity(path: Path) -> tuple[str, str] | None:
    """``(org/name, commit)`` when ``path`` is a Hugging Face cache snapshot folder, else None.

    A folder ``.../models--org--name/snapshots/<commit>`` declares which public model and
    revision it holds, so results are recorded under that citable name.
    """
    match = _HUB_SNAPSHOT_RE.search(path.as_posix())
    return (f"{match['org']}/{match['name']}", match["commit"]) if match else None


def local_model_name(path: Path) -> str:
    """The name a local model directory is recorded under when none is given.

    ``local/<title of the model card>`` (the first ``# `` heading of its README.md), else
    ``local/<folder name>``.
    """
    readme = path / "README.md"
    if readme.is_file():
        match = re.search(r"^# (\S[^\n]*)$", readme.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
        if match:
            return "local/" + match.group(1).strip()
    return "local/" + path.name


def _local_model_revision(path: Path) -> str:
    """A content revision of a local model: sha256 of its config and weight files."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".txt"})
    return "sha256-" + sha256_files(path, files, length=16)


def local_model_meta(path: str | os.PathLike, revision: str | None = None, name: str | None = None):
    """ModelMeta for a model in a local directory, loaded with sentence-transformers offline.

    Named, first match wins: ``name`` (e.g. ``--model-name``), the public name a Hugging Face
    cache snapshot folder declares, ``local/<model card title>``. The revision likewise:
    ``revision``, the snapshot's commit, a hash of the files.
    """
    from mteb.models import ModelMeta

    folder = Path(path).resolve()
    snapshot = hub_snapshot_identity(folder)
    if snapshot is not None and name is None:
        name, revision = snapshot[0], revision or snapshot[1]
    return ModelMeta.create_empty(
        overwrites={
            "name": name or local_model_name(folder),
            "revision": revision or _local_model_revision(folder),
            "loader": functools.partial(_load_local_model, str(folder), model_name_override=name),
            "framework": ["Sentence Transformers", "PyTorch"],
            # No file:// reference: a result must not carry the path of the machine that made it.
            "n_parameters": _count_parameters(folder),
        }
    )


def _count_parameters(folder: Path) -> int | None:
    """Parameters in the folder's safetensors files, read from their headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(file), framework="np") as handle:
            for name in handle.keys():
                total += math.prod(handle.get_slice(name).get_shape())
    return total or None


def _load_local_model(folder: str, model_name: str | None = None, revision: str | None = None, device: str | None = None, model_name_override: str | None = None, **kwargs):
    from mteb.models import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    wrapper = SentenceTransformerEncoderWrapper(SentenceTransformer(folder, device=device, local_files_only=True))
    wrapper.mteb_model_meta = local_model_meta(folder, revision, model_name_override)
    return wrapper


def model_registry() -> dict:
    """mteb's model registry: model name -> ModelMeta (the names ``mteb.get_model`` knows without the Hub)."""
    from mteb.models.model_implementations import MODEL_REGISTRY

    return MODEL_REGISTRY


def _patch_get_model_meta(mteb_module: ModuleType) -> None:
    """Let ``mteb.get_model`` / ``mteb run -m`` take a local model directory, also offline.

    mteb 2.26 asks the Hub about every name outside its registry, which fails for a path.
    """
    import mteb.models.get_model_meta as getters

    original = getters.get_model_meta
    if getattr(original, "_finegrain", False):
        return

    @functools.wraps(original)
    def get_model_meta(model_name, revision=None, *args, **kwargs):
        # Only names mteb's registry does not know: a folder that happens to be called like a
        # registered model (e.g. ./intfloat/e5-small) does not shadow it.
        if isinstance(model_name, (str, os.PathLike)) and str(model_name) not in model_registry() and Path(model_name).is_dir():
            return local_model_meta(model_name, revision)
        return original(model_name, revision, *args, **kwargs)

    get_model_meta._finegrain = True
    getters.get_model_meta = get_model_meta
    mteb_module.get_model_meta = get_model_meta


def _check_task_names(argv: list[str]) -> None:
    """Fail before any model is loaded when ``-t`` names a FineGrainHidden task that does not exist."""
    names, collecting = [], False
    for arg in argv:
        if arg in ("-t", "--tasks"):
            collecting = True
        elif arg.startswith("-"):
            collecting = False
        elif collecting:
            names.append(arg)
    unknown = [n for n in names if n.startswith("FineGrainHidden") and n not in _registered]
    if unknown:
        raise FineGrainError(unknown_tasks_message(unknown))


def require_tasks(tasks: list[str]) -> dict[str, type]:
    """Register the FineGrainHidden tasks, then check that every name in ``tasks`` is one of them.

    Returns
    -------
    dict
        Every registered task name and its class (``register_tasks()``).

    Raises
    ------
    FineGrainError
        Naming the unknown tasks and those available, before any model is loaded.
    """
    known = register_tasks()
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise FineGrainError(unknown_tasks_message(unknown))
    return known


def unknown_tasks_message(unknown: list[str]) -> str:
    """``unknown task(s) ...; available: ...``, plus why a skipped card's task is missing."""
    message = f"unknown task(s) {', '.join(unknown)}; available: {', '.join(sorted(_registered))}"
    if _skipped:
        message += f"; skipped card(s), for the reason printed above: {', '.join(_skipped)}"
    return message


def _wrap_cli_main(cli_module: ModuleType) -> None:
    """Make ``mteb`` print one line and exit 2 on bad input to a FineGrainHidden run.

    Only this plugin's own errors (``FineGrainError``) are caught; every error of mteb itself
    (an unknown task or model of mteb's) reaches the user as mteb prints it.
    """
    original = cli_module.main
    if getattr(original, "_finegrain", False):
        return

    @functools.wraps(original)
    def main(*args, **kwargs):
        try:
            _check_task_names(sys.argv[1:])
            return original(*args, **kwargs)
        except FineGrainError as exc:  # input errors of our own tasks only; mteb's stay mteb's
            sys.stderr.write(f"mteb: error: {exc}\n")
            raise SystemExit(2) from None

    main._finegrain = True
    cli_module.main = main


def _atomic_result_writes() -> None:
    """Write FineGrainHidden result files atomically (temporary file, then rename).

    mteb writes a result file in place: a run killed while writing leaves a truncated JSON file
    that makes every later ``mteb run`` of the task fail. Only this plugin's tasks are changed;
    every other task's file is written by mteb itself.
    """
    from mteb.results.task_result import TaskResult

    original = TaskResult.to_disk
    if getattr(original, "_finegrain", False):
        return

    from mteb_finegrain.store import atomic_save

    @functools.wraps(original)
    def to_disk(self, path: Path) -> None:
        if not str(getattr(self, "task_name", "")).startswith("FineGrainHidden"):
            return original(self, path)
        try:
            atomic_save(path, lambda tmp: original(self, tmp))
        except OSError as exc:  # a full disk, a read-only folder: one line, the old file intact
            raise FineGrainError(f"{path}: cannot write the result ({exc.strerror or exc}); any previous result file is unchanged") from None

    to_disk._finegrain = True
    TaskResult.to_disk = to_disk


def on_import(name: str, module: ModuleType) -> None:
    """Start-up hook callback: ``name`` (``mteb``, ``mteb.cli`` or ``mteb_finegrain.task``) has just been imported.

    ``mteb_finegrain.task`` is reported only when it was imported before mteb (its own import of
    mteb came while it was incomplete, too early to register the tasks it defines).
    """
    if name == "mteb.cli":
        _wrap_cli_main(module)
        return
    if name == "mteb_finegrain.task":
        if "mteb" in sys.modules:
            _register_or_report()
        return
    _patch_get_model_meta(module)
    _atomic_result_writes()
    register_models()
    _register_or_report()


def _register_or_report() -> None:
    try:
        register_tasks()
    except FineGrainError as exc:
        # A broken user card must not break mteb for every other task: say it once, go on.
        sys.stderr.write(f"mteb-finegrain: tasks not registered: {exc}\n")
