"""``mteb-finegrain report``: results as flat JSON records, a layer table, or a layer plot."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from mteb_finegrain.results import SubsetResult
from mteb_finegrain.store import atomic_write

TABLE_METRICS = (("v_measure", None, "V"), ("within_coarse_v_measure", None, "withinV"), ("probe_accuracy", 8, "probe@8"))
STAGE_SHORT = {"pretrained": "pre", "coarse_tuned": "tuned"}
STAGE_ORDER = ("pretrained", "coarse_tuned")


def json_records(results: list[SubsetResult]) -> list[dict]:
    """One flat record per (task, subset, model, stage, level, layer, metric, shots).

    Keys: ``task, subset, model, stage, level, layer, metric, shots, value, std`` plus
    ``revision``, ``mode`` (``probe``, ``setfit`` or null for clustering) and ``selected`` (the
    layer chosen on validation for that stage).
    """
    keyed = []
    for result in results:
        selected = result.parsed.selected_layer
        order = {name: i for i, name in enumerate(result.levels)}
        for record in result.records():
            metric = record["metric"]
            mode = "setfit" if metric.startswith("setfit") else "probe" if metric.startswith("probe") else None
            stage = STAGE_ORDER.index(record["stage"]) if record["stage"] in STAGE_ORDER else 9
            key = (record["task"], record["subset"], record["model"], stage, order.get(record["level"], 0), record["layer"], metric, record["shots"] or 0)
            keyed.append((key, {**record, "mode": mode, "selected": selected.get(record["stage"]) == record["layer"]}))
    return [record for _, record in sorted(keyed, key=lambda pair: pair[0])]


def _level_title(result: SubsetResult, level) -> str:
    if level is None:
        return "fine labels"
    count = (result.parsed.card.classes_per_level or {}).get(level)
    depth = result.levels.index(level)
    where = "coarsest" if depth == 0 else "finest" if depth == len(result.levels) - 1 else f"level {depth}"
    return f"level {level} ({where}" + (f", {count} classes)" if count else ")")


def format_table(results: list[SubsetResult]) -> str:
    """A plain-text layer table per result and level: key metrics per stage and their difference."""
    blocks = []
    for result in sorted(results, key=lambda r: (r.task, r.subset, r.model)):
        values = result.lookup()
        stages = [s for s in STAGE_ORDER if any(k[0] == s for k in values)]
        layers = sorted({k[2] for k in values})
        scores = result.parsed
        selected = scores.selected_layer
        trained = scores.coarse_training_level
        main = float("nan") if scores.main_score is None else scores.main_score
        title = (
            f"{result.task} [{result.subset}]  model={result.model}  protocol={scores.protocol_version}  "
            f"main_score={main:.4f}" + (f"  coarse_tuned on level {trained}" if trained else "")
        )
        lines = [title]
        header = ["layer"]
        for _, _, label in TABLE_METRICS:
            header += [f"{label} {STAGE_SHORT.get(s, s)}" for s in stages] + ([f"{label} diff"] if len(stages) == 2 else [])
        for level in result.levels:
            rows = []
            for layer in layers:
                marks = "".join(STAGE_SHORT.get(s, s)[0] for s in stages if selected.get(s) == layer) if level == result.levels[-1] else ""
                row = [f"{layer} {marks}".rstrip()]
                for metric, shots, _ in TABLE_METRICS:
                    stage_values = [values.get((s, level, layer, metric, shots)) for s in stages]
                    row += ["-" if v is None else f"{v:.4f}" for v in stage_values]
                    if len(stages) == 2:
                        a, b = stage_values
                        row.append("-" if a is None or b is None else f"{b - a:+.4f}")
                rows.append(row)
            widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
            if len(result.levels) > 1 or level is not None:
                lines.append(_level_title(result, level))
            lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
            lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
        setfit = sorted(((k, v) for k, v in values.items() if k[3] == "setfit_accuracy"), key=lambda kv: (STAGE_ORDER.index(kv[0][0]), kv[0][2]))
        for (stage, _, layer, _, shots), value in setfit:
            lines.append(f"setfit_accuracy@{shots} {stage} layer {layer}: {value:.4f}")
        lines.append(
            "V = v_measure, withinV = within_coarse_v_measure (inside each class of the next coarser level), "
            "probe@8 = 8-shot probe_accuracy; pre = pretrained, tuned = coarse_tuned, diff = tuned - pre; "
            "p / t after a layer: the layer chosen on validation (finest level) for pre / tuned"
        )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot_layers(results: list[SubsetResult], path: str | os.PathLike) -> Path:
    """Draw V-measure and 8-shot probe accuracy against layer, one curve per level and stage.

    One row of panels per task. Colour = hierarchy level, solid = pretrained, dashed =
    coarse-tuned; with several models, each has its own marker. Lines are labelled at their right
    end, so no legend lookup is needed; a ring marks the validation-selected layer (finest level).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_task: dict[str, list[SubsetResult]] = defaultdict(list)
    for result in results:
        by_task[f"{result.task} [{result.subset}]" if result.subset != "default" else result.task].append(result)
    panels = (("v_measure", None, "V-measure (k-means vs the level's labels)"), ("probe_accuracy", 8, "8-shot probe accuracy"))
    fig, axes = plt.subplots(len(by_task), 2, figsize=(12, 4.4 * len(by_task)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "os^Dv<>"
    models = sorted({r.model for r in results})
    for row, (task, task_results) in enumerate(sorted(by_task.items())):
        lookups = [result.lookup() for result in task_results]
        layers = sorted({key[2] for values in lookups for key in values})
        for col, (metric, shots, label) in enumerate(panels):
            ax = axes[row][col]
            for result, values in zip(task_results, lookups):
                marker = markers[models.index(result.model) % len(markers)]
                for depth, level in enumerate(result.levels):
                    colour = colours[depth % len(colours)]
                    for stage in STAGE_ORDER:
                        points = sorted((k[2], v) for k, v in values.items() if k[0] == stage and k[1] == level and k[3] == metric and k[4] == shots)
                        if not points:
                            continue
                        xs, ys = zip(*points)
                        ax.plot(xs, ys, "-" if stage == "pretrained" else "--", marker=marker, color=colour, linewidth=2)
                        name = (f"{result.model.split('/')[-1]} " if len(models) > 1 else "") + f"{level or 'fine'} {STAGE_SHORT.get(stage, stage)}"
                        ax.annotate(name, (xs[-1], ys[-1]), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8, color=colour)
                        chosen = result.parsed.selected_layer.get(stage)
                        if depth == len(result.levels) - 1 and chosen in xs:
                            ax.plot([chosen], [ys[xs.index(chosen)]], "o", markersize=13, markerfacecolor="none", markeredgecolor=colour)
            ax.set_title(f"{task}: {label}", fontsize=10)
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_ylabel(label.split(" (")[0])
            ax.set_xticks(layers)
            ax.set_xlim(layers[0] - 0.3, layers[-1] + 0.3 + 0.3 * len(layers))  # room for line labels
            ax.grid(alpha=0.3)
    fig.suptitle("colour = label level; solid = pretrained (pre), dashed = coarse-tuned (tuned); ring = layer selected on validation", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # keep the top row's titles clear of the suptitle
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The format from the name (the temporary file's own name ends in .tmp); png without a suffix.
        atomic_write(target, lambda out: fig.savefig(out, dpi=110, format=target.suffix[1:].lower() or "png"))
    finally:
        plt.close(fig)
    return target


def dumps_records(results: list[SubsetResult]) -> str:
    """``report --json`` output."""
    return json.dumps(json_records(results), indent=1)
