"""The leaderboard as one summary: per model, its main score, selected layers and layer curves.

Read by the generated pages (``build``) and by ``cite``; derived from the accepted results alone.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from mteb_finegrain.leaderboard.store import entries
from mteb_finegrain.protocol import PROTOCOL_VERSION, STAGES, Protocol
from mteb_finegrain.results import load_results
from mteb_finegrain.schema import SubsetScores


def _round(value: float) -> float:
    # Means of 6-decimal scores: rounding keeps the generated files short and stable.
    return round(float(value), 6)


def _task_summary(scores: SubsetScores) -> dict:
    """Main score, selected layers, the coarse-tuned gain and the plotted curves of one card.

    A model without hidden states has only the ``pretrained`` stage: its ``best_layer`` is that
    stage's (``-1``) and its ``delta`` is None (coarse fine-tuning does not apply).
    """
    layers = scores.model.layers
    main_shots = scores.settings.main_shots
    finest = scores.levels[-1]  # the main score's level; the page's curves are drawn at it
    value = {(stage, layer, metric, n): v for (stage, level, layer, metric, n), v in scores.lookup().items() if level == finest}
    stages = [stage for stage in STAGES if any(r.stage == stage for r in scores.records)]
    selected = {stage: scores.selected_layer[stage] for stage in stages}
    probe = {stage: value[(stage, selected[stage], "probe_accuracy", main_shots)] for stage in stages}
    return {
        "main": scores.main_score,
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
            scores = result.parsed
            tasks[scores.card.name] = _task_summary(scores)
            layers = scores.model.layers
            hidden_states = scores.model.hidden_states
            versions.add(scores.protocol_version)
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
