"""The leaderboard's single self-contained HTML page (inline CSS and JS, no network request).

The data travels as JSON inside ``<script type="application/json">``, with ``<``, ``>`` and ``&``
written as ``\\u003c`` etc. so that no string in it (a model name such as
``</script><img src=x onerror=...>``) can end the script element; the page's JS puts every
string into the DOM with ``textContent`` only.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

TEMPLATE = Path(__file__).with_name("page.html")


def json_for_script(data) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element (sorted keys, no ``<>&``)."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_page(summary: dict) -> str:
    """The ``index.html`` of a leaderboard summary (see :func:`~mteb_finegrain.leaderboard.summary.summarize`)."""
    page = TEMPLATE.read_text(encoding="utf-8")
    fields = {
        "{{PROTOCOL_VERSION}}": html.escape(summary["protocol_version"]),
        "{{MAIN_SCORE_DEFINITION}}": html.escape(summary["main_score_definition"]),
        "{{MAIN_SHOTS}}": html.escape(str(summary["main_shots"])),
    }
    for placeholder, value in fields.items():
        page = page.replace(placeholder, value)
    # Last, so that placeholder-like text inside the data is never substituted.
    return page.replace("{{DATA}}", json_for_script(summary), 1)
