"""The FineGrainHidden leaderboard: validate and store results, build the pages, cite scores.

``add_leaderboard_parser(subparsers)`` adds the ``leaderboard`` subcommand (``add``, ``build``,
``cite``) to the ``mteb-finegrain`` command line.
"""

from mteb_finegrain.leaderboard.build import build_leaderboard
from mteb_finegrain.leaderboard.summary import summarize
from mteb_finegrain.leaderboard.cite import cite_model
from mteb_finegrain.leaderboard.cli import add_leaderboard_parser
from mteb_finegrain.leaderboard.store import add_submission, entries
from mteb_finegrain.leaderboard.validate import validate_submission

__all__ = [
    "add_leaderboard_parser",
    "add_submission",
    "build_leaderboard",
    "cite_model",
    "entries",
    "summarize",
    "validate_submission",
]
