"""Small synthetic protocol-4.0 leaderboard entries for the board's tests (pages, ranking, CSV).

Each entry is written straight into ``<board>/results/<model folder>/`` as ``mteb run`` writes a
result (the board reads what is there; adding goes through the validator, tested elsewhere).
The stored predictions are simulated per probe seed and item, with item difficulties shared by
every model on a card, and every interval is computed from them with the shared evidence code,
so the records, ``main_score_ci95`` and ``predictions`` agree as the contract asks.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
from scipy.special import expit

from mteb_finegrain.leaderboard.store import RESULTS, model_dir_name
from mteb_finegrain.protocol import CLUSTERING_METRICS, PROTOCOL_VERSION, STAGES, WITHIN_PARENT_METRICS, Protocol
from mteb_finegrain.schema import Settings, SubsetScores
from mteb_finegrain.uncertainty.evidence import INTERVAL_DESCRIPTION, predictions_block, runs_interval

XSS_NAME = "<img src=x onerror=alert(1)>"
LEVELS = ("coarse", "fine")
FINE_LABELS = tuple(f"f{k}" for k in range(8))
ITEMS = {"CLINC150": 240, "TREC": 160}


def _seed(*parts) -> int:
    return zlib.crc32("\0".join(map(str, parts)).encode())


def _split_hash(card: str, n: int) -> str:
    return "sha256:" + hashlib.sha256(f"{card}:{n}".encode()).hexdigest()


def _card_draws(card: str, n: int, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Gold codes and the shared logit of every (probe seed, item): the same for every model."""
    rng = np.random.default_rng(_seed("card", card))
    gold = rng.integers(0, len(FINE_LABELS), n)
    shared = rng.normal(0, 1.5, n)[None, :] + rng.normal(0, 0.15, seeds)[:, None]
    return gold, shared


def _hump(layer: int, n_layers: int) -> float:
    # Peaks two thirds of the way up, as real models do; the final embedding (-1) sits at the peak.
    if layer < 0 or n_layers < 2:
        return 0.0
    return -1.2 * ((layer - 2 * (n_layers - 1) / 3) / (n_layers - 1)) ** 2


def _predictions(rng, gold, shared, logit, runs: int, run_sd: float) -> list[np.ndarray]:
    out = []
    for _ in range(runs):
        p = expit(shared + logit + (rng.normal(0, run_sd) if runs > 1 else 0.0))
        correct = rng.random(p.shape) < p
        wrong = (gold[None, :] + rng.integers(1, len(FINE_LABELS), p.shape)) % len(FINE_LABELS)
        out.append(np.where(correct, gold[None, :], wrong))
    return out


def _signals(layers, n_layers, drift: float, tuned: bool) -> dict:
    per_layer = {str(layer): round(20.0 + 3.0 * layer - (drift * layer if tuned else 0.0), 6) for layer in layers}
    entropy = {str(layer): round(4.0 + 0.1 * layer, 6) for layer in layers}
    block = {
        "effective_rank": {"evaluation": per_layer, "validation": {k: round(v - 0.5, 6) for k, v in per_layer.items()}},
        "dataset_entropy": {"evaluation": entropy, "validation": entropy},
    }
    if len(layers) > 1:
        matrix = [[round(float(np.exp(-abs(a - b) / max(1, n_layers / 3))), 6) for b in layers] for a in layers]
        block["cka_between_layers"] = {"layers": list(layers), "matrix": matrix}
    if tuned:
        block["cka_to_pretrained"] = {str(layer): round(1.0 - drift * (layer + 1) / n_layers, 6) for layer in layers}
        block["cka_to_pretrained_permuted"] = {str(layer): round(0.002 * ((layer % 3) - 1), 6) for layer in layers}
    return block


