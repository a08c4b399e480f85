"""What every benchmark shares: timing a process tree, and recording its figures as JSON.

A benchmark ends by calling :func:`record`, which writes ``benchmarks/results/<script>.json``:
per case (a card, a task, a setting) the figures with their targets, the command that produced
them, the date, the machine (CPU model, cores, load), the library versions and the BLAS in use.
``python benchmarks/make_readme.py`` renders benchmarks/README.md's figures from these files, so
its figures section shows what a run wrote and when, never a number copied by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import operator
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS_DIR = BENCHMARKS / "results"
# The console scripts (mteb, mteb-finegrain) installed beside this interpreter.
BIN = Path(sys.executable).parent

PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "transformers", "sentence-transformers", "mteb", "mteb-finegrain")
# Variables that change how fast a run goes; their values are recorded.
SPEED_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
    "CUDA_VISIBLE_DEVICES", "MTEB_FINEGRAIN_EMBEDDING_CACHE",
)
# Variables that name folders of this machine: only whether they were set is recorded.
PATH_VARIABLES = ("MTEB_FINEGRAIN_DATA_DIR", "MTEB_FINEGRAIN_CACHE_DIR", "MTEB_FINEGRAIN_TASK_PATH")
COMPARISONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured figure.

    Parameters
    ----------
    name : str
        Short identifier, e.g. ``"floor_ratio"``.
    value : float, int, bool or str
        The figure as it should be shown (round it before recording).
    unit : str
        ``"s"``, ``"MB"``, ``"x"``, ... or ``""``.
    target : str or None
        ``"<op> <JSON literal>"`` with op one of ``< <= > >= ==``, e.g. ``"<= 1.3"`` or
        ``"== true"``; None for a figure that only informs.
    about : str
        What the figure is, in a few words.
    """

    name: str
    value: float | int | bool | str
    unit: str = ""
    target: str | None = None
    about: str = ""

    def __post_init__(self) -> None:
        if self.target is not None:
            parse_target(self.target)
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError(f"figure {self.name!r} has the value {self.value!r}; record only finite numbers")

    def met(self) -> bool | None:
        """Whether the value meets the target (None when there is no target)."""
        return None if self.target is None else meets(self.value, self.target)


def parse_target(target: str) -> tuple[str, Any]:
    """Split ``"<= 1.3"`` into ``("<=", 1.3)``.

    Raises
    ------
    ValueError
        If ``target`` is not an operator of ``< <= > >= ==`` followed by a JSON literal.
    """
    op, _, literal = target.strip().partition(" ")
    try:
        bound = json.loads(literal)
    except json.JSONDecodeError:
        bound = None
    if op not in COMPARISONS or bound is None:
        raise ValueError(f"target {target!r} is not '<op> <JSON literal>' with op one of {' '.join(COMPARISONS)}")
    return op, bound


def meets(value: Any, target: str) -> bool:
    """Whether ``value`` satisfies ``target`` (see :func:`parse_target`)."""
    op, bound = parse_target(target)
    return bool(COMPARISONS[op](value, bound))


