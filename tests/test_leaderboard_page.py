"""The leaderboard page in a real (headless) browser: sorting, ticking models, escaping, interval
bands, rank intervals, drift curves, layer x layer CKA heat maps and the label-free signals.

Needs Debian's chromium (``apt-get install -y chromium``). The page reads a test-only URL hash,
``#test=sort:<column>,tick:<all|none|row>``, and performs those clicks itself, so a plain
``--dump-dom`` shows the result. Set ``MTEB_FINEGRAIN_REQUIRE_BROWSER=1`` (CI) to fail instead of
skipping when chromium is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from board_fixtures import XSS_NAME, add_entry
from mteb_finegrain.leaderboard import build_leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("MTEB_FINEGRAIN_REQUIRE_BROWSER"):
    raise RuntimeError("chromium not found but MTEB_FINEGRAIN_REQUIRE_BROWSER is set: apt-get install -y chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium chromium-driver)")

MODELS = ("org/model-a", XSS_NAME, "solo/trec-only")  # by main score, best first


class Dom(HTMLParser):
    """The parts of a DOM dump the tests look at: table rows, their cells' text, SVG charts and
    their paths (each with its chart's ``data-chart``), heat maps with their cells, signal rows."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.root_attrs: dict = {}
        self.rows: list[dict] = []
        self.paths: list[dict] = []
        self.charts: list[dict] = []
        self.heatmaps: list[dict] = []
        self.signal_rows: list[dict] = []
        self.unranked: list[str] = []
        self.images = 0
        self._svg: dict | None = None
        self._in_unranked = False
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
        elif tag == "svg" and "heatmap" in (attrs.get("class") or "").split():
            self._svg = {**attrs, "cells": []}
            self.heatmaps.append(self._svg)
        elif tag == "svg" and "chart" in (attrs.get("class") or "").split():
            self._svg = attrs
            self.charts.append(attrs)
        elif tag == "rect" and self._svg is not None and "cells" in self._svg:
            self._svg["cells"].append(attrs)
        elif tag == "path" and "data-model" in attrs:
            self.paths.append({**attrs, "chart": (self._svg or {}).get("data-chart")})
        elif tag == "tr" and "data-signal" in attrs:
            self.signal_rows.append(attrs)
        elif tag == "ul" and attrs.get("id") == "unranked":
            self._in_unranked = True
        elif tag == "li" and self._in_unranked:
            self.unranked.append(attrs.get("data-model"))
        elif tag == "div" and attrs.get("id") == "model-legend":
            self._in_legend = 1
        elif tag == "span" and self._in_legend:
            self._in_legend += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg = None
        elif tag == "ul":
            self._in_unranked = False
        elif tag == "tbody":
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
    board = tmp_path_factory.mktemp("page") / "leaderboard"
    add_entry(board, MODELS[0], skill=1.2, drift=0.5)
    add_entry(board, MODELS[1], revision="<b>r</b>", skill=0.0, n_layers=13, drift=0.2)
    add_entry(board, MODELS[2], revision="c1", skill=-0.6, cards=("TREC",), n_parameters=None)
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


def _curves(parsed: Dom) -> list[dict]:
    """The layer-curve lines (not their interval bands, not the drift charts)."""
    return [p for p in parsed.paths if p["chart"] == "curve" and "data-band" not in p]


def test_ticking_a_model_draws_its_curves(page, tmp_path):
    assert dom(page, tmp_path, "tick:none").paths == []
    parsed = dom(page, tmp_path, "tick:none,tick:1")
    assert {p["data-model"] for p in parsed.paths} == {XSS_NAME}
    drawn = {(p["data-task"], p["data-metric"], p["data-stage"]) for p in _curves(parsed)}
    assert drawn == {(t, m, s) for t in ("CLINC150", "TREC") for m in ("v_measure", "probe_accuracy") for s in ("pretrained", "coarse_tuned")}
    assert all(("stroke-dasharray" in p) == (p["data-stage"] == "coarse_tuned") for p in _curves(parsed))
    assert parsed.legend == [XSS_NAME]
    everyone = dom(page, tmp_path, "tick:all")
    assert {p["data-model"] for p in everyone.paths} == set(MODELS)


def test_rank_interval_and_main_score_interval_columns(page, tmp_path):
    parsed = dom(page, tmp_path, "none")
    cells = {row["model"]: row["cells"] for row in parsed.rows}
    # Columns: show, #, model, revision, parameters, layers, main score, rank interval, tasks...
    assert [cells[m][7] for m in MODELS] == ["1", "2", "\u2014"]  # solo/trec-only did not run CLINC150
    assert all(re.fullmatch(r"0\.\d{4} \[0\.\d{4}, 0\.\d{4}\]( \*)?", cells[m][6]) for m in MODELS)
    assert parsed.unranked == ["solo/trec-only"]
    assert [r["model"] for r in dom(page, tmp_path, "sort:rank_interval,sort:rank_interval").rows][-1] == "solo/trec-only"


def test_probe_curves_have_interval_bands(page, tmp_path):
    parsed = dom(page, tmp_path, "tick:none,tick:0")
    bands = [p for p in parsed.paths if p.get("data-band") == "ci95"]
    assert {(p["data-task"], p["data-metric"], p["data-stage"]) for p in bands} == {
        (t, "probe_accuracy", s) for t in ("CLINC150", "TREC") for s in ("pretrained", "coarse_tuned")}
    assert all(p["d"].endswith("Z") and float(p["fill-opacity"]) < 0.5 for p in bands)


def test_drift_curves_and_permutation_baseline_render(page, tmp_path):
    parsed = dom(page, tmp_path, "tick:all")
    drift = [p for p in parsed.paths if p["chart"] == "drift"]
    assert {c["data-task"] for c in parsed.charts if c.get("data-chart") == "drift"} == {"CLINC150", "TREC"}
    lines = {(p["data-task"], p["data-model"]) for p in drift if p["data-metric"] == "cka_to_pretrained"}
    assert lines == {("CLINC150", MODELS[0]), ("CLINC150", MODELS[1]), ("TREC", MODELS[0]), ("TREC", MODELS[1]), ("TREC", MODELS[2])}
    baselines = [p for p in drift if p["data-metric"] == "cka_to_pretrained_permuted"]
    assert len(baselines) == len(lines) and all(p["data-baseline"] == "permuted" and float(p["stroke-opacity"]) < 0.5 for p in baselines)
    assert all("stroke-opacity" not in p for p in drift if p["data-metric"] == "cka_to_pretrained")


def test_layer_by_layer_cka_heat_maps_render(page, tmp_path):
    parsed = dom(page, tmp_path, "tick:none,tick:1")
    maps = {(h["data-task"], h["data-stage"]): h for h in parsed.heatmaps}
    assert set(maps) == {(t, s) for t in ("CLINC150", "TREC") for s in ("pretrained", "coarse_tuned")}
    for heat in maps.values():
        assert heat["data-model"] == XSS_NAME and heat["data-layers"] == "13"
        values = [float(cell["data-value"]) for cell in heat["cells"]]
        assert len(values) == 13 * 13 and values[0] == 1.0 and min(values) < 0.1
        assert len({cell["fill"] for cell in heat["cells"]}) > 5  # a colour scale, not one colour
    assert dom(page, tmp_path, "tick:none").heatmaps == []


def test_label_free_signals_table(page, tmp_path):
    rows = dom(page, tmp_path, "none").signal_rows
    # Every model, every stage it has, both signals; shown whatever is ticked.
    assert {(r["data-model"], r["data-stage"], r["data-signal"]) for r in rows} == {
        (m, s, g) for m in MODELS for s in ("pretrained", "coarse_tuned") for g in ("effective_rank", "dataset_entropy")}


def test_screenshot_renders(page, tmp_path):
    shot = tmp_path / "page.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", f"{page.as_uri()}#test=tick:all")
    assert shot.is_file() and shot.stat().st_size > 20_000  # a blank page is a few kB
    if os.environ.get("MTEB_FINEGRAIN_KEEP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MTEB_FINEGRAIN_KEEP_SCREENSHOT"])


