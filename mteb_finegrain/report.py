"""``mteb-finegrain report``: results as flat JSON records, a layer table, or a layer plot."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from mteb_finegrain.results import SubsetResult

TABLE_METRICS = (("v_measure", None, "V"), ("within_coarse_v_measure", None, "withinV"), ("probe_accuracy", 8, "probe@8"))
STAGE_SHORT = {"pretrained": "pre", "coarse_tuned": "tuned"}
STAGE_ORDER = ("pretrained", "coarse_tuned")


def json_records(results: list[SubsetResult]) -> list[dict]:
    """One flat record per (task, subset, model, stage, layer, metric, shots).

    Keys: ``task, subset, model, stage, layer, metric, shots, value, std`` plus ``revision``,
    ``mode`` (``probe``, ``setfit`` or null for clustering) and ``selected`` (the layer chosen on
    validation for that stage).
    """
    out = []
    for result in results:
        selected = result.scores.get("selected_layer", {})
        for record in result.records():
            metric = record["metric"]
            mode = "setfit" if metric.startswith("setfit") else "probe" if metric.startswith("probe") else None
            out.append({**record, "mode": mode, "selected": selected.get(record["stage"]) == record["layer"]})
    return sorted(out, key=lambda r: (r["task"], r["subset"], r["model"], STAGE_ORDER.index(r["stage"]) if r["stage"] in STAGE_ORDER else 9, r["layer"], r["metric"], r["shots"] or 0))


def _lookup(result: SubsetResult) -> dict:
    return {(r["stage"], r["layer"], r["metric"], r["shots"]): r["value"] for r in result.scores["records"]}


def format_table(results: list[SubsetResult]) -> str:
    """A plain-text layer table per result: key metrics per stage and their difference."""
    blocks = []
    for result in sorted(results, key=lambda r: (r.task, r.subset, r.model)):
        values = _lookup(result)
        stages = [s for s in STAGE_ORDER if any(k[0] == s for k in values)]
        layers = sorted({k[1] for k in values})
        selected = result.scores.get("selected_layer", {})
        title = f"{result.task} [{result.subset}]  model={result.model}  protocol={result.scores.get('protocol_version')}  main_score={result.scores.get('main_score', float('nan')):.4f}"
        header = ["layer"]
        for _, _, label in TABLE_METRICS:
            header += [f"{label} {STAGE_SHORT.get(s, s)}" for s in stages] + ([f"{label} diff"] if len(stages) == 2 else [])
        rows = []
        for layer in layers:
            marks = "".join(STAGE_SHORT.get(s, s)[0] for s in stages if selected.get(s) == layer)
            row = [f"{layer} {marks}".rstrip()]
            for metric, shots, _ in TABLE_METRICS:
                stage_values = [values.get((s, layer, metric, shots)) for s in stages]
                row += ["-" if v is None else f"{v:.4f}" for v in stage_values]
                if len(stages) == 2:
                    a, b = stage_values
                    row.append("-" if a is None or b is None else f"{b - a:+.4f}")
            rows.append(row)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines = [title, "  ".join(h.rjust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
        setfit = sorted((k, v) for k, v in values.items() if k[2] == "setfit_accuracy")
        for (stage, layer, _, shots), value in setfit:
            lines.append(f"setfit_accuracy@{shots} {stage} layer {layer}: {value:.4f}")
        lines.append(
            "V = v_measure, withinV = within_coarse_v_measure, probe@8 = 8-shot probe_accuracy; pre = pretrained, "
            "tuned = coarse_tuned, diff = tuned - pre; p / t after a layer: the layer chosen on validation for pre / tuned"
        )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot_layers(results: list[SubsetResult], path: str | os.PathLike) -> Path:
    """Draw V-measure and 8-shot probe accuracy against layer, per task, pretrained vs coarse-tuned.

    Lines are labelled at their right end (model and stage), so no legend lookup is needed;
    solid = pretrained, dashed = coarse-tuned, a ring marks the validation-selected layer.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_task: dict[str, list[SubsetResult]] = defaultdict(list)
    for result in results:
        by_task[f"{result.task} [{result.subset}]" if result.subset != "default" else result.task].append(result)
    panels = (("v_measure", None, "V-measure (k-means vs fine labels)"), ("probe_accuracy", 8, "8-shot probe accuracy"))
    fig, axes = plt.subplots(len(by_task), 2, figsize=(12, 4.2 * len(by_task)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = sorted({r.model for r in results})
    for row, (task, task_results) in enumerate(sorted(by_task.items())):
        lookups = [_lookup(result) for result in task_results]
        layers = sorted({key[1] for values in lookups for key in values})
        for col, (metric, shots, label) in enumerate(panels):
            ax = axes[row][col]
            for result, values in zip(task_results, lookups):
                colour = colours[models.index(result.model) % len(colours)]
                for stage in STAGE_ORDER:
                    points = sorted((k[1], v) for k, v in values.items() if k[0] == stage and k[2] == metric and k[3] == shots)
                    if not points:
                        continue
                    xs, ys = zip(*points)
                    style = "-" if stage == "pretrained" else "--"
                    ax.plot(xs, ys, style, marker="o", color=colour, linewidth=2)
                    short = result.model.split("/")[-1]
                    ax.annotate(f"{short} {stage.replace('_', '-')}", (xs[-1], ys[-1]), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8, color=colour)
                    chosen = result.scores.get("selected_layer", {}).get(stage)
                    if chosen in xs:
                        ax.plot([chosen], [ys[xs.index(chosen)]], "o", markersize=13, markerfacecolor="none", markeredgecolor=colour)
            ax.set_title(f"{task}: {label}", fontsize=10)
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_ylabel(label.split(" (")[0])
            ax.set_xticks(layers)
            ax.set_xlim(layers[0] - 0.3, layers[-1] + 0.3 + 0.25 * len(layers))  # room for line labels
            ax.grid(alpha=0.3)
    fig.suptitle("solid = pretrained, dashed = coarse-tuned, ring = layer selected on validation", fontsize=9)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".plot-", suffix=target.suffix or ".png", dir=target.parent)
    os.close(handle)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, target)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def dumps_records(results: list[SubsetResult]) -> str:
    """``report --json`` output."""
    return json.dumps(json_records(results), indent=1)
