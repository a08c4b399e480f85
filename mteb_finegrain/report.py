"""``mteb-finegrain report``: results as flat JSON records, a layer table, or a layer plot.

The plot is drawn by :mod:`mteb_finegrain.report_plots`; what the report reads besides the
scores (intervals, the representation block, the coarse-tuning effect) by
:mod:`mteb_finegrain.report_data`.
"""

from __future__ import annotations

import json

from mteb_finegrain.report_data import (
    EFFECT_METRIC,
    SIGNAL_SPLITS,
    STAGE_ORDER,
    STAGE_SHORT,
    CoarseTuningEffects,
    coarse_tuning_effects,
    read_representation,
    record_intervals,
)
from mteb_finegrain.report_plots import plot_layers
from mteb_finegrain.results import SubsetResult, record_key

__all__ = ["dumps_records", "format_table", "json_records", "plot_layers"]

PROBE_SHOTS = 8
TABLE_METRICS = (("v_measure", None, "V"), ("within_coarse_v_measure", None, "withinV"), ("probe_accuracy", PROBE_SHOTS, "probe@8"))
# The order of a result's rows in --json: its records, then the effect rows, then the representation rows.
_RECORDS, _EFFECTS, _REPRESENTATION = 0, 1, 2


def _stage_rank(stage) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def _effect_rows(result: SubsetResult, effects: CoarseTuningEffects) -> list[dict]:
    selected = result.parsed.selected_layer.get("coarse_tuned")
    base = {"task": result.task, "subset": result.subset, "model": result.model, "revision": result.revision}
    rows = []
    for layer, effect in effects.by_layer.items():
        row = {**base, "stage": "coarse_tuned", "level": effects.level, "layer": layer, "metric": EFFECT_METRIC, "shots": effects.shots,
               "value": effect.value, "std": None, "mode": "probe", "selected": selected == layer, "split": "evaluation",
               "ci95": list(effect.ci95), "n_runs": effect.n_runs}
        if effect.runs_std is not None:
            row["runs_std"] = effect.runs_std
        rows.append(row)
    return rows


def _representation_rows(result: SubsetResult) -> list[dict]:
    selected = result.parsed.selected_layer
    base = {"task": result.task, "subset": result.subset, "model": result.model, "revision": result.revision}
    rows = []
    for (stage, metric, split), values in read_representation(result).layer_values.items():
        for layer, value in values.items():
            rows.append({**base, "stage": stage, "level": None, "layer": layer, "metric": metric, "shots": None, "value": value,
                         "std": None, "mode": None, "selected": selected.get(stage) == layer, "split": split})
    return rows


def json_records(results: list[SubsetResult]) -> list[dict]:
    """Flat rows: one per record, per coarse-tuning effect and per representation value.

    Every row has the keys ``task, subset, model, revision, stage, level, layer, metric, shots,
    value, std, mode, selected``: ``mode`` is ``probe``, ``setfit`` or null (clustering and
    representation rows), ``selected`` whether ``layer`` is the one chosen on validation for
    ``stage``. Rows are sorted by task, subset, model, then records before effect rows before
    representation rows, then stage, level, layer, metric and shots.

    * Records (one per ``(stage, level, layer, metric, shots)`` of the result): ``std`` is the
      spread over seeds (for clustering metrics, over k-means seeds: a spread, not an interval;
      for coarse_tuned records, the mean over runs of that spread). Protocol 4.0 adds
      ``ci95: [low, high]`` (every probe_accuracy record: items, support sets and, for
      coarse_tuned, coarse-training runs) and ``runs_std`` (coarse_tuned records with at least
      2 runs: sd of the value over runs); a row has these keys only when its record has them.
    * ``coarse_tuning_effect`` rows (results with stored predictions of both stages): stage
      ``coarse_tuned``, the finest ``level``, the main ``shots``, one per layer; ``value`` is the
      coarse_tuned minus the pretrained probe accuracy on the same items and support sets,
      ``ci95`` its paired 95% interval (items, support sets, coarse-training runs), ``runs_std``
      the coarse runs' sd (with >= 2 runs), ``n_runs`` the runs averaged, ``split``
      ``"evaluation"``, ``std`` null.
    * Representation rows (results of protocol 4.0), with ``level``, ``shots`` and ``std`` null
      and a ``split`` key: ``cka_to_pretrained`` (debiased linear CKA of the coarse_tuned layer to
      the pretrained one, 1 = unchanged) and ``cka_to_pretrained_permuted`` (the same against
      shuffled rows: the baseline, about 0), stage ``coarse_tuned``, split ``"evaluation"``;
      ``effective_rank`` and ``dataset_entropy`` of each stage, one row per split
      (``"evaluation"`` and ``"validation"``).

    Parameters
    ----------
    results : list of SubsetResult
        As :func:`mteb_finegrain.results.load_results` reads them.

    Returns
    -------
    list of dict

    Raises
    ------
    FineGrainError
        Naming the file, when its representation or predictions block is malformed.
    """
    keyed = []
    for result in results:
        selected = result.parsed.selected_layer
        order = {name: i for i, name in enumerate(result.levels)}
        intervals = record_intervals(result)
        head = (result.task, result.subset, result.model)
        for record in result.records():
            metric = record["metric"]
            mode = "setfit" if metric.startswith("setfit") else "probe" if metric.startswith("probe") else None
            row = {**record, "mode": mode, "selected": selected.get(record["stage"]) == record["layer"]}
            interval = intervals.get(record_key(record))
            if interval is not None and interval.ci95 is not None:
                row["ci95"] = list(interval.ci95)
            if interval is not None and interval.runs_std is not None:
                row["runs_std"] = interval.runs_std
            key = (*head, _RECORDS, _stage_rank(record["stage"]), order.get(record["level"], 0), record["layer"], metric, record["shots"] or 0, 0)
            keyed.append((key, row))
        for row in _effect_rows(result, coarse_tuning_effects(result)):
            keyed.append(((*head, _EFFECTS, _stage_rank(row["stage"]), 0, row["layer"], row["metric"], row["shots"] or 0, 0), row))
        for row in _representation_rows(result):
            split = SIGNAL_SPLITS.index(row["split"])
            keyed.append(((*head, _REPRESENTATION, _stage_rank(row["stage"]), 0, row["layer"], row["metric"], 0, split), row))
    return [row for _, row in sorted(keyed, key=lambda pair: pair[0])]


