"""``mteb-finegrain``: run the FineGrainHidden protocol with options, sweeps on Ray, report results, leaderboard.

Bad input prints one ``mteb-finegrain: error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace

from mteb_finegrain.errors import FineGrainError


def _int_list(value: str, option: str) -> tuple[int, ...]:
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise FineGrainError(f"{option}: expected comma-separated integers, got {value!r}") from None
    if not items:
        raise FineGrainError(f"{option}: expected at least one integer, got {value!r}")
    return items


def build_protocol(args: argparse.Namespace):
    """The ``Protocol`` that the ``run`` options describe (defaults: ``mteb run``'s)."""
    from mteb_finegrain.protocol import Protocol

    protocol = Protocol()
    changes = {}
    if args.stages:
        changes["stages"] = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if args.layers and args.layers != "all":
        changes["layers"] = _int_list(args.layers, "--layers")
    if args.pooling:
        changes["pooling"] = args.pooling
    if args.shots:
        changes["shots"] = _int_list(args.shots, "--shots")
    if args.seeds is not None:
        changes["probe_seeds"] = changes["clustering_seeds"] = args.seeds
    if args.fewshot:
        changes["fewshot"] = args.fewshot
    if args.epochs is not None:
        changes["coarse_training"] = replace(protocol.coarse_training, epochs=args.epochs)
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.train_level is not None:
        changes["train_level"] = args.train_level
    return replace(protocol, **changes)


def _run(args: argparse.Namespace) -> int:
    import mteb

    import mteb_finegrain  # noqa: F401  (registers the tasks)
    from mteb_finegrain._plugin import register_tasks

    protocol = build_protocol(args)
    known = register_tasks()
    unknown = [t for t in args.tasks if t not in known]
    if unknown:
        from mteb_finegrain._plugin import unknown_tasks_message

        raise FineGrainError(unknown_tasks_message(unknown))
    if args.quiet:
        logging.getLogger("mteb").setLevel(logging.ERROR)
        os.environ.setdefault("TQDM_DISABLE", "1")
    tasks = [known[name](protocol=protocol, show_progress_bar=not args.quiet, embedding_cache=not args.no_embedding_cache) for name in args.tasks]
    if args.model.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(args.model)):
        raise FineGrainError(f"--model {args.model!r}: no such directory (a local model is a directory holding a sentence-transformers or transformers model; a Hub id looks like org/name)")
    if args.model_name and not os.path.isdir(args.model):
        raise FineGrainError(f"--model-name names a local model directory; {args.model!r} is not a directory (a Hub id is recorded under its own name)")
    # The scoring workers start before the model loads, on the cores that loading leaves idle, not
    # on the first stage's critical path (a cached re-run of TREC is half start-up).
    from mteb_finegrain.scoring.workers import start_scoring_workers

    start_scoring_workers()
    if args.model_name:
        from mteb_finegrain._plugin import local_model_meta

        model = local_model_meta(args.model, args.model_revision, args.model_name).load_model()
    else:
        model = mteb.get_model(args.model, args.model_revision)
    cache = mteb.ResultCache(args.output_folder)
    # mteb's only-missing keeps a result whatever settings made it; one made under other settings
    # (say, other shots) is not what was asked for, so that task is run again and its file replaced.
    meta = getattr(model, "mteb_model_meta", None)
    stale = _results_with_other_settings(cache, meta, tasks, protocol) if args.overwrite_strategy == "only-missing" and meta is not None else []
    for name in stale:
        print(f"{name}: the existing result was made with other settings; running it again", file=sys.stderr)
    fresh = [task for task in tasks if task.metadata.name not in stale]
    # mteb fills in a batch size of 32 when none is given, which the task would take over --batch-size.
    encode_kwargs = {"batch_size": protocol.batch_size}
    if fresh:
        mteb.evaluate(model, fresh, cache=cache, overwrite_strategy=args.overwrite_strategy, encode_kwargs=encode_kwargs, show_progress_bar=not args.quiet)
    if stale:
        mteb.evaluate(model, [task for task in tasks if task.metadata.name in stale], cache=cache, overwrite_strategy="always", encode_kwargs=encode_kwargs, show_progress_bar=not args.quiet)
    print(f"results written under {os.path.join(args.output_folder, 'results')}")
    if not args.no_embedding_cache:
        from mteb_finegrain.embedding_cache import cache_enabled, describe_size

        if cache_enabled():
            print(f"embedding cache: {describe_size()}", file=sys.stderr)
    return 0


def _results_with_other_settings(cache, meta, tasks, protocol) -> list[str]:
    """Names of ``tasks`` whose existing result in ``cache`` for the model ``meta`` was made with
    other settings or another protocol version (``run`` runs those again)."""
    import json

    from mteb_finegrain.protocol import PROTOCOL_VERSION

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


def add_protocol_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that set the protocol and where results go (``run`` and ``sweep`` share them).

    :func:`build_protocol` reads them back from the parsed arguments.
    """
    parser.add_argument("--stages", help="comma-separated: pretrained,coarse_tuned (default both)")
    parser.add_argument("--layers", help="'all' (default) or comma-separated layer numbers, e.g. 0,3,6")
    parser.add_argument("--pooling", choices=["mean", "cls", "model"], help="token pooling: mean (default), cls, or model = each model's own sentence-transformers pooling")
    parser.add_argument("--shots", help="examples per fine class for the probe (default 1,2,4,8,16)")
    parser.add_argument("--seeds", type=int, help="seeds for k-means and for the probe (default 5)")
    parser.add_argument("--fewshot", choices=["probe", "setfit"], help="few-shot mode (default probe)")
    parser.add_argument("--epochs", type=int, help="coarse fine-tuning epochs (default 1)")
    parser.add_argument("--train-level", type=int, help="hierarchy level the coarse_tuned stage trains on: 0 = coarsest (default), 1 = next, -1 = finest")
    parser.add_argument("--batch-size", type=int, help="encoding batch size (default 32)")
    parser.add_argument("--output-folder", default="results", help="where results go (default results)")
    parser.add_argument("--overwrite-strategy", default="only-missing", choices=["always", "never", "only-missing", "only-cache"])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no-embedding-cache", action="store_true", help="encode every split again; read and write no cached embeddings (also: MTEB_FINEGRAIN_EMBEDDING_CACHE=0)")


def build_parser() -> argparse.ArgumentParser:
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

    report = sub.add_parser("report", help="print results as a layer table, JSON records or a plot")
    report.add_argument("results_dir", help="an mteb --output-folder")
    report.add_argument("--json", action="store_true", help="one flat JSON list of records")
    report.add_argument("--plot", metavar="PNG", help="also draw layer curves to this file")
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mteb-finegrain`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FineGrainError as exc:
        print(f"mteb-finegrain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mteb-finegrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
