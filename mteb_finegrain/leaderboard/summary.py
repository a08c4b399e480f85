"""The leaderboard as one summary: per model, its main score with its interval and rank interval,
selected layers, layer curves with interval bands, drift and label-free layer signals.

Read by the generated pages (``build``) and by ``cite``; derived from the accepted results alone,
and deterministic: the rank intervals' bootstrap has a fixed seed.

Rank intervals (Mogstad, Romano, Shaikh & Wilhelm 2024; :mod:`mteb_finegrain.uncertainty.ranks`)
are computed among the entries that pair: every board task run, with stored predictions whose
``split_sha256``, probe ``seeds``, ``level`` and ``shots`` are the same for every ranked entry. A
model's main-score matrix for a task is the stored correctness of its main stage at the selected
layer (averaged over coarse-training runs), and the runs' variance ``runs_std**2 / n_runs`` enters
each bootstrap replicate. An entry that cannot be paired gets no rank interval and a reason.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from statistics import mean

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.leaderboard.store import entries
from mteb_finegrain.protocol import INTERVAL_LEVEL, PROTOCOL_VERSION, STAGES, Protocol
from mteb_finegrain.results import load_results
from mteb_finegrain.schema import SubsetScores
from mteb_finegrain.uncertainty.evidence import read_predictions
from mteb_finegrain.uncertainty.ranks import RankInterval, bootstrap_scores, main_score_interval, rank_intervals

RANK_BOOT = 10_000  # bootstrap replicates of the rank intervals
RANK_SEED = 0  # fixed: rebuilding an unchanged board gives the same intervals
PAIRING_FIELDS = ("evaluation split (split_sha256)", "probe seeds", "level", "shot count")
RANK_METHOD = (
    "simultaneous {level:.0%} rank intervals (Mogstad, Romano, Shaikh & Wilhelm 2024) from max-|t| intervals of every "
    "pairwise difference of main scores, by a paired bootstrap of the stored predictions (the same items and probe seeds "
    "resampled for every model, tasks independent, coarse-training run variance added as normal noise; {n_boot:,} "
    "replicates, seed {seed})"
)


def _round(value: float) -> float:
    # Means of 6-decimal scores: rounding keeps the generated files short and stable.
    return round(float(value), 6)


def _number(value) -> float | None:
    """A finite number rounded for the page, else None (JSON for the page allows no NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return _round(value)


def _pair(value) -> list[float] | None:
    """``[low, high]`` rounded, or None when ``value`` is not such a pair."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) is not None for v in value):
        return [_round(value[0]), _round(value[1])]
    return None


def _per_layer(block, layers: list[int]) -> list[float | None] | None:
    """A ``{"<layer>": value}`` block as a list aligned with ``layers`` (None where absent)."""
    if not isinstance(block, dict):
        return None
    values = [_number(block.get(str(layer))) for layer in layers]
    return values if any(v is not None for v in values) else None


def _representation(scores: SubsetScores) -> dict:
    """Per stage the drift and label-free signals the page draws, aligned with the model's layers."""
    layers, out = scores.model.layers, {}
    for stage, block in (scores.representation or {}).items():
        if not isinstance(block, dict):
            continue
        shown = {}
        for name in ("effective_rank", "dataset_entropy"):
            signal = block.get(name)
            values = _per_layer(signal.get("evaluation") if isinstance(signal, dict) else None, layers)
            if values is not None:
                shown[name] = values
        for name in ("cka_to_pretrained", "cka_to_pretrained_permuted"):
            values = _per_layer(block.get(name), layers)
            if values is not None:
                shown[name] = values
        between = block.get("cka_between_layers")
        if isinstance(between, dict) and isinstance(between.get("layers"), list) and isinstance(between.get("matrix"), list):
            shown["cka_between_layers"] = {
                "layers": [int(layer) for layer in between["layers"]],
                "matrix": [[_number(v) for v in row] if isinstance(row, list) else [] for row in between["matrix"]],
            }
        if shown:
            out[stage] = shown
    return out


def _task_summary(scores: SubsetScores) -> dict:
    """Main score with its interval, selected layers, the coarse-tuned gain, curves and representation of one card.

    A model without hidden states has only the ``pretrained`` stage: its ``best_layer`` is that
    stage's (``-1``) and its ``delta`` is None (coarse fine-tuning does not apply).
    """
    layers = scores.model.layers
    main_shots = scores.settings.main_shots
    finest = scores.levels[-1]  # the main score's level; the page's curves are drawn at it
    by_key = {(r.stage, r.layer, r.metric, r.shots): r for r in scores.records if r.level == finest}
    value = {key: record.value for key, record in by_key.items()}
    stages = [stage for stage in STAGES if any(r.stage == stage for r in scores.records)]
    selected = {stage: scores.selected_layer[stage] for stage in stages}
    probe = {stage: value[(stage, selected[stage], "probe_accuracy", main_shots)] for stage in stages}
    runs = scores.coarse_training_runs or {}
    curves = {}
    for stage in stages:
        curves[stage] = {
            "v_measure": [value[(stage, layer, "v_measure", None)] for layer in layers],
            "probe_accuracy": [value[(stage, layer, "probe_accuracy", main_shots)] for layer in layers],
        }
        bands = [_pair(by_key[(stage, layer, "probe_accuracy", main_shots)].ci95) for layer in layers]
        if any(band is not None for band in bands):
            curves[stage]["probe_accuracy_ci95"] = bands
    return {
        "main": scores.main_score,
        "main_ci95": _pair(scores.main_score_ci95),
        "main_stage": stages[-1],
        "runs_std": _number(runs.get("runs_std")) if isinstance(runs, dict) else None,
        "selected": selected,
        "best_layer": selected[stages[-1]],
        # Each stage at its own validation-selected layer: what coarse fine-tuning gains or costs.
        "delta": _round(probe["coarse_tuned"] - probe["pretrained"]) if "coarse_tuned" in probe else None,
        "curves": curves,
        "representation": _representation(scores),
    }


def main_evidence(scores: SubsetScores):
    """The pairing key, main-score correctness matrix and runs of one result, from its stored predictions.

    Returns
    -------
    (key, matrix, runs_std, n_runs) or str
        ``key`` is ``(split_sha256, seeds, level, shots)``, what two results must share to pair;
        ``matrix`` the main stage's correctness at its selected layer, averaged over runs. A
        string says why there is none (no predictions stored, or they do not read).
    """
    if not scores.predictions:
        return f"no stored predictions (protocol {scores.protocol_version} result)"
    try:
        evidence = read_predictions(scores.predictions)
        stage = "coarse_tuned" if "coarse_tuned" in scores.selected_layer else "pretrained"
        found = evidence.interval(stage, scores.selected_layer[stage])
    except FineGrainError as exc:
        return f"its stored predictions do not give the main score ({exc})"
    key = (evidence.split_sha256, evidence.seeds, evidence.level, evidence.shots)
    return key, found.matrix, found.runs_std, found.n_runs


def _unpaired_reason(key: tuple, group_key: tuple, task: str) -> str:
    differ = [name for name, a, b in zip(PAIRING_FIELDS, key, group_key) if a != b]
    return f"its {task} predictions do not pair with the ranked entries' (other {', '.join(differ)})"


def rank_models(models: list[dict], evidence: dict, tasks: list[str], *, n_boot: int = RANK_BOOT, seed: int = RANK_SEED) -> dict:
    """Rank intervals of the models that pair, and a reason for each that does not.

    Parameters
    ----------
    models : list of dict
        The summary's models, best main score first; ``rank_interval`` (``[low, high]`` or None),
        ``rank_text`` and ``rank_note`` are set on each.
    evidence : dict
        ``folder -> task -> main_evidence(...)`` result (a tuple, or a string saying why not).
    tasks : list of str
        Every task on the board: a ranked model has run them all.
    n_boot, seed : int
        The bootstrap's replicates and seed.

    Returns
    -------
    dict
        ``method``, ``level``, ``n_boot``, ``seed``, ``ranked`` (how many) and ``unranked``
        (``{"model", "reason"}`` per model without a rank interval).
    """
    reasons, keys = {}, {}
    for model in models:
        found = evidence[model["folder"]]
        missing = [task for task in tasks if task not in found]
        unusable: dict[str, list[str]] = {}  # reason -> the tasks it holds for
        for task in tasks:
            if task in found and isinstance(found[task], str):
                unusable.setdefault(found[task], []).append(task)
        if missing:
            reasons[model["folder"]] = f"not run on every task (no {', '.join(missing)})"
        elif unusable:
            reasons[model["folder"]] = "; ".join(
                reason if len(where) == len(tasks) else f"{', '.join(where)}: {reason}" for reason, where in unusable.items()
            )
        else:
            keys[model["folder"]] = tuple(found[task][0] for task in tasks)
    # The largest set of entries whose predictions pair on every task; ties go to the best entry's set.
    order = {model["folder"]: k for k, model in enumerate(models)}
    counts = Counter(keys.values())
    group_key = max(counts, key=lambda key: (counts[key], -min(order[f] for f, k in keys.items() if k == key))) if counts else None
    group = [model for model in models if model["folder"] in keys and keys[model["folder"]] == group_key]
    for folder, key in keys.items():
        if key != group_key:
            task, own, theirs = next((t, a, b) for t, a, b in zip(tasks, key, group_key) if a != b)
            reasons[folder] = _unpaired_reason(own, theirs, task)
    intervals = {}
    if len(group) >= 2:
        correct = {m["folder"]: {t: evidence[m["folder"]][t][1] for t in tasks} for m in group}
        variance = {m["folder"]: {t: (e[2] ** 2 / e[3] if e[2] else 0.0) for t, e in evidence[m["folder"]].items()} for m in group}
        names, estimates, replicates = bootstrap_scores(correct, n_boot=n_boot, seed=seed, run_variance=variance)
        intervals = dict(zip(names, rank_intervals(estimates, replicates, level=INTERVAL_LEVEL)))
    elif len(group) == 1 and len(models) == 1:
        intervals = {group[0]["folder"]: RankInterval(1, 1)}
    else:
        for model in group:
            reasons[model["folder"]] = "no other entry's predictions pair with its own"
    for model in models:
        interval = intervals.get(model["folder"])
        model["rank_interval"] = [interval.low, interval.high] if interval else None
        model["rank_text"] = str(interval) if interval else "\u2014"
        model["rank_note"] = reasons.get(model["folder"])
    return {
        "method": RANK_METHOD.format(level=INTERVAL_LEVEL, n_boot=n_boot, seed=seed),
        "level": INTERVAL_LEVEL,
        "n_boot": n_boot,
        "seed": seed,
        "ranked": len(intervals),
        "unranked": [{"model": m["model"], "reason": m["rank_note"]} for m in models if m["rank_interval"] is None],
    }


def _main_ci95(found: dict, tasks: dict) -> list[float] | None:
    """The interval of the mean over the model's tasks, from its stored predictions (None when one lacks them)."""
    usable = [found[task] for task in tasks if not isinstance(found.get(task), str)]
    if not usable or len(usable) != len(tasks):
        if len(tasks) == 1:  # one task: its stored interval is the main score's
            return next(iter(tasks.values()))["main_ci95"]
        return None
    low, high = main_score_interval([e[1] for e in usable], [(e[2], e[3]) for e in usable], level=INTERVAL_LEVEL)
    return [_round(low), _round(high)]


def summarize(leaderboard_dir: str | Path, *, n_boot: int = RANK_BOOT) -> dict:
    """The leaderboard as one JSON-able mapping, models sorted by main score (best first), those run on every task first.

    Parameters
    ----------
    leaderboard_dir : str or path-like
        The leaderboard root.
    n_boot : int, default RANK_BOOT
        Bootstrap replicates of the rank intervals (seed ``RANK_SEED``).

    Returns
    -------
    dict
        ``protocol_version``, ``main_shots``, ``main_score_definition``, ``tasks`` (card names,
        sorted), ``ranking`` (see :func:`rank_models`) and ``models``: per model ``model``,
        ``revision``, ``folder``, ``n_parameters``, ``layers`` (``[-1]`` for a model without
        hidden states), ``hidden_states``, ``protocol_version``, ``main`` (mean over its tasks of
        the main score), ``main_ci95`` (its 95% interval, or None), ``rank_interval``
        (``[low, high]`` or None), ``rank_text`` (``"2–3"``), ``rank_note`` (why there is no rank
        interval, or None), ``delta`` (mean coarse-tuned minus pretrained probe accuracy; None
        when no task has a coarse_tuned stage) and ``tasks`` (card name -> ``main``,
        ``main_ci95``, ``main_stage``, ``runs_std``, ``selected``, ``best_layer``, ``delta``,
        ``curves`` (per stage ``v_measure``, ``probe_accuracy`` and, where stored,
        ``probe_accuracy_ci95`` per layer) and ``representation`` (per stage, per layer
        ``effective_rank``, ``dataset_entropy``, ``cka_to_pretrained``,
        ``cka_to_pretrained_permuted``, and ``cka_between_layers``)).
    """
    models, evidence = [], {}
    for entry in entries(leaderboard_dir):
        tasks, found, layers, versions, hidden_states = {}, {}, [], set(), True
        for result in load_results(entry.path):
            scores = result.parsed
            tasks[scores.card.name] = _task_summary(scores)
            found[scores.card.name] = main_evidence(scores)
            layers = scores.model.layers
            hidden_states = scores.model.hidden_states
            versions.add(scores.protocol_version)
        deltas = [t["delta"] for t in tasks.values() if t["delta"] is not None]
        evidence[entry.path.name] = found
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
                "main_ci95": _main_ci95(found, tasks),
                "delta": _round(mean(deltas)) if deltas else None,
                "tasks": tasks,
            }
        )
    all_tasks = sorted({name for m in models for name in m["tasks"]})
    # Entries run on every task first: a mean over fewer tasks is another number, not a rank above them.
    models.sort(key=lambda m: (len(m["tasks"]) < len(all_tasks), -m["main"], m["model"], m["revision"]))
    ranking = rank_models(models, evidence, all_tasks, n_boot=n_boot)
    protocol = Protocol()
    return {
        "protocol_version": PROTOCOL_VERSION,
        "main_shots": protocol.main_shots,
        "main_score_definition": protocol.main_score_definition(),
        "tasks": all_tasks,
        "ranking": ranking,
        "models": models,
    }