def _with_interval(value: float, ci95, signed: bool = False) -> str:
    number = "{:+.4f}" if signed else "{:.4f}"
    text = number.format(value)
    return text if ci95 is None else f"{text} [{number.format(ci95[0])}, {number.format(ci95[1])}]"


def _level_title(result: SubsetResult, level) -> str:
    if level is None:
        return "fine labels"
    count = (result.parsed.card.classes_per_level or {}).get(level)
    depth = result.levels.index(level)
    where = "coarsest" if depth == 0 else "finest" if depth == len(result.levels) - 1 else f"level {depth}"
    return f"level {level} ({where}" + (f", {count} classes)" if count else ")")


def _title(result: SubsetResult) -> str:
    scores = result.parsed
    main = float("nan") if scores.main_score is None else scores.main_score
    trained = scores.coarse_training_level
    return (
        f"{result.task} [{result.subset}]  model={result.model}  protocol={scores.protocol_version}  "
        f"main_score={_with_interval(main, scores.main_score_ci95)}" + (f"  coarse_tuned on level {trained}" if trained else "")
    )


def _selection_lines(result: SubsetResult, values: dict, intervals: dict) -> list[str]:
    """The validation-selected layer of each stage, with its main-shot finest-level probe accuracy and interval."""
    scores = result.parsed
    shots, finest = scores.settings.main_shots, result.levels[-1]
    runs = len((scores.coarse_training_runs or {}).get("seeds") or [])
    lines = []
    for stage in STAGE_ORDER:
        key = (stage, finest, scores.selected_layer.get(stage), "probe_accuracy", shots)
        if key[2] is None or key not in values:
            continue
        interval = intervals.get(key)
        text = f"  {stage:<12} layer {key[2]}: probe@{shots} {_with_interval(values[key], interval.ci95 if interval else None)}"
        if interval is not None and interval.runs_std is not None:
            text += f"  (sd over {runs or 'the'} coarse-training runs {interval.runs_std:.4f})"
        lines.append(text)
    if not lines:
        return []
    has_interval = any(intervals.get((s, finest, scores.selected_layer.get(s), "probe_accuracy", shots)) for s in STAGE_ORDER)
    return [f"layer chosen on validation, scored on the evaluation split (finest level{', 95% interval' if has_interval else ''}):", *lines]


