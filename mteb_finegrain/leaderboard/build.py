"""Generating the leaderboard's ``README.md``, ``leaderboard.csv`` and ``index.html``.

Everything is derived from the accepted results alone and is deterministic: no timestamps, sorted
keys and rows, fixed float formats. Rebuilding an unchanged leaderboard gives identical bytes,
so the generated files can be committed and checked in review.
"""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path
from statistics import mean

from mteb_finegrain.leaderboard.cite import bibtex_entries
from mteb_finegrain.leaderboard.html import render_page
from mteb_finegrain.leaderboard.store import entries
from mteb_finegrain.protocol import PROTOCOL_VERSION, STAGES, Protocol
from mteb_finegrain.results import level_names, load_results, records_by_key

CSV_COLUMNS = ("model", "revision", "task", "subset", "stage", "level", "layer", "metric", "shots", "value", "std")
CURVE_METRICS = ("v_measure", "probe_accuracy")
OUTPUTS = ("README.md", "leaderboard.csv", "index.html")


def _round(value: float) -> float:
    # Means of 6-decimal scores: rounding keeps the generated files short and stable.
    return round(float(value), 6)


def _task_summary(scores: dict) -> dict:
    """Main score, selected layers, the coarse-tuned gain and the plotted curves of one card.

    A model without hidden states has only the ``pretrained`` stage: its ``best_layer`` is that
    stage's (``-1``) and its ``delta`` is None (coarse fine-tuning does not apply).
    """
    layers = scores["model"]["layers"]
    main_shots = scores["settings"]["main_shots"]
    finest = level_names(scores)[-1]  # the main score's level; the page's curves are drawn at it
    lookup = records_by_key(scores["records"])
    value = {(stage, layer, metric, n): v for (stage, level, layer, metric, n), v in lookup.items() if level == finest}
    stages = [stage for stage in STAGES if any(r["stage"] == stage for r in scores["records"])]
    selected = {stage: scores["selected_layer"][stage] for stage in stages}
    probe = {stage: value[(stage, selected[stage], "probe_accuracy", main_shots)] for stage in stages}
    return {
        "main": scores["main_score"],
        "main_stage": stages[-1],
        "selected": selected,
        "best_layer": selected[stages[-1]],
        # Each stage at its own validation-selected layer: what coarse fine-tuning gains or costs.
        "delta": _round(probe["coarse_tuned"] - probe["pretrained"]) if "coarse_tuned" in probe else None,
        "curves": {
            stage: {
                "v_measure": [value[(stage, layer, "v_measure", None)] for layer in layers],
                "probe_accuracy": [value[(stage, layer, "probe_accuracy", main_shots)] for layer in layers],
            }
            for stage in stages
        },
    }


def summarize(leaderboard_dir: str | Path) -> dict:
    """The leaderboard as one JSON-able mapping, models sorted by main score (best first).

    Returns
    -------
    dict
        ``protocol_version``, ``main_shots``, ``main_score_definition``, ``tasks`` (card names,
        sorted) and ``models``: per model ``model``, ``revision``, ``folder``, ``n_parameters``,
        ``layers`` (``[-1]`` for a model without hidden states), ``hidden_states``,
        ``protocol_version``, ``main`` (mean over its tasks of the main score), ``delta`` (mean
        coarse-tuned minus pretrained probe accuracy; None when no task has a coarse_tuned stage)
        and ``tasks`` (card name -> ``main``, ``main_stage``, ``selected``, ``best_layer``,
        ``delta``, ``curves``).
    """
    models = []
    for entry in entries(leaderboard_dir):
        tasks, layers, versions, hidden_states = {}, [], set(), True
        for result in load_results(entry.path):
            card = result.scores["card"]["name"]
            tasks[card] = _task_summary(result.scores)
            layers = result.scores["model"]["layers"]
            hidden_states = result.scores["model"].get("hidden_states", True)
            versions.add(result.scores["protocol_version"])
        deltas = [t["delta"] for t in tasks.values() if t["delta"] is not None]
        models.append(
            {
                "model": entry.model,
                "revision": entry.revision,
                "folder": entry.path.name,
                "n_parameters": entry.meta.get("n_parameters"),
                "layers": layers,
                "hidden_states": hidden_states,
                "protocol_version": ", ".join(sorted(versions)),
                "main": _round(mean(t["main"] for t in tasks.values())),
                "delta": _round(mean(deltas)) if deltas else None,
                "tasks": tasks,
            }
        )
    models.sort(key=lambda m: (-m["main"], m["model"], m["revision"]))
    protocol = Protocol()
    return {
        "protocol_version": PROTOCOL_VERSION,
        "main_shots": protocol.main_shots,
        "main_score_definition": protocol.main_score_definition(),
        "tasks": sorted({name for m in models for name in m["tasks"]}),
        "models": models,
    }


def format_parameters(n) -> str:
    """``22.7M``-style parameter count, or an em dash when unknown."""
    if not isinstance(n, (int, float)) or n <= 0:
        return "—"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def format_layers(layers: list[int]) -> str:
    """``0–12`` for layers 0..12; ``final only`` for a model without hidden states (``[-1]``)."""
    if layers == [-1]:
        return "final only"
    return f"{layers[0]}–{layers[-1]}" if len(layers) > 1 else (str(layers[0]) if layers else "—")


def _md(text) -> str:
    """Text safe in a Markdown table cell: HTML-escaped, Markdown punctuation backslash-escaped."""
    text = html.escape(str(text).replace("\n", " "), quote=False)
    for char in "\\`*_[]|":
        text = text.replace(char, "\\" + char)
    return text


