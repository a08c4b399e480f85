"""The protocol on a CUDA GPU: does it run, what does it record, and how far are its numbers from the CPU's?

    python benchmarks/gpu_check.py [--model DIR] [--card trec] [--output-folder DIR] [--run-args '...']

Runs the full default protocol of one card three times, each ``mteb-finegrain run`` in a fresh
process with its own empty cache: on the GPU (the device sentence-transformers picks), on the CPU
(``CUDA_VISIBLE_DEVICES=""``), then on the GPU again with ``--shots 1,2,4,8`` over the GPU run's
cache (a scoring-only change: no text may be encoded). Prints what each run recorded (device,
encoding dtype, coarse-training precision, seconds of forward passes and of scoring per stage,
main score) and, per stage, the largest difference between the GPU's and the CPU's records.

Without ``--model`` it builds a randomly initialised BERT of all-MiniLM-L6-v2's shape (6 layers,
384 wide) with a word vocabulary taken from the card's training texts, so that it runs where no
model can be downloaded; its scores say nothing about any real model, only whether the GPU path
works and how much it moves the numbers.
"""

from __future__ import annotations

import collections
import os
import re
import sys
import tempfile
from pathlib import Path

from bench_floor import find_card, result_scores
from measurement import BIN, Figure, argument_parser, record, run_measured


def random_minilm_shaped_model(folder: Path, texts: list[str]) -> Path:
    """A random 6-layer, 384-wide BERT with a lower-cased word vocabulary of ``texts``, saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    counts = collections.Counter(w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(w for w, _ in counts.most_common(8000))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text("# random BERT of all-MiniLM-L6-v2's shape (benchmarks/gpu_check.py)\n", encoding="utf-8")
    return folder


def run(args: list[str], env: dict) -> float:
    """Wall seconds of ``mteb-finegrain run ARGS`` in a fresh process (see ``measurement.run_measured``)."""
    wall, _ = run_measured([str(BIN / "mteb-finegrain"), "run", *args], env)
    return wall


def describe(label: str, wall: float, result: dict) -> None:
    runtime = result["runtime"]
    print(f"{label}: {wall:.1f} s, device {runtime['device']}, encoding {runtime.get('encoding_dtype')}, coarse training {runtime.get('coarse_training_precision')}, main score {result['main_score']:.4f}, selected layers {result['selected_layer']}")
    for stage, numbers in runtime["embeddings"].items():
        print(f"  {stage}: {numbers['texts_encoded']} texts encoded, forward passes {numbers['encode_seconds']:.1f} s, scoring {numbers['scoring_seconds']:.1f} s")


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--model", help="model directory (default: a random BERT of MiniLM's shape, built here)")
    parser.add_argument("--card", default="trec")
    parser.add_argument("--output-folder", help="where the three runs' results are kept (default: a temporary folder)")
    parser.add_argument("--run-args", default="", help="more options for every run, e.g. '--seeds 1 --layers 0,6' for a quicker check (default: the default protocol)")
    args = parser.parse_args()

    import torch

    from mteb_finegrain.data import load_card_data

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check compares a GPU run with a CPU run")
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}", flush=True)
    card = find_card(args.card)
    task = card.task_name
    work = Path(args.output_folder or tempfile.mkdtemp(prefix="gpu-check-"))
    model = args.model or str(random_minilm_shaped_model(work / "random-minilm-shaped", load_card_data(card, seed=0).coarse_train.texts))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    gpu_env = env | {"MTEB_FINEGRAIN_CACHE_DIR": str(work / "cache-gpu")}
    cpu_env = env | {"MTEB_FINEGRAIN_CACHE_DIR": str(work / "cache-cpu"), "CUDA_VISIBLE_DEVICES": ""}

    extra = args.run_args.split()
    gpu = run([*extra, "-t", task, "-m", model, "--quiet", "--output-folder", str(work / "gpu")], gpu_env)
    gpu_result = result_scores(work / "gpu", task)
    describe("GPU", gpu, gpu_result)
    cpu = run([*extra, "-t", task, "-m", model, "--quiet", "--output-folder", str(work / "cpu")], cpu_env)
    describe("CPU", cpu, result_scores(work / "cpu", task))
    rerun = run([*extra, "-t", task, "-m", model, "--quiet", "--output-folder", str(work / "gpu"), "--shots", "1,2,4,8"], gpu_env)
    rerun_result = result_scores(work / "gpu", task)
    describe("GPU re-run, --shots 1,2,4,8, from the cache", rerun, rerun_result)

    first = result_scores(work / "cpu", task)
    on_gpu = {(r["stage"], r["level"], r["layer"], r["metric"], r["shots"]): r["value"] for r in gpu_result["records"]}
    differences = collections.defaultdict(float)
    for r in first["records"]:
        key = (r["stage"], r["level"], r["layer"], r["metric"], r["shots"])
        if key in on_gpu and r["value"] == r["value"]:
            differences[r["stage"]] = max(differences[r["stage"]], abs(on_gpu[key] - r["value"]))
    for stage, largest in differences.items():
        print(f"{stage}: largest |GPU - CPU| over the records both runs have: {largest:.4f}")
    encoded = sum(n["texts_encoded"] for n in rerun_result["runtime"]["embeddings"].values())
    print(f"gpu_s={gpu:.1f} cpu_s={cpu:.1f} rerun_s={rerun:.1f} rerun_texts_encoded={encoded}")
    if not args.no_record:
        label = Path(args.model).name if args.model else "random BERT of all-MiniLM-L6-v2's shape"
        record(__file__, f"{card.name}, {label}{', ' + args.run_args if args.run_args else ''}", [
            Figure("device", gpu_result["runtime"]["device"], about="where the GPU run's model ran"),
            Figure("gpu_s", round(gpu, 1), "s", about="full protocol on the GPU, empty cache"),
            Figure("cpu_s", round(cpu, 1), "s", about="the same on this machine's CPU"),
            Figure("rerun_s", round(rerun, 1), "s", about="GPU re-run with `--shots 1,2,4,8` from the cache"),
            Figure("rerun_texts_encoded", encoded, target="== 0", about="texts the cached re-run encoded"),
            *(Figure(f"largest_gpu_cpu_difference_{stage}", round(largest, 4), about="largest |GPU - CPU| of a record both runs have") for stage, largest in differences.items()),
        ], results_dir=args.results_dir)
    return 0 if encoded == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
