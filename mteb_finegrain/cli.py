"""``mteb-finegrain``: run the FineGrainHidden protocol with options, sweeps on Ray, report results, leaderboard.

Bad input prints one ``mteb-finegrain: error: ...`` line and exits with status 2. Output piped to
a reader that stops early (``| head``) ends the command quietly with status 141, as a Unix tool
killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import os
import sys

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.options import add_protocol_options, run_options
from mteb_finegrain.run import run_tasks


def _run(args: argparse.Namespace) -> int:
    options = run_options(args)
    written = run_tasks(args.model, args.tasks, options, model_name=args.model_name, model_revision=args.model_revision)
    print(f"results written under {written}")
    if options.embedding_cache:
        from mteb_finegrain.embedding_cache import cache_enabled, describe_size

        if cache_enabled():
            print(f"embedding cache: {describe_size()}", file=sys.stderr)
    return 0


def _cache(args: argparse.Namespace) -> int:
    from mteb_finegrain.coarse_tuning import clear_checkpoints, checkpoint_cache_size
    from mteb_finegrain.embedding_cache import EmbeddingCache, cache_enabled

    embeddings = EmbeddingCache()
    if args.action == "info":
        entries, size = embeddings.size()
        state = "" if cache_enabled() else " (switched off by MTEB_FINEGRAIN_EMBEDDING_CACHE)"
        print(f"embeddings: {entries} entries and {embeddings.score_entries()} clustering results, {size / 2**20:.1f} MB in {embeddings.root}{state}")
        count, size, root = checkpoint_cache_size()
        print(f"coarse-tuned checkpoints: {count}, {size / 2**20:.1f} MB in {root}")
        return 0
    if args.which in ("embeddings", "all"):
        scores = embeddings.score_entries()
        entries, size = embeddings.clear()
        print(f"removed {entries} embedding entries and {scores} clustering results ({size / 2**20:.1f} MB) from {embeddings.root}")
    if args.which in ("checkpoints", "all"):
        count, size, root = clear_checkpoints()
        print(f"removed {count} coarse-tuned checkpoints ({size / 2**20:.1f} MB) from {root}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from mteb_finegrain.report import dumps_records, format_table, plot_layers
    from mteb_finegrain.results import load_results

    results = load_results(args.results_dir)
    if args.plot:
        print(f"plot written to {plot_layers(results, args.plot)}", file=sys.stderr)
    print(dumps_records(results) if args.json else format_table(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``mteb-finegrain`` parser: ``run``, ``sweep``, ``report``, ``cache`` and ``leaderboard``."""
    parser = argparse.ArgumentParser(prog="mteb-finegrain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="score every hidden layer of a model on FineGrainHidden tasks")
    run.add_argument("-t", "--tasks", nargs="+", required=True, help="task names, e.g. FineGrainHiddenTREC")
    run.add_argument("-m", "--model", required=True, help="Hugging Face model id or local model directory")
    run.add_argument("--model-revision", default=None, help="the model's revision (a local directory: recorded as given, e.g. the public commit it holds)")
    run.add_argument("--model-name", default=None, help="record a local model directory under this public name, e.g. sentence-transformers/all-MiniLM-L6-v2")
    add_protocol_options(run)
    run.set_defaults(func=_run)

    from mteb_finegrain.sweep import add_sweep_parser

    add_sweep_parser(sub)

    report = sub.add_parser("report", help="print results as a layer table with intervals, JSON records or a plot")
    report.add_argument("results_dir", help="an mteb --output-folder")
    report.add_argument(
        "--json", action="store_true",
        help="one flat JSON list: the records (with ci95 / runs_std where recorded), coarse_tuning_effect rows and representation rows",
    )
    report.add_argument("--plot", metavar="PNG", help="also draw layer curves (probe 95%% bands), CKA drift and layer x layer CKA to this file")
    report.set_defaults(func=_report)

    cache = sub.add_parser("cache", help="show the size of, or clear, the embedding and checkpoint caches")
    cache.add_argument("action", choices=["info", "clear"], help="info: size of each cache; clear: delete it")
    cache.add_argument("--which", choices=["embeddings", "checkpoints", "all"], default="embeddings", help="the cache to clear (default embeddings)")
    cache.set_defaults(func=_cache)

    try:
        from mteb_finegrain.leaderboard import add_leaderboard_parser
    except ImportError:
        pass
    else:
        add_leaderboard_parser(sub)
    return parser


def _discard_stdout() -> None:
    """Point stdout at the null device: its reader has closed the pipe, and the output still
    buffered would otherwise raise ``BrokenPipeError`` again when Python flushes it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor behind stdout (e.g. captured in a test)
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mteb-finegrain`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader gone by now shows here, not in the interpreter's flush at exit
        return status
    except BrokenPipeError:
        _discard_stdout()
        return 128 + 13  # 128 + SIGPIPE
    except FineGrainError as exc:
        print(f"mteb-finegrain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mteb-finegrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