def render_readme(summary: dict) -> str:
    """The leaderboard's ``README.md``."""
    version, shots, tasks = summary["protocol_version"], summary["main_shots"], summary["tasks"]
    lines = [
        "# FineGrainHidden leaderboard",
        "",
        "<!-- Generated by `mteb-finegrain leaderboard build` from results/: do not edit by hand. -->",
        "",
        f"How much fine-grained label information each hidden layer of an embedding model holds, before "
        f"and after fine-tuning on coarse labels. Protocol version **{version}**; only results of this "
        f"protocol are accepted. Interactive view with layer-wise curves: [index.html](index.html); "
        f"every score: [leaderboard.csv](leaderboard.csv).",
        "",
        f"**Main score** of a task: {_md(summary['main_score_definition'])}. The leaderboard's main score "
        "is the mean over a model's tasks.",
        "",
        "## Ranking",
        "",
    ]
    if not summary["models"]:
        lines += ["No entries yet. Add the first one as described below.", ""]
    else:
        header = ["Rank", "Model", "Revision", "Parameters", "Layers", "Main score", *tasks,
                  f"Best layer ({' / '.join(tasks)})", f"Coarse-tuned − pretrained ({shots}-shot probe)"]
        lines += ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "|".join(["---:", "---", "---", "---:", "---:", "---:"] + ["---:"] * (len(tasks) + 2)) + "|"]
        for rank, model in enumerate(summary["models"], start=1):
            per_task = [f"{model['tasks'][t]['main']:.3f}" if t in model["tasks"] else "—" for t in tasks]
            best = " / ".join(str(model["tasks"][t]["best_layer"]) if t in model["tasks"] else "—" for t in tasks)
            partial = "" if len(model["tasks"]) == len(tasks) else " ¹"
            cells = [str(rank), _md(model["model"]), _md(model["revision"]), format_parameters(model["n_parameters"]),
                     format_layers(model["layers"]), f"{model['main']:.3f}{partial}", *per_task, best,
                     "n/a ²" if model["delta"] is None else f"{model['delta']:+.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Best layer: the layer chosen on the validation split (coarse-tuned stage). Coarse-tuned − pretrained: "
            f"{shots}-shot probe accuracy of each stage at its own selected layer, mean over tasks.",
        ]
        if any(len(m["tasks"]) != len(tasks) for m in summary["models"]):
            lines += ["", "¹ Mean over the tasks the model was run on (not all tasks): not directly comparable."]
        if any(m["delta"] is None for m in summary["models"]):
            lines += ["", "² No hidden states (e.g. the TF-IDF + SVD control): scored on its final embedding only (layer −1, "
                      "shown as \"final only\"), pretrained stage only, since there is nothing to fine-tune on coarse labels; "
                      "its main score and best layer are the pretrained stage's."]
        lines.append("")
    lines += [
        "## Adding results",
        "",
        "1. Run every task with the default protocol (both stages, every layer):",
        "   `mteb run -m <model> -t FineGrainHidden --output-folder out/`",
        "   (or `mteb-finegrain run`). A model without hidden states is scored on its final embedding, pretrained stage only.",
        "2. Check and add the results folder (it holds the `FineGrainHidden*.json` files and `model_meta.json`):",
        "   `mteb-finegrain leaderboard add out/results/<model>/<revision>` (`--replace` to update a model's entry).",
        "   With `MTEB_FINEGRAIN_DATA_DIR` set, the data hash of each result is compared with the local data.",
        "3. Regenerate this page: `mteb-finegrain leaderboard build`, and open a pull request with `leaderboard/`.",
        "",
        "A citation line for one model: `mteb-finegrain leaderboard cite <model>`.",
        "",
        "The reference entries (all-MiniLM-L6-v2, its random-init control, the TF-IDF + SVD control, all-mpnet-base-v2) "
        "are reproduced with one command each: see [reference/README.md](reference/README.md).",
        "",
        "## How to cite",
        "",
        "Please cite the benchmark, the paper that introduced the protocol, and the datasets:",
        "",
    ]
    for entry in bibtex_entries(tasks):
        lines += ["```bibtex", entry.strip(), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_csv(leaderboard_dir: str | Path) -> str:
    """Every record of every entry, one row per (model, task, subset, stage, level, layer, metric, shots)."""
    rows = []
    for entry in entries(leaderboard_dir):
        for result in load_results(entry.path):
            for record in result.records():
                rows.append({**record, "model": entry.model, "revision": entry.revision})
    stage_order = {stage: i for i, stage in enumerate(STAGES)}
    rows.sort(key=lambda r: (r["model"], r["revision"], r["task"], r["subset"], stage_order.get(r["stage"], 9), r["level"] or "", r["layer"], r["metric"], r["shots"] or 0))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else repr(float(row[c])) if c in ("value", "std") else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)


def build_leaderboard(leaderboard_dir: str | Path) -> list[Path]:
    """Regenerate ``README.md``, ``leaderboard.csv`` and ``index.html`` from the accepted results.

    Parameters
    ----------
    leaderboard_dir : str or path-like
        The leaderboard root (created if missing).

    Returns
    -------
    list of Path
        The files written.
    """
    root = Path(leaderboard_dir)
    root.mkdir(parents=True, exist_ok=True)
    summary = summarize(root)
    texts = {"README.md": render_readme(summary), "leaderboard.csv": render_csv(root), "index.html": render_page(summary)}
    for name in OUTPUTS:
        _write(root / name, texts[name])
    return [root / name for name in OUTPUTS]
