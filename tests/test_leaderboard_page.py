"""The leaderboard page in a real (headless) browser: sorting, ticking models, escaping.

Needs Debian's chromium (``apt-get install -y chromium``). The page reads a test-only URL hash,
``#test=sort:<column>,tick:<all|none|row>``, and performs those clicks itself, so a plain
``--dump-dom`` shows the result. Set ``MTEB_FINEGRAIN_REQUIRE_BROWSER=1`` (CI) to fail instead of
skipping when chromium is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from leaderboard_fixtures import XSS_NAME, write_submission
from mteb_finegrain.leaderboard import add_submission, build_leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("MTEB_FINEGRAIN_REQUIRE_BROWSER"):
    raise RuntimeError("chromium not found but MTEB_FINEGRAIN_REQUIRE_BROWSER is set: apt-get install -y chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium chromium-driver)")

MODELS = ("org/model-a", XSS_NAME, "solo/trec-only")  # by main score, best first


class Dom(HTMLParser):
    """The parts of a DOM dump the tests look at: table rows, their cells' text, SVG paths."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.root_attrs: dict = {}
        self.rows: list[dict] = []
        self.paths: list[dict] = []
        self.images = 0
        self._in_body = False
        self._cell: list[str] | None = None
        self.legend: list[str] = []
        self._in_legend = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.root_attrs = attrs
        elif tag == "img":
            self.images += 1
        elif tag == "tbody" and attrs.get("id") == "ranking-body":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append({"model": attrs.get("data-model"), "cells": []})
        elif tag == "td" and self._in_body:
            self._cell = []
        elif tag == "path" and "data-model" in attrs:
            self.paths.append(attrs)
        elif tag == "div" and attrs.get("id") == "model-legend":
            self._in_legend = 1
        elif tag == "span" and self._in_legend:
            self._in_legend += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "div" and self._in_legend:
            self._in_legend = 0

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_legend and data.strip():
            self.legend.append(data.strip())


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("page")
    board = root / "leaderboard"
    with pytest.MonkeyPatch.context() as patch:
        # Synthetic results carry made-up data hashes: never compare them with real data here.
        patch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
        patch.delenv("MTEB_FINEGRAIN_TASK_PATH", raising=False)
        add_submission(write_submission(root / "a", model=MODELS[0], quality=0.7), board)
        add_submission(write_submission(root / "b", model=MODELS[1], revision="<b>r</b>", quality=0.55, n_layers=13, aggregate=True), board)
        add_submission(write_submission(root / "c", model=MODELS[2], revision="c1", quality=0.4, cards=("TREC",), n_parameters=None), board)
        build_leaderboard(board)
    return board / "index.html"


def dom(page: Path, tmp_path: Path, actions: str) -> Dom:
    """The page's DOM after its JS ran with the given test actions."""
    text = _chromium(tmp_path, "--dump-dom", f"{page.as_uri()}#test={actions}").stdout
    parsed = Dom(text)
    assert parsed.root_attrs.get("data-test-done") == "yes", "the page's script did not run to the end"
    assert parsed.images == 0 and parsed.root_attrs.get("data-image-count") == "0" and "<img" not in text
    return parsed


def test_table_has_one_row_per_model_sorted_by_main_score(page, tmp_path):
    parsed = dom(page, tmp_path, "none")
    assert [row["model"] for row in parsed.rows] == list(MODELS)
    xss_row = parsed.rows[1]["cells"]
    assert XSS_NAME in xss_row and "<b>r</b>" in xss_row  # shown as text, not markup


def test_clicking_headers_sorts(page, tmp_path):
    assert [r["model"] for r in dom(page, tmp_path, "sort:model").rows] == sorted(MODELS, key=str.lower)
    # Already sorted by main score, best first: a click reverses, a second click restores.
    assert [r["model"] for r in dom(page, tmp_path, "sort:main").rows] == list(reversed(MODELS))
    assert [r["model"] for r in dom(page, tmp_path, "sort:model,sort:main").rows] == list(MODELS)
    # A model without a CLINC150 score sorts last whichever way the column goes.
    assert dom(page, tmp_path, "sort:task:CLINC150").rows[-1]["model"] == "solo/trec-only"
    assert dom(page, tmp_path, "sort:task:CLINC150,sort:task:CLINC150").rows[-1]["model"] == "solo/trec-only"


def test_ticking_a_model_draws_its_curves(page, tmp_path):
    assert dom(page, tmp_path, "tick:none").paths == []
    parsed = dom(page, tmp_path, "tick:none,tick:1")
    assert {p["data-model"] for p in parsed.paths} == {XSS_NAME}
    drawn = {(p["data-task"], p["data-metric"], p["data-stage"]) for p in parsed.paths}
    assert drawn == {(t, m, s) for t in ("CLINC150", "TREC") for m in ("v_measure", "probe_accuracy") for s in ("pretrained", "coarse_tuned")}
    assert all(("stroke-dasharray" in p) == (p["data-stage"] == "coarse_tuned") for p in parsed.paths)
    assert parsed.legend == [XSS_NAME]
    everyone = dom(page, tmp_path, "tick:all")
    assert {p["data-model"] for p in everyone.paths} == set(MODELS)


def test_screenshot_renders(page, tmp_path):
    shot = tmp_path / "page.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", f"{page.as_uri()}#test=tick:all")
    assert shot.is_file() and shot.stat().st_size > 20_000  # a blank page is a few kB
    if os.environ.get("MTEB_FINEGRAIN_KEEP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MTEB_FINEGRAIN_KEEP_SCREENSHOT"])


def test_model_without_hidden_states_is_a_level_line(tmp_path):
    """The TF-IDF + SVD control (layer -1, pretrained only): "final only", n/a gain, a level line."""
    board = tmp_path / "leaderboard"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
        patch.delenv("MTEB_FINEGRAIN_TASK_PATH", raising=False)
        add_submission(write_submission(tmp_path / "a", model="org/model-a", quality=0.7), board)
        add_submission(write_submission(tmp_path / "c", model="org/control", quality=0.3, hidden_states=False), board)
        build_leaderboard(board)
    parsed = dom(board / "index.html", tmp_path, "tick:all")
    control = next(row["cells"] for row in parsed.rows if row["model"] == "org/control")
    assert "final only" in control and "-1 / -1" in control and control[-1] == "n/a"
    level = [p for p in parsed.paths if p["data-model"] == "org/control"]
    assert len(level) == 4 and {p["data-stage"] for p in level} == {"pretrained"}
    assert all(p.get("data-level") == "final-embedding" for p in level)
    # The level line spans the other model's layers 0..6 at one height.
    ends = [p["d"].split(" L") for p in level]
    assert all(len(e) == 2 and e[0].split()[-1] == e[1].split()[-1] for e in ends)