def test_model_without_hidden_states_is_a_level_line(tmp_path):
    """The TF-IDF + SVD control (layer -1, pretrained only): "final only", n/a gain, a level line and level band."""
    board = tmp_path / "leaderboard"
    add_entry(board, "org/model-a", skill=1.0)
    add_entry(board, "org/control", skill=-1.0, hidden_states=False)
    build_leaderboard(board)
    parsed = dom(board / "index.html", tmp_path, "tick:all")
    control = next(row["cells"] for row in parsed.rows if row["model"] == "org/control")
    assert "final only" in control and "-1 / -1" in control and control[-1] == "n/a" and control[7] == "2"
    level = [p for p in _curves(parsed) if p["data-model"] == "org/control"]
    assert len(level) == 4 and {p["data-stage"] for p in level} == {"pretrained"}
    assert all(p.get("data-level") == "final-embedding" for p in level)
    # The level line spans the other model's layers 0..6 at one height.
    ends = [p["d"].split(" L") for p in level]
    assert all(len(e) == 2 and e[0].split()[-1] == e[1].split()[-1] for e in ends)
    assert len([p for p in parsed.paths if p["data-model"] == "org/control" and p.get("data-band")]) == 2
    assert not [p for p in parsed.paths if p["data-model"] == "org/control" and p["chart"] == "drift"]
    assert {h["data-model"] for h in parsed.heatmaps} == {"org/model-a"}  # one layer: no layer x layer map
