"""``mteb-finegrain report --plot``: layer curves, drift from the pretrained model and layer x layer CKA.

One row of line panels per task: V-measure and the 8-shot probe accuracy against layer (bands:
the probe records' 95% intervals), and, for results of protocol 4.0, the coarse-tuned layers'
CKA to the pretrained ones with its permutation baseline. Below it, per model with a
``representation`` block, one heat map of the layer x layer CKA per stage. Results without
intervals or a representation block (protocols before 4.0) are drawn without those parts.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from mteb_finegrain.report_data import STAGE_ORDER, STAGE_SHORT, read_representation, record_intervals
from mteb_finegrain.results import SubsetResult
from mteb_finegrain.store import atomic_write

LINE_PANELS = (("v_measure", None, "V-measure (k-means vs the level's labels)"), ("probe_accuracy", 8, "8-shot probe accuracy"))
MARKERS = "os^Dv<>"
# The drift panel colours models, not levels: start past the colours the first levels use.
DRIFT_COLOUR_OFFSET = 3


def _task_name(result: SubsetResult) -> str:
    return f"{result.task} [{result.subset}]" if result.subset != "default" else result.task


def _short_model(model: str) -> str:
    return model.split("/")[-1]


def _score_panel(ax, task_results, metric, shots, colours, models) -> bool:
    """Curves of one metric against layer: colour = level, solid = pretrained, dashed = coarse-tuned.

    Returns whether a 95% band was drawn (records of protocol 4.0 have intervals).
    """
    banded = False
    for result in task_results:
        values, intervals = result.lookup(), record_intervals(result)
        marker = MARKERS[models.index(result.model) % len(MARKERS)]
        for depth, level in enumerate(result.levels):
            colour = colours[depth % len(colours)]
            for stage in STAGE_ORDER:
                keys = sorted((k for k in values if k[0] == stage and k[1] == level and k[3] == metric and k[4] == shots), key=lambda k: k[2])
                if not keys:
                    continue
                xs, ys = [k[2] for k in keys], [values[k] for k in keys]
                ax.plot(xs, ys, "-" if stage == "pretrained" else "--", marker=marker, color=colour, linewidth=2)
                band = [(k[2], intervals[k].ci95) for k in keys if k in intervals and intervals[k].ci95 is not None]
                if band and depth == len(result.levels) - 1:  # the finest level's only: six overlapping bands say nothing
                    ax.fill_between([x for x, _ in band], [ci[0] for _, ci in band], [ci[1] for _, ci in band], color=colour, alpha=0.12, linewidth=0)
                    banded = True
                name = (f"{_short_model(result.model)} " if len(models) > 1 else "") + f"{level or 'fine'} {STAGE_SHORT.get(stage, stage)}"
                ax.annotate(name, (xs[-1], ys[-1]), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8, color=colour)
                chosen = result.parsed.selected_layer.get(stage)
                if depth == len(result.levels) - 1 and chosen in xs:
                    ax.plot([chosen], [ys[xs.index(chosen)]], "o", markersize=13, markerfacecolor="none", markeredgecolor=colour)
    return banded


def _drift_panel(ax, task_results, colours, models) -> bool:
    """cka_to_pretrained against layer, one line per model, its permutation baseline faint; False when none is recorded."""
    drawn = False
    for result in task_results:
        representation = read_representation(result)
        drift, baseline = representation.drift(), representation.drift("cka_to_pretrained_permuted")
        if not drift:
            continue
        drawn = True
        colour = colours[(DRIFT_COLOUR_OFFSET + models.index(result.model)) % len(colours)]
        marker = MARKERS[models.index(result.model) % len(MARKERS)]
        xs = list(drift)
        ax.plot(xs, [drift[x] for x in xs], "-", marker=marker, color=colour, linewidth=2)
        name = _short_model(result.model) if len(models) > 1 else "CKA to pretrained"
        ax.annotate(name, (xs[-1], drift[xs[-1]]), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8, color=colour)
        if baseline:
            bx = list(baseline)
            ax.plot(bx, [baseline[x] for x in bx], ":", color=colour, alpha=0.35, linewidth=1.5)
            ax.annotate("permuted", (bx[-1], baseline[bx[-1]]), xytext=(6, 0), textcoords="offset points", va="center", fontsize=7,
                        color=colour, alpha=0.6)
        chosen = result.parsed.selected_layer.get("coarse_tuned")
        if chosen in drift:
            ax.plot([chosen], [drift[chosen]], "o", markersize=13, markerfacecolor="none", markeredgecolor=colour)
    return drawn


def _layer_axis(ax, layers, label: str) -> None:
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel(label)
    ax.set_xticks(layers)
    ax.set_xlim(layers[0] - 0.3, layers[-1] + 0.3 + 0.3 * len(layers))  # room for line labels
    ax.grid(alpha=0.3)


def _heat_map(fig, ax, layers, matrix, title: str) -> None:
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", origin="lower")
    ax.set_xticks(range(len(layers)), [str(x) for x in layers])
    ax.set_yticks(range(len(layers)), [str(x) for x in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="linear CKA")


def plot_layers(results: list[SubsetResult], path: str | os.PathLike) -> Path:
    """Draw the layer curves of ``results`` to ``path`` (format from the suffix; PNG without one).

    Per task, one row: V-measure and 8-shot probe accuracy against layer, one curve per level
    and stage (colour = level, solid = pretrained, dashed = coarse-tuned, a band = the finest
    level's probe 95% interval where recorded; with several models each has its own marker), and,
    when any result has one, a drift panel: the coarse-tuned layers' CKA to the pretrained ones,
    the permutation baseline as a faint dotted line. Lines are labelled at their right end; a
    ring marks the validation-selected layer. Below, per model with a representation block,
    one heat map of the layer x layer CKA per stage.

    Parameters
    ----------
    results : list of SubsetResult
        As :func:`mteb_finegrain.results.load_results` reads them.
    path : str or os.PathLike
        The image file to write (its folder is created).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    FineGrainError
        Naming the file, when a result's representation block is malformed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_task: dict[str, list[SubsetResult]] = defaultdict(list)
    for result in results:
        by_task[_task_name(result)].append(result)
    tasks = sorted(by_task.items())
    heat_rows = [(task, result, read_representation(result).cka_between_layers) for task, task_results in tasks for result in task_results]
    heat_rows = [(task, result, maps) for task, result, maps in heat_rows if maps]
    with_drift = any(read_representation(result).drift() for result in results)
    n_cols = max(len(LINE_PANELS) + with_drift, *(len(maps) for _, _, maps in heat_rows), 1)
    n_rows = len(tasks) + len(heat_rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(6 * n_cols, 4.4 * n_rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = sorted({r.model for r in results})
    for row, (task, task_results) in enumerate(tasks):
        layers = sorted({key[2] for result in task_results for key in result.lookup()})
        for col, (metric, shots, label) in enumerate(LINE_PANELS):
            ax = axes[row][col]
            banded = _score_panel(ax, task_results, metric, shots, colours, models)
            ax.set_title(f"{task}: {label}" + (" (band: 95% interval, finest level)" if banded else ""), fontsize=10)
            _layer_axis(ax, layers, label.split(" (")[0])
        if with_drift:
            ax = axes[row][len(LINE_PANELS)]
            if _drift_panel(ax, task_results, colours, models):
                ax.set_title(f"{task}: drift, tuned vs pre (dotted: permuted)", fontsize=10)
                _layer_axis(ax, layers, "linear CKA to pretrained")
                ax.set_ylim(-0.05, 1.05)
            else:
                ax.axis("off")
                ax.text(0.5, 0.5, f"{task}: no drift recorded (results before protocol 4.0)", ha="center", va="center", fontsize=9)
        for col in range(len(LINE_PANELS) + with_drift, n_cols):
            axes[row][col].axis("off")
    for row, (task, result, maps) in enumerate(heat_rows, start=len(tasks)):
        stages = [stage for stage in STAGE_ORDER if stage in maps]
        for col, stage in enumerate(stages):
            layers, matrix = maps[stage]
            _heat_map(fig, axes[row][col], layers, matrix, f"{task}: {_short_model(result.model)} {stage}, layer x layer CKA")
        for col in range(len(stages), n_cols):
            axes[row][col].axis("off")
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
