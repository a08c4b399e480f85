"""The ``mteb-finegrain sweep`` command: its options, the table of outcomes, the leaderboard hand-off."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.options import add_protocol_options, run_options
from mteb_finegrain.sweep.execution import SweepResources, run_sweep
from mteb_finegrain.sweep.jobs import DONE, FAILED, SKIPPED, JobOutcome
from mteb_finegrain.sweep.specs import parse_models


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
    """Add the ``sweep`` subcommand (the protocol options of ``run`` included) to ``subparsers``
    (what ``ArgumentParser.add_subparsers()`` returns); return the ``sweep`` parser."""
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
    outcomes = run_sweep(specs, tasks, run_options(args, absolute_output=True), resources, progress=not args.quiet)
    print(format_table(outcomes, time.perf_counter() - started))
    print(f"results under {os.path.join(os.path.abspath(args.output_folder), 'results')}")
    ok = not any(o.status == FAILED for o in outcomes)
    if args.add_to_leaderboard:
        ok = add_finished_models(outcomes, args.leaderboard_dir, replace=args.replace) and ok
    return 0 if ok else 1