def subset_scores(card: str, *, model: str, revision: str, skill: float = 0.0, n_layers: int = 7, hidden_states: bool = True,
                  coarse_gain: float = 0.3, run_sd: float = 0.05, drift: float = 0.3, split_sha256: str | None = None) -> dict:
    """One subset's scores as protocol 4.0 writes them, with stored predictions and the intervals they imply.

    ``skill`` shifts the model's logit of a correct answer (every model shares the items'
    difficulties); ``hidden_states=False`` gives a final-embedding-only model (layer -1,
    pretrained only, like the TF-IDF + SVD control).
    """
    protocol = Protocol()
    seeds, shots, main_shots = protocol.probe_seed_list, protocol.shots, protocol.main_shots
    n = ITEMS.get(card, 200)
    gold, shared = _card_draws(card, n, len(seeds))
    rng = np.random.default_rng(_seed("model", model, card))
    layers = list(range(n_layers)) if hidden_states else [-1]
    stages = STAGES if hidden_states else ("pretrained",)
    runs = {stage: {} for stage in stages}
    records, validation, selected, evidence = [], {}, {}, {}
    for stage in stages:
        tuned = stage == "coarse_tuned"
        for layer in layers:
            logit = skill + _hump(layer, n_layers) + (coarse_gain if tuned else 0.0)
            runs[stage][layer] = _predictions(rng, gold, shared, logit, len(protocol.coarse_seed_list) if tuned else 1, run_sd)
            evidence[(stage, layer)] = found = runs_interval([m == gold[None, :] for m in runs[stage][layer]])
            extra = {"runs_std": 0.004} if tuned else {}
            for depth, level in enumerate(LEVELS):
                easier = 0.05 * (len(LEVELS) - 1 - depth)
                base = min(1.0, found.value + easier)
                metrics = CLUSTERING_METRICS + (WITHIN_PARENT_METRICS if depth else ())
                for i, metric in enumerate(metrics):
                    records.append({"stage": stage, "level": level, "layer": layer, "metric": metric, "shots": None,
                                    "value": round(base * (0.85 - 0.03 * i), 6), "std": 0.01, **extra})
                for n_shots in shots:
                    if level == LEVELS[-1] and n_shots == main_shots:
                        value, ci95 = found.value, list(found.ci95)
                        probe_extra = {"runs_std": found.runs_std} if found.runs_std is not None else {}
                    else:
                        value = round(max(0.0, base - 0.02 * (main_shots - n_shots) / main_shots), 6)
                        ci95, probe_extra = [round(max(0.0, value - 0.03), 6), round(min(1.0, value + 0.03), 6)], extra
                    records.append({"stage": stage, "level": level, "layer": layer, "metric": "probe_accuracy", "shots": n_shots,
                                    "value": value, "std": 0.02, "ci95": ci95, **probe_extra})
                    records.append({"stage": stage, "level": level, "layer": layer, "metric": "probe_f1_macro", "shots": n_shots,
                                    "value": round(value * 0.95, 6), "std": 0.02, **extra})
        validation[stage] = {str(layer): round(evidence[(stage, layer)].value - 0.01, 6) for layer in layers}
        selected[stage] = max(layers, key=lambda layer: (validation[stage][str(layer)], -layer))
    main_stage = stages[-1]
    main = evidence[(main_stage, selected[main_stage])]
    representation = {stage: _signals(layers, n_layers, drift, stage == "coarse_tuned") for stage in stages}
    coarse_runs = None
    if hidden_states:
        per_run = [float((m == gold[None, :]).mean()) for m in runs["coarse_tuned"][selected["coarse_tuned"]]]
        coarse_runs = {"seeds": protocol.coarse_seed_list, "main_score": per_run, "selected_layer": [selected["coarse_tuned"]] * len(per_run),
                       "runs_std": main.runs_std}
    classes = {"coarse": 3, "fine": len(FINE_LABELS)}
    written = SubsetScores(
        selected_layer_probe_accuracy=main.value,
        main_score_definition=protocol.main_score_definition(),
        protocol_version=PROTOCOL_VERSION,
        card={"name": card, "version": "1", "data": "sha256:" + hashlib.sha256(card.encode()).hexdigest(), "data_source": "packaged copy",
              "levels": list(LEVELS), "classes_per_level": classes, "validation": "validation", "sample": {},
              "sizes": {"coarse_train": 100, "fewshot_pool": 100, "validation": 40, "evaluation": n},
              "fine_classes": classes["fine"], "coarse_classes": classes["coarse"]},
        coarse_training_level="coarse" if hidden_states else None,
        model={"name": model, "revision": revision, "layers": layers, "hidden_states": hidden_states,
               "pooling": protocol.pooling if hidden_states else None, "prompt": None, "note": None},
        settings=Settings.from_protocol(protocol, protocol.batch_size),
        selected_layer=selected,
        validation_probe_accuracy=validation,
        main_score_ci95=list(main.ci95),
        interval=INTERVAL_DESCRIPTION,
        coarse_training_runs=coarse_runs,
        selection={"validation_seeds": protocol.validation_probe_seed_list, "scoring_seeds": seeds,
                   "selected_layer_with_scoring_seeds": dict(selected), "main_score_with_scoring_seeds": main.value},
        representation=representation,
        records=records,
        predictions=predictions_block(level=LEVELS[-1], shots=main_shots, seeds=seeds, coarse_seeds=protocol.coarse_seed_list,
                                      split_sha256=split_sha256 or _split_hash(card, n), labels=FINE_LABELS, gold=gold, runs=runs),
    ).to_scores_dict()
    return written | {"main_score": main.value, "hf_subset": "default", "languages": ["eng-Latn"], "mteb_version": "2.26.24"}


def add_entry(board: Path, model: str, *, revision: str = "rev-a", cards=("CLINC150", "TREC"), n_parameters: int | None = 22_700_000,
              change=None, **options) -> Path:
    """Write one model's entry into ``board/results`` and return its folder.

    ``options`` go to :func:`subset_scores`; ``change(scores)`` may edit each subset before it is written.
    """
    folder = Path(board) / RESULTS / model_dir_name(model)
    folder.mkdir(parents=True, exist_ok=True)
    for card in cards:
        scores = subset_scores(card, model=model, revision=revision, **options)
        if change is not None:
            change(scores)
        result = {"dataset_revision": "cards", "task_name": f"FineGrainHidden{card}", "mteb_version": "2.26.24",
                  "scores": {"test": [scores]}, "evaluation_time": 1.0, "kg_co2_emissions": None, "date": 1795680394.6}
        (folder / f"FineGrainHidden{card}.json").write_text(json.dumps(result), encoding="utf-8")
    meta = {"name": model, "revision": revision, "n_parameters": n_parameters, "framework": ["Sentence Transformers"]}
    (folder / "model_meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder
