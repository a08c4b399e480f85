"""Synthetic FineGrainHidden result folders, in the format ``mteb run`` writes, for leaderboard tests.

The scores are made up but consistent (selected layer = best validation layer, main score = the
coarse-tuned main-shot probe accuracy there, every probe accuracy and interval what the stored
predictions imply), so a fixture passes every leaderboard check until a test tampers with it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from mteb_finegrain.protocol import CLUSTERING_METRICS, PROTOCOL_VERSION, STAGES, WITHIN_PARENT_METRICS, Protocol
from mteb_finegrain.schema import Settings, SubsetScores
from mteb_finegrain.uncertainty.evidence import INTERVAL_DESCRIPTION, predictions_block, runs_interval

CLUSTERING = CLUSTERING_METRICS + WITHIN_PARENT_METRICS
SEEDS, ITEMS = 5, 30  # probe seeds (the protocol's) and evaluation items of every fixture
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
    layer = max(0, layer)  # the final embedding of a model without hidden states (n_layers 1)
    peak = 2 * (n_layers - 1) / 3
    value = quality + offset - 0.04 * ((layer - peak) / max(1, n_layers - 1)) ** 2 * 9 + 0.005 * math.sin(3 * layer)
    return round(min(1.0, max(0.0, value)), 6)


def _stage_gain(stage: str) -> float:
    return 0.03 if stage == "coarse_tuned" else 0.0


def probe_target(quality: float, stage: str, depth: int, n_levels: int, layer: int, n_layers: int, shots: int) -> float:
    """The expected probe accuracy the fixture draws a record's correctness from (a cell is right
    with exactly this probability, whatever the item and support set, on average)."""
    base = _curve(quality, layer, n_layers, _stage_gain(stage)) + 0.02 * (n_levels - 1 - depth)  # coarser is easier
    return min(0.98, max(0.02, base * (0.7 + 0.05 * math.log2(shots))))


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little"))


def split_hash(card: str) -> str:
    """The fixture's ``predictions.split_sha256`` of a card: one per card, so models on it pair."""
    return "sha256:" + hashlib.sha256(f"{card} evaluation split".encode()).hexdigest()


def _correctness(card: str, model: str, key: tuple, p: float, run: int = 0) -> np.ndarray:
    """An ``S x n`` correctness matrix, each cell right with probability ``p``, sharing item
    difficulty, support-set luck and part of the per-cell noise with every model on the card, and
    most of the rest with the model's other coarse-training runs."""
    shared = _rng("card", card)
    z_item, z_seed = shared.normal(size=ITEMS), shared.normal(size=SEEDS)
    z_cell = _rng("cell", card, *key).normal(size=(SEEDS, ITEMS))
    z_model = _rng("model", card, model, *key).normal(size=(SEEDS, ITEMS))
    z_run = _rng("run", card, model, run, *key).normal(size=(SEEDS, ITEMS))
    z = (0.6 * z_item[None, :] + 0.3 * z_seed[:, None] + 0.5 * z_cell + 0.5 * z_model + 0.05 * z_run) / math.sqrt(0.36 + 0.09 + 0.25 + 0.25 + 0.0025)
    return ndtr(z) < p  # a standard normal through its own cdf is uniform: P(right) = p


def _gold(card: str, n_labels: int) -> np.ndarray:
    return _rng("gold", card).integers(0, n_labels, ITEMS)


def _predicted(correct: np.ndarray, gold: np.ndarray, n_labels: int) -> np.ndarray:
    # A wrong cell predicts some other label, the same one a model picks for that seed and item.
    cells = np.arange(correct.size).reshape(correct.shape)
    wrong = (gold[None, :] + 1 + cells % (n_labels - 1)) % n_labels
    return np.where(correct, gold[None, :], wrong)


def subset_scores(card: str, *, model: str, revision: str, n_layers: int = 7, quality: float = 0.6,
                  subset: str = "default", data_hash: str | None = None, card_version: str = "1",
                  hidden_states: bool = True, levels: tuple[str, ...] = ("coarse", "fine")) -> dict:
    """One subset's scores as the FineGrainHidden task writes them (both stages, every layer).

    Every probe accuracy is the mean of a synthetic correctness matrix (``SEEDS`` probe seeds x
    ``ITEMS`` items; for coarse_tuned one per coarse-training run) drawn with
    :func:`probe_target`'s accuracy, with its interval from ``evidence.runs_interval``; the
    finest level's main-shot matrices are stored as the ``predictions`` block.

    ``hidden_states=False``: a model scored on its final embedding only (layer -1), pretrained
    stage only, as the task writes it for e.g. the TF-IDF + SVD control.
    """
    return copy.deepcopy(_subset_scores(card, model, revision, n_layers, quality, subset, data_hash, card_version, hidden_states, tuple(levels)))


