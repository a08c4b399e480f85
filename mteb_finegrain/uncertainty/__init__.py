"""Honest uncertainty for the benchmark's scores: intervals, paired comparisons and rank intervals.

* ``predictions``: per-seed predicted labels stored compactly, with the evaluation split's hash,
  and the correctness matrices computed from them.
* ``matrix``: the checked ``(seeds, items)`` matrix the others read.
* ``bootstrap``: the pigeonhole bootstrap, items and seeds resampled independently.
* ``intervals``: a 95% interval for a probe accuracy counting items and support sets (and
  coarse-training runs), for a paired difference of two, and the spread of a clustering score.
* ``paired``: two models compared over tasks (bootstrap test, Holm-adjusted per-task tests).
* ``ranks``: simultaneous confidence intervals for the models' ranks.

NumPy and SciPy only: importing this package loads no torch.
"""

from mteb_finegrain.uncertainty.bootstrap import pigeonhole_bootstrap
from mteb_finegrain.uncertainty.intervals import (
    ClusteringSpread,
    TwoWayANOVA,
    clustering_spread,
    paired_interval,
    probe_interval,
    two_way_anova,
)
from mteb_finegrain.uncertainty.paired import Comparison, TaskDifference, compare, format_comparison, holm
from mteb_finegrain.uncertainty.predictions import (
    check_same_split,
    correctness,
    decode_predictions,
    encode_predictions,
    split_sha256,
)
from mteb_finegrain.uncertainty.ranks import RankInterval, bootstrap_scores, difference_intervals, format_rank, rank_intervals

__all__ = [
    "ClusteringSpread",
    "Comparison",
    "RankInterval",
    "TaskDifference",
    "TwoWayANOVA",
    "bootstrap_scores",
    "check_same_split",
    "clustering_spread",
    "compare",
    "correctness",
    "decode_predictions",
    "difference_intervals",
    "encode_predictions",
    "format_comparison",
    "format_rank",
    "holm",
    "paired_interval",
    "pigeonhole_bootstrap",
    "probe_interval",
    "rank_intervals",
    "split_sha256",
    "two_way_anova",
]
