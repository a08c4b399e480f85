"""The ``leaderboard`` subcommand: ``add``, ``build``, ``cite`` and ``compare``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.leaderboard.build import build_leaderboard
from mteb_finegrain.leaderboard.summary import summarize
from mteb_finegrain.leaderboard.cite import cite_model
from mteb_finegrain.leaderboard.compare import compare_models, format_report
from mteb_finegrain.leaderboard.store import DEFAULT_LEADERBOARD_DIR, add_submission


def _add(args: argparse.Namespace) -> int:
    submission, entry = add_submission(args.results_dir, args.leaderboard_dir, replace=args.replace)
    for note in submission.notes:
        print(f"note: {note}")
    print(
        f"added {submission.model} (revision {submission.revision}; {', '.join(submission.cards)}) to {entry}; "
        "run `mteb-finegrain leaderboard build` to regenerate the pages"
    )
    return 0


def _build(args: argparse.Namespace) -> int:
    written = build_leaderboard(args.leaderboard_dir)
    count = len(summarize(args.leaderboard_dir)["models"])
    print(f"built the leaderboard of {count} model(s): " + ", ".join(str(p) for p in written))
    return 0


def _cite(args: argparse.Namespace) -> int:
    print(cite_model(args.leaderboard_dir, args.model, bibtex=args.bibtex))
    return 0


def _compare(args: argparse.Namespace) -> int:
    tasks = [name.strip() for value in args.tasks or () for name in value.split(",") if name.strip()]
    result = compare_models(args.leaderboard_dir, args.model_a, args.model_b, tasks=tasks or None, method=args.method, seed=args.seed)
    print(format_report(result))
    return 0


def add_leaderboard_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``leaderboard`` subcommand to an argparse subparsers object.

    Each sub-subcommand sets ``func``: a handler taking the parsed arguments and returning an
    exit code; it raises :class:`~mteb_finegrain.errors.FineGrainError` on bad input.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The ``leaderboard`` parser.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--leaderboard-dir", type=Path, default=DEFAULT_LEADERBOARD_DIR,
        help="leaderboard root folder (default ./leaderboard)",
    )
    parser = subparsers.add_parser("leaderboard", help="validate, add and publish results in the leaderboard")
    sub = parser.add_subparsers(dest="leaderboard_command", metavar="{add,build,cite,compare}", required=True)

    add = sub.add_parser("add", parents=[common], help="check one model's results and copy them into the leaderboard")
    add.add_argument("results_dir", help="folder with the model's FineGrainHidden*.json results and model_meta.json")
    add.add_argument("--replace", action="store_true", help="replace the model's existing entry")
    add.set_defaults(func=_add)

    build = sub.add_parser("build", parents=[common], help="regenerate README.md, leaderboard.csv and index.html")
    build.set_defaults(func=_build)

    cite = sub.add_parser("cite", parents=[common], help="print a citation line with a model's scores")
    cite.add_argument("model", help="model name as shown in the leaderboard")
    cite.add_argument("--bibtex", action="store_true", help="also print the BibTeX entries the line cites")
    cite.set_defaults(func=_cite)

    compare = sub.add_parser(
        "compare", parents=[common],
        help="paired comparison of two models on their stored predictions: the mean difference of main scores over tasks, then each task's",
    )
    compare.add_argument("model_a", help="model name as shown in the leaderboard (a in a - b)")
    compare.add_argument("model_b", help="the model it is compared with (b)")
    compare.add_argument("--tasks", nargs="+", metavar="TASK", help="tasks to compare, comma- or space-separated (default: every task both ran)")
    compare.add_argument("--method", choices=["anova", "bootstrap"], default="anova", help="variance components (default) or paired bootstrap")
    compare.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    compare.set_defaults(func=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m mteb_finegrain.leaderboard <add|build|cite|compare> ...``."""
    parser = argparse.ArgumentParser(prog="python -m mteb_finegrain.leaderboard")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_leaderboard_parser(subparsers)
    args = parser.parse_args(["leaderboard", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except FineGrainError as exc:
        print(f"mteb-finegrain leaderboard: error: {exc}", file=sys.stderr)
        return 2