@functools.lru_cache(maxsize=64)
def _subset_scores(card, model, revision, n_layers, quality, subset, data_hash, card_version, hidden_states, levels) -> dict:
    protocol = Protocol()
    layers = list(range(n_layers)) if hidden_states else [-1]
    stages = STAGES if hidden_states else ("pretrained",)
    n_layers = n_layers if hidden_states else 1  # the final embedding (-1) sits at the curve's peak, as layer 0 of 1
    classes = {level: 3 + 7 * depth for depth, level in enumerate(levels)}
    finest, n_labels = levels[-1], classes[levels[-1]]
    gold = _gold(card, n_labels)
    run_shift = _rng("runs", card, model).normal(0.0, 0.005, protocol.coarse_seeds)
    records, validation, selected, predictions, intervals = [], {}, {}, {}, {}
    for stage in stages:
        n_runs = protocol.coarse_seeds if stage == "coarse_tuned" else 1
        predictions[stage] = {}
        for layer in layers:
            for depth, level in enumerate(levels):
                base = _curve(quality, layer, n_layers, _stage_gain(stage)) + 0.02 * (len(levels) - 1 - depth)
                for i, metric in enumerate(CLUSTERING):
                    if depth == 0 and metric in WITHIN_PARENT_METRICS:
                        continue  # the coarsest level has no parent
                    value = round(base * (0.9 - 0.05 * i), 6) if metric not in ("ari", "ami", "within_coarse_ami") else round(base * 0.8 - 0.3, 6)
                    record = {"stage": stage, "level": level, "layer": layer, "metric": metric, "shots": None, "value": value, "std": 0.01}
                    records.append(record | ({"runs_std": 0.004} if n_runs > 1 else {}))
                for shots in protocol.shots:
                    p = probe_target(quality, stage, depth, len(levels), layer, n_layers, shots)
                    correct = [_correctness(card, model, (stage, level, layer, shots), min(0.99, max(0.01, p + run_shift[run] * (n_runs > 1))), run)
                               for run in range(n_runs)]
                    interval = runs_interval(correct)
                    spread = float(np.mean([m.mean(axis=1).std() for m in correct]))
                    runs = {"runs_std": interval.runs_std} if n_runs > 1 else {}
                    records.append({"stage": stage, "level": level, "layer": layer, "metric": "probe_accuracy", "shots": shots,
                                    "value": interval.value, "std": spread, "ci95": list(interval.ci95)} | runs)
                    records.append({"stage": stage, "level": level, "layer": layer, "metric": "probe_f1_macro", "shots": shots,
                                    "value": round(max(0.0, interval.value - 0.02), 6), "std": spread} | runs)
                    if level == finest and shots == protocol.main_shots:
                        predictions[stage][layer] = [_predicted(m, gold, n_labels) for m in correct]
                        intervals[(stage, layer)] = (interval, [float(m.mean()) for m in correct])
        validation[stage] = {str(layer): round(max(0.0, _curve(quality, layer, n_layers, _stage_gain(stage)) - 0.01), 6) for layer in layers}
        selected[stage] = max(layers, key=lambda layer: (validation[stage][str(layer)], -layer))
    main_stage = stages[-1]
    main_interval, main_runs = intervals[(main_stage, selected[main_stage])]
    main = main_interval.value
    with_scoring = {stage: max(layers, key=lambda layer: (intervals[(stage, layer)][0].value, -layer)) for stage in stages}
    written = SubsetScores(
        selected_layer_probe_accuracy=main,
        main_score_definition=protocol.main_score_definition(),
        protocol_version=PROTOCOL_VERSION,
        card={"name": card, "version": card_version, "data": data_hash or card_hash(card), "data_source": "packaged copy",
              "levels": list(levels), "classes_per_level": classes, "validation": "validation", "sample": {},
              "sizes": {"coarse_train": 100, "fewshot_pool": 100, "validation": 20, "evaluation": ITEMS},
              "fine_classes": classes[levels[-1]], "coarse_classes": classes[levels[0]]},
        coarse_training_level=levels[0] if hidden_states else None,
        truncation={"evaluation": {"max_length": 256 if hidden_states else None, "texts": ITEMS, "truncated": 0 if hidden_states else None},
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
        main_score_ci95=list(main_interval.ci95),
        interval=dict(INTERVAL_DESCRIPTION),
        coarse_training_runs={"seeds": protocol.coarse_seed_list, "main_score": main_runs, "selected_layer": [selected[main_stage]] * len(main_runs),
                              "runs_std": main_interval.runs_std} if hidden_states else None,
        selection={"validation_seeds": protocol.validation_probe_seed_list, "scoring_seeds": protocol.probe_seed_list,
                   "selected_layer_with_scoring_seeds": with_scoring,
                   "main_score_with_scoring_seeds": intervals[(main_stage, with_scoring[main_stage])][0].value},
        representation=representation(layers, stages),
        records=records,
        predictions=predictions_block(level=finest, shots=protocol.main_shots, seeds=protocol.probe_seed_list,
                                      coarse_seeds=protocol.coarse_seed_list if hidden_states else [], split_sha256=split_hash(card),
                                      labels=[f"{finest}-{k:02d}" for k in range(n_labels)], gold=gold, runs=predictions),
    ).to_scores_dict()
    # What mteb adds around the task's own scores.
    return written | {"main_score": main, "hf_subset": subset, "languages": ["eng-Latn"], "mteb_version": "2.26.24"}


def representation(layers: list[int], stages: tuple[str, ...]) -> dict:
    """A ``representation`` block: label-free signals per stage and layer, CKA drift for coarse_tuned."""
    block = {}
    for stage in stages:
        tuned = stage == "coarse_tuned"
        per_split = lambda f: {split: {str(layer): round(f(layer) - 0.1 * (split == "validation"), 6) for layer in layers}  # noqa: E731
                                for split in ("evaluation", "validation")}
        block[stage] = {
            "effective_rank": per_split(lambda layer: 20.0 + 2 * layer - 3 * tuned),
            "dataset_entropy": per_split(lambda layer: 3.0 + 0.1 * layer - 0.2 * tuned),
            "cka_between_layers": {"layers": list(layers), "matrix": [[round(math.exp(-abs(a - b) / 3), 6) for b in layers] for a in layers]},
        }
        if tuned:
            block[stage]["cka_to_pretrained"] = {str(layer): round(1.0 - 0.04 * layer, 6) for layer in layers}
            block[stage]["cka_to_pretrained_permuted"] = {str(layer): round(0.002 * (-1) ** layer, 6) for layer in layers}
    return block


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
    "4.0": [("", key) for key in ("main_score_ci95", "interval", "coarse_training_runs", "selection", "representation", "predictions")]
           + [("records[]", "ci95"), ("records[]", "runs_std"), ("settings.coarse_training", "seed")]
           + [("settings", key) for key in ("coarse_seeds", "validation_probe_seed_list", "coarse_seed_list")],
}


def as_written_by(scores: dict, version: str) -> dict:
    """``scores`` in the shape protocol ``version`` wrote: without the fields later versions added.

    Records of protocol 1 have no ``level`` (one fine level), so only those at the finest level
    are kept. Before 4.0 clustering recorded NMI (here: the AMI record renamed) and no
    within-parent AMI.
    """
    old = copy.deepcopy(scores)
    old["protocol_version"] = version
    finest = scores["card"]["levels"][-1]
    if _version(version) < (4, 0):
        old["records"] = [dict(r, metric="nmi") if r["metric"] == "ami" else r for r in old["records"] if r["metric"] != "within_coarse_ami"]
    for added, fields in ADDED_IN.items():
        if _version(added) <= _version(version):
            continue
        for parent, key in fields:
            if parent == "records[]":
                if key == "level":
                    old["records"] = [r for r in old["records"] if r.get("level") == finest]
                for record in old["records"]:
                    record.pop(key, None)
            else:
                block = old
                for step in parent.split(".") if parent else ():
                    block = block.get(step, {})  # a parent removed with an older version is gone
                block.pop(key, None)
    return old


def _version(version: str) -> tuple[int, ...]:
    return tuple(map(int, version.split(".")))


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
