"""Can a label-free signal choose the layer? The signal table of the docs, from protocol 4.0 results.

    python leaderboard/reference/label_free_table.py RESULTS_DIR [RESULTS_DIR ...] [--stage STAGE] [--digits N]

For every (model, task, stage) in the result folders this reads, per layer, the label-free
signals of the ``representation`` block on the validation texts (``effective_rank``,
``dataset_entropy``), the finest-level ``main_shots``-shot (default 8) probe accuracy on the
validation split (``validation_probe_accuracy``, the numbers the layer is chosen on) and on the
evaluation split (the ``probe_accuracy`` records), and hands them to
:func:`mteb_finegrain.scoring.signal_choice.compare_layer_rules`. Each signal gets one direction
(pick its largest or its smallest value) from the pooled validation data of all entries, never
per entry; the trivial rules (last, second-to-last and middle layer) stand beside the signals.

It prints Markdown: the summary table (mean within-entry Spearman with validation accuracy,
share of entries where the rule picks the validation-chosen layer, mean validation and test
accuracy lost against that layer, the largest test loss), then the layer every rule picks in every
entry. Entries that cannot take part are listed at the end with the reason: a model with a single
layer (nothing to choose), a result without a representation block, a null signal value.
``--stage`` keeps one stage's entries only.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import SIGNAL_METRICS, STAGES
from mteb_finegrain.results import SubsetResult, task_label
from mteb_finegrain.results import load_current_results as load_4_0
from mteb_finegrain.scoring.signal_choice import FIXED_RULES, SignalEntry, compare_layer_rules, format_table, layer_picks

SIGNAL_SPLIT = "validation"


def signal_entry(result: SubsetResult, stage: str) -> SignalEntry | str:
    """One stage of one result as a :class:`SignalEntry`, or the reason it cannot be one.

    Parameters
    ----------
    result : SubsetResult
        A protocol 4.0 subset.
    stage : str
        ``pretrained`` or ``coarse_tuned``.

    Returns
    -------
    SignalEntry or str
        The entry (signals on the validation texts, validation and evaluation accuracy of the
        finest-level ``main_shots``-shot probes, per layer), or why the stage is left out.
    """
    scores = result.parsed
    validation = (scores.validation_probe_accuracy or {}).get(stage)
    if not validation:
        return "stage not scored"
    layers = sorted(int(layer) for layer in validation)
    if len(layers) < 2:
        return f"{len(layers)} layer: nothing to choose"
    stage_block = (scores.representation or {}).get(stage)
    if not isinstance(stage_block, dict):
        return "no representation block for this stage"
    signals = {}
    for name in SIGNAL_METRICS:
        values = ((stage_block.get(name) or {}).get(SIGNAL_SPLIT)) or {}
        row = [values.get(str(layer)) for layer in layers]
        missing = [layer for layer, value in zip(layers, row) if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)]
        if missing:
            return f"{name} ({SIGNAL_SPLIT}) has no value at layer(s) {missing}"
        signals[name] = row
    finest, shots = scores.levels[-1], scores.settings.main_shots
    lookup = scores.lookup()
    test = [lookup.get((stage, finest, layer, "probe_accuracy", shots)) for layer in layers]
    missing = [layer for layer, value in zip(layers, test) if value is None]
    if missing:
        return f"no {shots}-shot {finest} probe_accuracy record at layer(s) {missing}"
    return SignalEntry(
        model=result.model,
        task=task_label(result),
        stage=stage,
        signals=signals,
        validation_accuracy=[validation[str(layer)] for layer in layers],
        test_accuracy=test,
        layers=layers,
    )


def collect(results: Sequence[SubsetResult], stages: Sequence[str] = STAGES) -> tuple[list[SignalEntry], list[tuple[str, str, str, str]], list[str]]:
    """The entries of every result and stage, the ones left out with their reason, and notes.

    Returns
    -------
    entries : list of SignalEntry
    left_out : list of (model, task, stage, reason)
    notes : list of str
        Entries whose stored validation accuracies (rounded to 6 decimals in the file) pick
        another layer than the result's ``selected_layer``: the table measures against the former.
    """
    entries, left_out, notes = [], [], []
    for result in results:
        for stage in stages:
            entry = signal_entry(result, stage)
            if isinstance(entry, str):
                if entry != "stage not scored":
                    left_out.append((result.model, task_label(result), stage, entry))
                continue
            recorded = result.parsed.selected_layer.get(stage)
            chosen = entry.layers[entry.chosen_position()]
            if recorded is not None and recorded != chosen:
                notes.append(f"{entry.model} on {entry.task}, {stage}: the stored validation accuracies pick layer {chosen}, the result selected {recorded}")
            entries.append(entry)
    return entries, left_out, notes


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def picks_table(entries: Sequence[SignalEntry]) -> str:
    """Markdown: per entry, the validation-chosen layer and the layer every rule picks (``*``: the same)."""
    picks = layer_picks(entries)
    rules = list(dict.fromkeys(pick.rule for pick in picks))
    by_entry: dict[tuple, dict[str, int]] = {}
    chosen: dict[tuple, int] = {}
    for pick in picks:
        key = (pick.model, pick.task, pick.stage)
        by_entry.setdefault(key, {})[pick.rule] = pick.layer
        chosen[key] = pick.chosen_layer
    lines = ["| model | task | stage | chosen on validation | " + " | ".join(rules) + " |", "|---|---|---|---:|" + "---:|" * len(rules)]
    for key, row in by_entry.items():
        cells = [f"{row[rule]}*" if row[rule] == chosen[key] else str(row[rule]) for rule in rules]
        lines.append(f"| {_cell(key[0])} | {_cell(key[1])} | {key[2]} | {chosen[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render(results_dirs: Sequence[str | Path], *, stage: str | None = None, digits: int = 3) -> str:
    """The whole Markdown output for the folders (see the module docstring).

    Raises
    ------
    FineGrainError
        As :func:`load_4_0`, or when no entry can take part.
    """
    results = load_4_0(results_dirs)
    stages = STAGES if stage is None else (stage,)
    entries, left_out, notes = collect(results, stages)
    if not entries:
        raise FineGrainError("no (model, task, stage) with at least 2 layers and a representation block: nothing to compare")
    shots = {result.parsed.settings.main_shots for result in results}
    signals = ", ".join(f"`{name}`" for name in SIGNAL_METRICS)
    out = [
        f"Label-free signals ({signals}, on the validation texts) against the layer chosen on validation "
        f"({'/'.join(map(str, sorted(shots)))}-shot finest-level probe accuracy), over {len(entries)} (model, task, stage) entries "
        f"of {len(results)} results; each signal's direction decided once from the pooled validation data; "
        f"losses are accuracy at the validation-chosen layer minus at the rule's layer (test: evaluation split).",
        "",
        format_table(compare_layer_rules(entries), digits=digits),
        f"Layer each rule picks (`*`: the validation-chosen layer; rules: the signals, then {', '.join(FIXED_RULES)}):",
        "",
        picks_table(entries),
    ]
    if left_out:
        out += ["Left out:", ""] + [f"- {_cell(model)} on {_cell(task)}, {stage_}: {reason}" for model, task, stage_, reason in left_out] + [""]
    if notes:
        out += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR", help="folders of protocol 4.0 results")
    parser.add_argument("--stage", choices=STAGES, help="one stage's entries only (default: both)")
    parser.add_argument("--digits", type=int, default=3, help="decimals of the summary table (default 3)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render(args.results_dirs, stage=args.stage, digits=args.digits))
    except FineGrainError as exc:
        print(f"label_free_table.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
