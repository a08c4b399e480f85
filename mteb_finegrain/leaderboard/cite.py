"""Citations: the benchmark's BibTeX, and a ready citation line for one model's scores."""

from __future__ import annotations

import re
from pathlib import Path

from mteb_finegrain.cards import TaskCard, discover_cards
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.leaderboard.summary import summarize
from mteb_finegrain.protocol import SEED_PAPER_BIBTEX

BENCHMARK_BIBTEX = """@software{mteb_finegrain,
  title = {{mteb-finegrain}: {FineGrainHidden}, fine-grained label information in the hidden layers of embedding models ({MTEB} plugin and leaderboard)},
  author = {{mteb-finegrain developers}},
  year = {2026},
  url = {https://github.com/mteb-finegrain/mteb-finegrain},
  license = {Apache-2.0},
}"""


def bibtex_key(bibtex: str) -> str:
    """The key of a BibTeX entry (``@type{key, ...``), or ``?`` when there is none."""
    match = re.match(r"\s*@\w+\s*\{\s*([^,\s]+)\s*,", bibtex)
    return match.group(1) if match else "?"


def citation_cards(card_names: list[str]) -> list[TaskCard]:
    """The cards to cite: every built-in card, plus the named (e.g. user) cards that are known.

    Only built-in cards are cited by default so that the generated files do not depend on the
    reader's ``MTEB_FINEGRAIN_TASK_PATH``.
    """
    builtin, user = discover_cards()
    wanted = {card.name for card in builtin} | set(card_names)
    return sorted((card for card in builtin + user if card.name in wanted), key=lambda card: card.name)


def bibtex_entries(card_names: list[str]) -> list[str]:
    """BibTeX of the benchmark, of the seed paper and of each cited dataset card."""
    return [BENCHMARK_BIBTEX, SEED_PAPER_BIBTEX] + [card.citation for card in citation_cards(card_names)]


def format_score(value: float, ci95=None) -> str:
    """``0.7123 (95% CI 0.6950-0.7301)``, or ``0.7123`` without an interval."""
    if isinstance(ci95, (list, tuple)) and len(ci95) == 2 and all(isinstance(end, (int, float)) for end in ci95):
        return f"{value:.4f} (95% CI {ci95[0]:.4f}-{ci95[1]:.4f})"
    return f"{value:.4f}"


def cite_line(model: dict, protocol_version: str) -> str:
    """A one-line citation of a model's leaderboard scores, with their 95% intervals.

    Parameters
    ----------
    model : dict
        The model's summary from :func:`mteb_finegrain.leaderboard.summary.summarize`: ``main``
        and ``main_ci95`` (the mean over tasks and its interval), per task ``main`` and
        ``main_ci95``. An interval that is absent (a result older than protocol 4.0) is left out.
    protocol_version : str
        Cited when the model's summary does not name its results' protocol.

    Returns
    -------
    str
        e.g. ``org/model (rev abc): FineGrainHidden main score 0.6120 (95% CI 0.5950-0.6290),
        protocol 4.0; CLINC150 0.5200 (95% CI 0.4800-0.5600), TREC 0.7000 (95% CI
        0.6700-0.7300); mteb-finegrain leaderboard [cite: mteb_finegrain; ...]``.
    """
    tasks = ", ".join(f"{name} {format_score(task['main'], task.get('main_ci95'))}" for name, task in sorted(model["tasks"].items()))
    keys = "; ".join(bibtex_key(entry) for entry in bibtex_entries(sorted(model["tasks"])))
    version = model.get("protocol_version") or protocol_version
    return (
        f"{model['model']} (rev {model['revision']}): FineGrainHidden main score {format_score(model['main'], model.get('main_ci95'))}, "
        f"protocol {version}; {tasks}; mteb-finegrain leaderboard [cite: {keys}]"
    )


def cite_model(leaderboard_dir: str | Path, name: str, *, bibtex: bool = False) -> str:
    """The citation text of one model of the leaderboard.

    Parameters
    ----------
    leaderboard_dir : str or path-like
    name : str
        The model's name as recorded (or its entry folder name).
    bibtex : bool
        Append the BibTeX entries the line refers to.

    Raises
    ------
    FineGrainError
        If the model is not in the leaderboard (the message lists the models that are).
    """
    summary = summarize(leaderboard_dir)
    found = [m for m in summary["models"] if name in (m["model"], m["folder"])]
    if not found:
        known = ", ".join(m["model"] for m in summary["models"]) or "none yet"
        raise FineGrainError(f"model {name!r} is not in the leaderboard at {leaderboard_dir}; models: {known}")
    model = found[0]
    text = cite_line(model, summary["protocol_version"])
    if bibtex:
        text += "\n\n" + "\n\n".join(bibtex_entries(sorted(model["tasks"])))
    return text