def _level_table(result: SubsetResult, level, stages: list[str], layers: list[int], values: dict, drift: dict[int, float],
                 effects: CoarseTuningEffects) -> list[str]:
    """One level's table: a row per layer; at the finest level the effect's interval; the CKA column when recorded."""
    selected = result.parsed.selected_layer
    finest = level == result.levels[-1]
    show_effect = finest and bool(effects.by_layer)
    # At 8 shots the effect is the probe@8 diff column's own number: that column gains the interval.
    effect_in_diff = show_effect and effects.shots == PROBE_SHOTS and len(stages) == 2
    header = ["layer"]
    for _, _, label in TABLE_METRICS:
        header += [f"{label} {STAGE_SHORT.get(s, s)}" for s in stages] + ([f"{label} diff"] if len(stages) == 2 else [])
    if effect_in_diff:
        header[-1] = f"{header[-1]} [ci95]"
    elif show_effect:
        header.append(f"effect@{effects.shots} [ci95]")
    header += ["CKA"] if drift else []
    rows = []
    for layer in layers:
        marks = "".join(STAGE_SHORT.get(s, s)[0] for s in stages if selected.get(s) == layer) if finest else ""
        row = [f"{layer} {marks}".rstrip()]
        for metric, shots, _ in TABLE_METRICS:
            stage_values = [values.get((s, level, layer, metric, shots)) for s in stages]
            row += ["-" if v is None else f"{v:.4f}" for v in stage_values]
            if len(stages) == 2:
                a, b = stage_values
                row.append("-" if a is None or b is None else f"{b - a:+.4f}")
        effect = effects.by_layer.get(layer) if show_effect else None
        if effect_in_diff and effect is not None:
            row[-1] = _with_interval(effect.value, effect.ci95, signed=True)
        elif show_effect and not effect_in_diff:
            row.append("-" if effect is None else _with_interval(effect.value, effect.ci95, signed=True))
        if drift:
            row.append("-" if layer not in drift else f"{drift[layer]:.3f}")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = [_level_title(result, level)] if len(result.levels) > 1 or level is not None else []
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    return lines + ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]


def _legend(drift: dict, effects: CoarseTuningEffects) -> list[str]:
    lines = [
        "V = v_measure, withinV = within_coarse_v_measure (inside each class of the next coarser level), "
        "probe@8 = 8-shot probe_accuracy; pre = pretrained, tuned = coarse_tuned, diff = tuned - pre; "
        "p / t after a layer: the layer chosen on validation (finest level) for pre / tuned",
        "clustering scores (V, withinV) are means over k-means seeds; their std (in --json) is the spread over those seeds, not an interval",
    ]
    if effects.by_layer:
        name = "probe@8 diff" if effects.shots == PROBE_SHOTS else f"effect@{effects.shots}"
        lines.append(
            f"{name} [ci95] at the {effects.level} level: the coarse-tuning effect, tuned - pre {effects.shots}-shot probe accuracy on the "
            "same items and support sets, with its paired 95% interval (new items, support sets and coarse-training runs)"
        )
    if drift:
        lines.append("CKA = linear CKA of the coarse-tuned layer to the pretrained one on the evaluation texts (1 = unchanged, ~0 = unrelated)")
    return lines


def format_table(results: list[SubsetResult]) -> str:
    """A plain-text layer table per result and level: key metrics per stage and their difference.

    Above the tables: the main score with its 95% interval and each stage's selected layer with
    its probe accuracy and interval. In the finest level's table, results with stored
    predictions get the coarse-tuning effect per layer with its paired interval; results with a
    representation block get the ``CKA`` drift column in every level's table. Results of older
    protocols show the scores alone.

    Raises
    ------
    FineGrainError
        Naming the file, when its representation or predictions block is malformed.
    """
    blocks = []
    for result in sorted(results, key=lambda r: (r.task, r.subset, r.model)):
        values = result.lookup()
        intervals = record_intervals(result)
        stages = [s for s in STAGE_ORDER if any(k[0] == s for k in values)]
        layers = sorted({k[2] for k in values})
        drift = read_representation(result).drift()
        effects = coarse_tuning_effects(result)
        lines = [_title(result), *_selection_lines(result, values, intervals)]
        for level in result.levels:
            lines += _level_table(result, level, stages, layers, values, drift, effects)
        setfit = sorted(((k, v) for k, v in values.items() if k[3] == "setfit_accuracy"), key=lambda kv: (_stage_rank(kv[0][0]), kv[0][2]))
        for (stage, _, layer, _, shots), value in setfit:
            lines.append(f"setfit_accuracy@{shots} {stage} layer {layer}: {value:.4f}")
        lines += _legend(drift, effects)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def dumps_records(results: list[SubsetResult]) -> str:
    """``report --json`` output: :func:`json_records` as an indented JSON list."""
    return json.dumps(json_records(results), indent=1)
