"""Every paper the plugin cites is cited under the BibTeX key and title mteb uses for it.

mteb's own test ``test_no_duplicate_citations_with_different_ids`` (tests/test_get_tasks.py of its
source distribution) reads the BibTeX of every registered task, model and benchmark, and fails when
one title is cited under two keys or two titles are nearly the same (difflib ratio >= 0.9, e.g.
``{MASSIVE}: ...`` and ``MASSIVE: ...``). With the plugin installed it sees our tasks too, so a card
citing a paper mteb already cites under another key breaks mteb's tests. This file applies the same
rule to every citation that involves the plugin; pairs of mteb's own citations are mteb's test's
business (it exempts a few of them by title, this test exempts none of ours).
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections import defaultdict
from typing import NamedTuple

import pytest

_ENTRY_RE = re.compile(r"@\w+\s*\{([^,]+)", re.IGNORECASE)
_TITLE_RE = re.compile(r"\btitle\s*=\s*\{", re.IGNORECASE)
CLOSE_TITLE_RATIO = 0.9  # mteb's cutoff for "the same paper with a slightly different title"


class Citation(NamedTuple):
    owner: str  # "task:<name>", "model:<name>" or "benchmark:<name>"
    key: str
    title: str
    ours: bool


def bibtex_titles(bibtex: str | None) -> list[tuple[str, str]]:
    """``(key, title)`` of each entry with a braced title, parsed as mteb's test parses them.

    An entry runs from its ``@`` to the next ``@``; the title is the brace-balanced text after
    ``title = {``, with runs of whitespace collapsed.
    """
    entries = []
    for match in _ENTRY_RE.finditer(bibtex or ""):
        following = bibtex.find("@", match.end())
        block = bibtex[match.start() : following if following != -1 else None]
        title_start = _TITLE_RE.search(block)
        if title_start is None:
            continue
        depth, i = 1, title_start.end()
        while i < len(block) and depth:
            depth += {"{": 1, "}": -1}.get(block[i], 0)
            i += 1
        title = " ".join(block[title_start.end() : i - 1].split())
        if depth == 0 and title:
            entries.append((match.group(1).strip(), title))
    return entries


def normalized(title: str) -> str:
    """The form mteb's test compares titles in: lower case, single spaces."""
    return " ".join(title.lower().split())


def conflicts(citations: list[Citation]) -> list[str]:
    """Each citation of ours whose paper is cited elsewhere under another key or a near title.

    Parameters
    ----------
    citations : list of Citation
        Every citation of the registry, ``ours`` marking the plugin's.

    Returns
    -------
    list of str
        One line per conflict, naming both owners, keys and titles; empty when there is none.
    """
    by_title: dict[str, list[Citation]] = defaultdict(list)
    for citation in citations:
        by_title[normalized(citation.title)].append(citation)
    found = []
    for title, same in by_title.items():
        for mine in (c for c in same if c.ours):
            found += [f"{mine.owner} cites {title!r} as {mine.key!r}, {other.owner} as {other.key!r}" for other in same if other.key != mine.key]
            for near in difflib.get_close_matches(title, [t for t in by_title if t != title], n=2, cutoff=CLOSE_TITLE_RATIO):
                other = by_title[near][0]
                found.append(f"{mine.owner} cites {mine.title!r} ({mine.key!r}), {other.owner} the near title {other.title!r} ({other.key!r})")
    return sorted(set(found))


def registered_citations() -> list[Citation]:
    """The citations of every task, model and benchmark mteb knows, with the plugin loaded."""
    import mteb

    import mteb_finegrain  # noqa: F401  (registers the FineGrainHidden tasks)
    from mteb_finegrain.task import AbsTaskFineGrainHidden

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one "is currently in beta" warning per beta task
        tasks = mteb.get_tasks(exclude_beta=False, exclude_superseded=False, exclude_private=False)
    owners = [(f"task:{t.metadata.name}", t.metadata.bibtex_citation, isinstance(t, AbsTaskFineGrainHidden)) for t in tasks]
    owners += [(f"model:{m.name}", m.citation, m.name.startswith("mteb-finegrain/")) for m in mteb.get_model_metas()]
    owners += [(f"benchmark:{b.name}", b.citation, False) for b in mteb.get_benchmarks()]
    return [Citation(owner, key, title, ours) for owner, bibtex, ours in owners for key, title in bibtex_titles(bibtex)]


MTEB_MASSIVE = """@misc{fitzgerald2022massive,
  title = {MASSIVE: A 1M-Example Multilingual Natural Language Understanding Dataset with 51 Typologically-Diverse Languages},
  year = {2022},
}"""


@pytest.mark.parametrize(
    ("ours", "expected"),
    [
        ("@misc{fitzgerald2022massive,\n  title = {MASSIVE: A 1M-Example Multilingual Natural Language Understanding Dataset with 51 Typologically-Diverse Languages},\n}", 0),
        # the same title under another key
        ("@inproceedings{fitzgerald-etal-2023-massive,\n  title = {MASSIVE: A 1M-Example Multilingual Natural Language Understanding Dataset with 51 Typologically-Diverse Languages},\n}", 1),
        # mteb's key, but braces protecting capitals make the title another (near) string
        ("@misc{fitzgerald2022massive,\n  title = {{MASSIVE}: A 1{M}-Example Multilingual Natural Language Understanding Dataset with 51 Typologically-Diverse Languages},\n}", 1),
        # case and line breaks are not differences
        ("@misc{fitzgerald2022massive, title = {massive: a 1m-example multilingual natural language\n    understanding dataset with 51 typologically-diverse languages}}", 0),
        ("@misc{other2024, title = {An Unrelated Paper}}", 0),
    ],
)
def test_conflicts_finds_a_paper_under_two_keys_or_near_titles(ours, expected):
    citations = [Citation("task:MassiveIntentClassification", key, title, False) for key, title in bibtex_titles(MTEB_MASSIVE)]
    citations += [Citation("task:FineGrainHiddenMASSIVE", key, title, True) for key, title in bibtex_titles(ours)]
    assert len(conflicts(citations)) == expected


def test_bibtex_titles_reads_nested_braces_and_skips_untitled_entries():
    bibtex = "@article{a,\n  title = {{G}o{E}motions: A {Dataset}},\n}\n\n@misc{b, author = {X}}\n@book{ c , title={T}}"
    assert bibtex_titles(bibtex) == [("a", "{G}o{E}motions: A {Dataset}"), ("c", "T")]


def test_no_paper_is_cited_under_two_keys():
    citations = registered_citations()
    ours = {c.owner for c in citations if c.ours}
    assert "task:FineGrainHidden" in ours and "task:FineGrainHiddenTREC" in ours, f"the plugin's tasks are not registered: {sorted(ours)}"
    found = conflicts(citations)
    assert not found, "cite these papers with mteb's key and title:\n" + "\n".join(found)
