"""Synthetic FineGrainHidden result folders, in the format ``mteb run`` writes, for leaderboard tests.

The scores are made up but consistent (selected layer = best validation layer, main score = the
coarse-tuned main-shot probe accuracy there), so a fixture passes every leaderboard check until a
test tampers with it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from pathlib import Path

from mteb_finegrain.protocol import PROTOCOL_VERSION, STAGES, Protocol
from mteb_finegrain.schema import Settings, SubsetScores

CLUSTERING = ("v_measure", "nmi", "ari", "cluster_accuracy", "within_coarse_v_measure")
PROBE = ("probe_accuracy", "probe_f1_macro")
XSS_NAME = "<img src=x onerror=alert(1)>"


def fake_hash(card: str) -> str:
    """A well-formed (but not real) ``sha256:`` data hash for a card."""
    return "sha256:" + hashlib.sha256(card.encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def card_hash(card: str) -> str:
    """The real data hash of a built-in card whose data is packaged (the validator compares it),
    else a fake one."""
    from mteb_finegrain.cards import discover_cards
    from mteb_finegrain.data import has_packaged_data, load_card_data, local_data_folder

    builtin = {c.name: c for c in discover_cards()[0]}
    if card in builtin and has_packaged_data(builtin[card]):
        folder = local_data_folder(builtin[card])
        assert folder is not None and folder[1] == "packaged copy", "unset MTEB_FINEGRAIN_DATA_DIR for leaderboard fixtures"
        return load_card_data(builtin[card]).content_hash
    return fake_hash(card)


def _curve(quality: float, layer: int, n_layers: int, offset: float) -> float:
    # A hump peaking two thirds of the way up the layers: the shape real models show.
    peak = 2 * (n_layers - 1) / 3
    value = quality + offset - 0.04 * ((layer - peak) / max(1, n_layers - 1)) ** 2 * 9 + 0.005 * math.sin(3 * layer)
    return round(min(1.0, max(0.0, value)), 6)


def subset_scores(card: str, *, model: str, revision: str, n_layers: int = 7, quality: float = 0.6,
                  subset: str = "default", data_hash: str | None = None, card_version: str = "1",
                  hidden_states: bool = True, levels: tuple[str, ...] = ("coarse", "fine")) -> dict:
    """One subset's scores as the FineGrainHidden task writes them (both stages, every layer).

    ``hidden_states=False``: a model scored on its final embedding only (layer -1), pretrained
    stage only, as the task writes it for e.g. the TF-IDF + SVD control.
    """
    protocol = Protocol()
    layers = list(range(n_layers)) if hidden_states else [-1]
    stages = STAGES if hidden_states else ("pretrained",)
    records, validation, selected = [], {}, {}
    for stage in stages:
        gain = 0.03 if stage == "coarse_tuned" else 0.0
        for layer in layers:
            for depth, level in enumerate(levels):
                base = _curve(quality, layer, n_layers, gain) + 0.02 * (len(levels) - 1 - depth)  # coarser is easier
                for i, metric in enumerate(CLUSTERING):
                    if depth == 0 and metric == "within_coarse_v_measure":
                        continue  # the coarsest level has no parent
                    records.append({"stage": stage, "level": level, "layer": layer, "metric": metric, "shots": None,
                                    "value": round(base * (0.9 - 0.05 * i), 6), "std": 0.01})
                for shots in protocol.shots:
                    for i, metric in enumerate(PROBE):
                        value = round(base * (0.7 + 0.05 * math.log2(shots)) - 0.02 * i, 6)
                        records.append({"stage": stage, "level": level, "layer": layer, "metric": metric, "shots": shots, "value": value, "std": 0.02})
        validation[stage] = {str(layer): round(_curve(quality, layer, n_layers, gain) - 0.01, 6) for layer in layers}
        selected[stage] = max(layers, key=lambda layer: (validation[stage][str(layer)], -layer))
    main = next(r["value"] for r in records if r["stage"] == stages[-1] and r["layer"] == selected[stages[-1]]
                and r["level"] == levels[-1] and r["metric"] == "probe_accuracy" and r["shots"] == protocol.main_shots)
    classes = {level: 3 + 7 * depth for depth, level in enumerate(levels)}
    written = SubsetScores(
        selected_layer_probe_accuracy=main,
        main_score_definition=protocol.main_score_definition(),
        protocol_version=PROTOCOL_VERSION,
        card={"name": card, "version": card_version, "data": data_hash or card_hash(card), "data_source": "packaged copy",
              "levels": list(levels), "classes_per_level": classes, "validation": "validation", "sample": {},
              "sizes": {"coarse_train": 100, "fewshot_pool": 100, "validation": 20, "evaluation": 40},
              "fine_classes": classes[levels[-1]], "coarse_classes": classes[levels[0]]},
        coarse_training_level=levels[0] if hidden_states else None,
        truncation={"evaluation": {"max_length": 256 if hidden_states else None, "texts": 40, "truncated": 0 if hidden_states else None},
                    "coarse_training_max_length": protocol.coarse_training.max_length},
        model={"name": model, "revision": revision, "layers": layers, "hidden_states": hidden_states,
               "pooling": protocol.pooling if hidden_states else None, "prompt": None,
               "note": None if hidden_states else "model exposes no hidden states: scored on its final embedding only (layer -1)"},
        settings=Settings.from_protocol(protocol, protocol.batch_size),
        runtime={"device": "cpu" if hidden_states else None, "encoding_dtype": "float32" if hidden_states else None,
                 "coarse_training_precision": "float32" if hidden_states else None, "torch_threads": 2,
                 "embeddings": {stage: {"texts_encoded": 206, "cached": True, "encode_seconds": 1.5, "scoring_seconds": 2.25,
                                        "clustering_cached": 0} for stage in stages},
                 "cpu": "Fuzz CPU", "blas": [{"internal_api": "openblas", "version": "0.3.27", "architecture": "Haswell", "threads": 2}],
                 "convergence_warnings": {stage: 0 for stage in stages}},
        selected_layer=selected,
        validation_probe_accuracy=validation,
        records=records,
    ).to_scores_dict()
    # What mteb adds around the task's own scores.
    return written | {"main_score": main, "hf_subset": subset, "languages": ["eng-Latn"], "mteb_version": "2.26.24"}


# What each protocol version added to a subset's scores, read off the results that version wrote:
# (dotted path, key). Older results lack these, and must still read.
ADDED_IN = {
    "2.0": [("card", "data_source"), ("card", "levels"), ("card", "classes_per_level"), ("card", "sample"), ("", "coarse_training_level"),
            ("", "truncation"), ("", "runtime"), ("model", "pooling"), ("model", "prompt"), ("settings", "train_level"), ("records[]", "level")],
    "3.0": [("settings", "probe_warm_start")],
    "3.1": [("runtime", "cpu"), ("runtime", "blas"), ("runtime", "convergence_warnings"), ("settings.coarse_training", "max_grad_norm"),
            ("settings.setfit", "num_epochs")] + [("settings", key) for key in (
                "probe_max_iter", "probe_tol", "probe_c", "probe_standardize", "kmeans_l2_normalize", "kmeans_n_init", "kmeans_max_iter",
                "kmeans_tol", "validation_fraction")],
}


def as_written_by(scores: dict, version: str) -> dict:
    """``scores`` in the shape protocol ``version`` wrote: without the fields later versions added.

    Records of protocol 1 have no ``level`` (one fine level), so only those at the finest level
    are kept.
    """
    old = copy.deepcopy(scores)
    old["protocol_version"] = version
    finest = scores["card"]["levels"][-1]
    for added, fields in ADDED_IN.items():
        if tuple(map(int, added.split("."))) <= tuple(map(int, version.split("."))):
            continue
        for parent, key in fields:
            if parent == "records[]":
                old["records"] = [r for r in old["records"] if r.get("level") == finest]
                for record in old["records"]:
                    record.pop(key)
            else:
                block = old
                for step in parent.split(".") if parent else ():
                    block = block.get(step, {})  # a parent removed with an older version is gone
                block.pop(key, None)
    return old


def write_submission(root: Path, *, model: str = "org/model-a", revision: str = "rev-a", cards=("CLINC150", "TREC"),
                     n_layers: int = 7, quality: float = 0.6, n_parameters: int | None = 22_700_000,
                     aggregate: bool = False, hashes: dict | None = None, hidden_states: bool = True) -> Path:
    """Write one model's results like ``mteb`` does and return the results root.

    Files go to ``root/results/<model_as_path>/<revision>/``: one ``FineGrainHidden<card>.json``
    per card (or one ``FineGrainHidden.json`` with a subset per card when ``aggregate``) and a
    ``model_meta.json``.
    """
    folder = root / "results" / model.replace("/", "__") / revision
    folder.mkdir(parents=True, exist_ok=True)
    hashes = hashes or {}

    def scores(card: str, subset: str) -> dict:
        return subset_scores(card, model=model, revision=revision, n_layers=n_layers, quality=quality,
                             subset=subset, data_hash=hashes.get(card), hidden_states=hidden_states)

    if aggregate:
        tasks = {"FineGrainHidden": [scores(card, card) for card in cards]}
    else:
        tasks = {f"FineGrainHidden{card}": [scores(card, "default")] for card in cards}
    for task, subsets in tasks.items():
        result = {"dataset_revision": "cards", "task_name": task, "mteb_version": "2.26.24", "scores": {"test": subsets},
                  "evaluation_time": 1.0, "kg_co2_emissions": None, "date": 1795680394.6}
        (folder / f"{task}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    meta = {"name": model, "revision": revision, "n_parameters": n_parameters, "framework": ["Sentence Transformers"]}
    (folder / "model_meta.json").write_text(json.dumps(meta, indent=4), encoding="utf-8")
    return root


def edit_results(root: Path, change) -> None:
    """Apply ``change(subset_scores)`` to every subset of every result file under ``root``."""
    for path in sorted(root.rglob("FineGrainHidden*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for subset in data["scores"]["test"]:
            change(subset)
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def tree_digest(path: Path) -> str:
    """A hash of every file name and byte under ``path`` (``absent`` when it does not exist)."""
    if not path.exists():
        return "absent"
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        digest.update(str(item.relative_to(path)).encode() + b"\0")
        if item.is_file():
            digest.update(item.read_bytes() + b"\0")
    return digest.hexdigest()