def run_measured(args: list[str], env: dict) -> tuple[float, float]:
    """Run ``args`` in a new process; return (wall seconds, peak resident memory in MB).

    Peak memory is the largest summed resident set size of the process and all its children
    (the scoring workers), sampled every 0.2 s: an upper bound, since pages shared between
    processes count once per process.
    """
    import psutil

    # stderr to a file, not a pipe: a pipe nobody reads fills up and blocks the run.
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
        peak = 0
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)
        wall = time.perf_counter() - start
        if process.returncode != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{log.read().decode(errors='replace')[-3000:]}")
    return wall, peak / 2**20


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the script's docstring, with the options every benchmark has."""
    summary, _, rest = doc.strip().partition("\n")
    parser = argparse.ArgumentParser(description=summary, epilog=rest.strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the figures are recorded (default: benchmarks/results)")
    parser.add_argument("--no-record", action="store_true", help="print the figures only, record nothing")
    return parser


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> str | None:
    torch = sys.modules.get("torch")  # asked only when the benchmark loaded torch itself
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def hardware() -> dict:
    """CPU model, cores (all, and those this process may use), memory and GPU of this machine."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": _cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(), "usable_cores": usable, "memory_gb": _memory_gb(), "gpu": _gpu()}


def blas() -> list[dict]:
    """The BLAS libraries numpy and scipy load (threadpoolctl): library, version, architecture, threads."""
    import numpy  # noqa: F401  (loads its BLAS, so that threadpoolctl sees it)
    import scipy.linalg  # noqa: F401  (scipy's own BLAS, the one scikit-learn's solvers call)
    from threadpoolctl import threadpool_info

    found = []
    for library in threadpool_info():
        if library.get("user_api") == "blas":
            owner = Path(library.get("filepath", "")).parent.name.removesuffix(".libs")
            found.append({"of": owner, "internal_api": library.get("internal_api"), "version": library.get("version"), "architecture": library.get("architecture"), "threads": library.get("num_threads")})
    return sorted(found, key=lambda library: (library["of"], str(library["version"])))


def software() -> dict:
    """Python, the protocol version and the versions of the libraries that set the speed."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        from mteb_finegrain import PROTOCOL_VERSION

        versions["protocol"] = PROTOCOL_VERSION
    except ImportError:
        versions["protocol"] = None
    return versions


def commit() -> str | None:
    """The checkout's commit, with ``+changes`` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def command(argv: list[str] | None = None) -> str:
    """The command line that ran this benchmark, as typed from the repository root."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else Path(script.name)
    # Where the figures were recorded changes no figure, and names a folder of this machine.
    options, skip = [], False
    for arg in argv[1:]:
        if skip or arg.startswith("--results-dir="):
            skip = False
            continue
        skip = arg == "--results-dir"
        if not skip:
            options.append(arg)
    return shlex.join(["python", str(shown), *options])


def environment() -> dict:
    """The circumstances of a measurement: date, machine, load, software, BLAS, variables."""
    variables = {name: os.environ[name] for name in SPEED_VARIABLES if name in os.environ}
    variables |= {name: "(set)" for name in PATH_VARIABLES if name in os.environ}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit(),
        "hardware": hardware(),
        # The machine's load average over the last 1, 5 and 15 minutes when the figures were
        # recorded: timings taken beside other work are upper bounds.
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "software": software(),
        "blas": blas(),
        "variables": variables,
    }


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` whole or not at all (temporary file beside it, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False) as temporary:
        json.dump(data, temporary, indent=2, ensure_ascii=False)
        temporary.write("\n")
    try:
        os.replace(temporary.name, path)
    except OSError:
        os.unlink(temporary.name)
        raise


def load(path: Path) -> dict:
    """A results file as written by :func:`record`."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        raise ValueError(f"{path} holds no 'cases' object: not a benchmark results file")
    return data


def record(script: str, case: str, figures: list[Figure], *, results_dir: Path = RESULTS_DIR, argv: list[str] | None = None) -> Path:
    """Record ``figures`` as ``case`` of ``script`` in ``<results_dir>/<script stem>.json``.

    Other cases already in the file are kept; this case is replaced whole.

    Parameters
    ----------
    script : str
        The benchmark's file (pass ``__file__``).
    case : str
        What was measured, e.g. the card (``"TREC"``); ``"default"`` when there is one case.
    figures : list of Figure
        The figures, in the order they are shown.
    results_dir : Path
        The folder of results files.
    argv : list of str, optional
        The command line to record (default: ``sys.argv``).

    Returns
    -------
    Path
        The file written.
    """
    names = [figure.name for figure in figures]
    if not figures or len(set(names)) != len(names):
        raise ValueError(f"case {case!r} needs at least one figure and distinct names; got {names}")
    script_path = Path(script)
    path = Path(results_dir) / f"{script_path.stem}.json"
    data = load(path) if path.exists() else {"script": script_path.name, "cases": {}}
    data["cases"][case] = {
        "figures": [{key: value for key, value in dataclasses.asdict(figure).items() if value not in ("", None)} for figure in figures],
        "command": command(argv),
        **environment(),
    }
    _write_json(path, data)
    print(f"figures recorded in {path}", flush=True)
    return path


def figures_of(case: dict) -> list[Figure]:
    """The figures of one recorded case."""
    return [Figure(**figure) for figure in case["figures"]]
