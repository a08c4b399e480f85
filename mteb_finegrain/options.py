"""The command-line options that set the protocol and where results go (``run`` and ``sweep`` share them)."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import Protocol
from mteb_finegrain.run import RunOptions


def add_protocol_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that set the protocol and where results go.

    :func:`run_options` reads them back from the parsed arguments.
    """
    parser.add_argument("--stages", help="comma-separated: pretrained,coarse_tuned (default both)")
    parser.add_argument("--layers", help="'all' (default) or comma-separated layer numbers, e.g. 0,3,6")
    parser.add_argument("--pooling", choices=["mean", "cls", "model"], help="token pooling: mean (default), cls, or model = each model's own sentence-transformers pooling")
    parser.add_argument("--shots", help="examples per fine class for the probe (default 1,2,4,8,16)")
    parser.add_argument("--seeds", type=int, help="seeds for k-means and for the probe (default 5)")
    parser.add_argument("--fewshot", choices=["probe", "setfit"], help="few-shot mode (default probe)")
    parser.add_argument("--epochs", type=int, help="coarse fine-tuning epochs (default 1)")
    parser.add_argument("--coarse-seeds", type=int, help="coarse-training runs of the coarse_tuned stage, averaged (default 3)")
    parser.add_argument("--coarse-seed", type=int, help="training seed of the first coarse-training run; run r uses it + r (default 42)")
    parser.add_argument("--train-level", type=int, help="hierarchy level the coarse_tuned stage trains on: 0 = coarsest (default), 1 = next, -1 = finest")
    parser.add_argument("--batch-size", type=int, help="encoding batch size (default 32)")
    parser.add_argument("--output-folder", default="results", help="where results go (default results)")
    parser.add_argument("--overwrite-strategy", default="only-missing", choices=["always", "never", "only-missing", "only-cache"])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no-embedding-cache", action="store_true", help="encode every split again; read and write no cached embeddings (also: MTEB_FINEGRAIN_EMBEDDING_CACHE=0)")


def _int_list(value: str, option: str) -> tuple[int, ...]:
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise FineGrainError(f"{option}: expected comma-separated integers, got {value!r}") from None
    if not items:
        raise FineGrainError(f"{option}: expected at least one integer, got {value!r}")
    return items


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    """The ``Protocol`` that the options describe (defaults: ``mteb run``'s).

    Raises
    ------
    FineGrainError
        Naming the option and its value when one is malformed or the protocol refuses it.
    """
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
    training = {}
    if args.epochs is not None:
        training["epochs"] = args.epochs
    if getattr(args, "coarse_seed", None) is not None:
        training["seed"] = args.coarse_seed
    if training:
        changes["coarse_training"] = replace(protocol.coarse_training, **training)
    if getattr(args, "coarse_seeds", None) is not None:
        changes["coarse_seeds"] = args.coarse_seeds
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.train_level is not None:
        changes["train_level"] = args.train_level
    return replace(protocol, **changes)


def run_options(args: argparse.Namespace, absolute_output: bool = False) -> RunOptions:
    """The :class:`~mteb_finegrain.run.RunOptions` of parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser that :func:`add_protocol_options` prepared.
    absolute_output : bool, default=False
        Make ``--output-folder`` absolute (for jobs that do not share this working directory).
    """
    output = os.path.abspath(args.output_folder) if absolute_output else args.output_folder
    return RunOptions(
        protocol=protocol_from_args(args),
        output_folder=output,
        overwrite_strategy=args.overwrite_strategy,
        quiet=args.quiet,
        embedding_cache=not args.no_embedding_cache,
    )
