"""``leaderboard compare``: two accepted models, paired on their stored predictions.

Two results pair when their ``predictions`` blocks have the same ``split_sha256`` (the same
evaluation items and gold labels), probe ``seeds`` (the same support sets), ``level`` and
``shots``. A model's main-score matrix for a task is the stored correctness of its main stage
(coarse_tuned, or pretrained for a model without hidden states) at the selected layer, averaged
over its coarse-training runs, with their variance ``runs_std**2 / n_runs``. The primary test
is the mean over tasks of the paired differences (:func:`mteb_finegrain.uncertainty.paired.compare`);
each task's difference is a secondary test, Holm-adjusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.leaderboard.store import Entry, find_entry
from mteb_finegrain.protocol import PROTOCOL_VERSION
from mteb_finegrain.results import TASK_PREFIX, load_results
from mteb_finegrain.uncertainty.evidence import Evidence, RunsInterval, read_predictions
from mteb_finegrain.uncertainty.paired import Comparison, Method, compare

# What two results must share to pair: (Evidence attribute, what it means).
PAIRING = (("split_sha256", "evaluation split"), ("seeds", "probe seeds"), ("level", "level"), ("shots", "shot count"))


@dataclass(frozen=True)
class MainScore:
    """One model's main score on one task, with the stored evidence behind it.

    Attributes
    ----------
    task : str
        The card's name.
    stage : str
        The main stage (``coarse_tuned``, or ``pretrained`` without hidden states).
    layer : int
        The selected layer of that stage.
    interval : RunsInterval
        The main score, its interval, runs spread and correctness matrix (averaged over runs).
    evidence : Evidence
        The decoded ``predictions`` block.
    """

    task: str
    stage: str
    layer: int
    interval: RunsInterval
    evidence: Evidence


@dataclass(frozen=True)
class ModelComparison:
    """``compare_models``' answer: the two models, each one's main scores, and the comparison.

    Attributes
    ----------
    model_a, model_b : str
        Public names.
    scores_a, scores_b : dict of str to MainScore
        Per compared task, in the comparison's task order.
    comparison : Comparison
        Model a minus model b.
    """

    model_a: str
    model_b: str
    scores_a: dict[str, MainScore]
    scores_b: dict[str, MainScore]
    comparison: Comparison


def main_scores(entry: Entry) -> dict[str, MainScore]:
    """Per task (card name) the main score of an accepted entry, from its stored predictions.

    Raises
    ------
    FineGrainError
        When a result stores no predictions (a result older than protocol 4.0) or they do not
        give the main score.
    """
    out = {}
    for result in load_results(entry.path):
        scores = result.parsed
        task = scores.card.name
        if not scores.predictions:
            raise FineGrainError(
                f"{entry.model}: its {task} result ({result.path.name}) stores no predictions (protocol {scores.protocol_version}); "
                f"a paired comparison needs protocol {PROTOCOL_VERSION} results"
            )
        evidence = read_predictions(scores.predictions, f"{entry.model}: {result.path.name} predictions")
        stage = "coarse_tuned" if "coarse_tuned" in scores.selected_layer else "pretrained"
        layer = scores.selected_layer[stage]
        out[task] = MainScore(task, stage, layer, evidence.interval(stage, layer), evidence)
    return out


def _task_name(name: str) -> str:
    return name[len(TASK_PREFIX):] if name.startswith(TASK_PREFIX) and name != TASK_PREFIX else name


def _choose_tasks(model_a: str, model_b: str, tasks_a: Sequence[str], tasks_b: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    if wanted:
        chosen = list(dict.fromkeys(_task_name(t) for t in wanted))
        for model, own in ((model_a, tasks_a), (model_b, tasks_b)):
            missing = [t for t in chosen if t not in own]
            if missing:
                raise FineGrainError(f"{model} has no result for task(s) {', '.join(missing)}; its tasks: {', '.join(sorted(own))}")
        return chosen
    shared = sorted(set(tasks_a) & set(tasks_b))
    if not shared:
        raise FineGrainError(f"{model_a} ({', '.join(sorted(tasks_a))}) and {model_b} ({', '.join(sorted(tasks_b))}) share no task")
    return shared


def _shown(value):
    return list(value) if isinstance(value, tuple) else value


def pairing_problems(task: str, a: Evidence, b: Evidence, model_a: str = "a", model_b: str = "b") -> list[str]:
    """How two results' predictions of one task fail to pair (empty when they pair).

    Parameters
    ----------
    task : str
        Named in each problem.
    a, b : Evidence
        The two results' decoded ``predictions``.
    model_a, model_b : str
        The models' names, for the message.

    Returns
    -------
    list of str
        One phrase per differing field of :data:`PAIRING`, and one when the same split hash
        comes with different gold labels.
    """
    problems = [
        f"{task}: not the same {meaning} ({model_a}: {_shown(getattr(a, field))!r}, {model_b}: {_shown(getattr(b, field))!r})"
        for field, meaning in PAIRING
        if getattr(a, field) != getattr(b, field)
    ]
    if not problems and (a.labels != b.labels or not np.array_equal(a.gold, b.gold)):
        problems.append(f"{task}: the same evaluation split hash with different gold labels ({model_a} vs {model_b})")
    return problems


def compare_models(
    leaderboard_dir: str | Path, model_a: str, model_b: str, *, tasks: Sequence[str] | None = None, method: Method = "anova", seed: int = 0
) -> ModelComparison:
    """Compare two accepted models on the same evaluation items and probe seeds.

    Parameters
    ----------
    leaderboard_dir : str or path-like
        The leaderboard root.
    model_a, model_b : str
        Public model names (``org/model``) or entry folder names.
    tasks : sequence of str, optional
        Card names (``TREC`` or ``FineGrainHiddenTREC``); default: every task both models ran.
    method : {"anova", "bootstrap"}, default "anova"
        See :func:`mteb_finegrain.uncertainty.paired.compare`.
    seed : int, default 0
        The bootstrap's seed.

    Returns
    -------
    ModelComparison

    Raises
    ------
    FineGrainError
        When a model is not in the leaderboard (the message lists those that are), a named task
        is missing, the models share no task, a result stores no predictions, or two results do
        not pair (other evaluation items, probe seeds, level or shot count).
    """
    entry_a, entry_b = find_entry(leaderboard_dir, model_a), find_entry(leaderboard_dir, model_b)
    all_a, all_b = main_scores(entry_a), main_scores(entry_b)
    chosen = _choose_tasks(entry_a.model, entry_b.model, list(all_a), list(all_b), tasks)
    problems = [p for task in chosen for p in pairing_problems(task, all_a[task].evidence, all_b[task].evidence, entry_a.model, entry_b.model)]
    if problems:
        raise FineGrainError(
            f"{entry_a.model} and {entry_b.model} cannot be compared pairwise: a paired comparison needs predictions of the same "
            "evaluation items, probe seeds, level and shot count\n  " + "\n  ".join(problems)
        )
    scores_a, scores_b = {t: all_a[t] for t in chosen}, {t: all_b[t] for t in chosen}
    comparison = compare(
        {t: s.interval.matrix for t, s in scores_a.items()},
        {t: s.interval.matrix for t, s in scores_b.items()},
        runs_a={t: (s.interval.runs_std, s.interval.n_runs) for t, s in scores_a.items()},
        runs_b={t: (s.interval.runs_std, s.interval.n_runs) for t, s in scores_b.items()},
        method=method,
        seed=seed,
    )
    return ModelComparison(entry_a.model, entry_b.model, scores_a, scores_b, comparison)


def _p(value: float) -> str:
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.1g}"


def format_report(result: ModelComparison) -> str:
    """The per-task table and, as the last line, ``Comparison.summary_line()``.

    Parameters
    ----------
    result : ModelComparison

    Returns
    -------
    str
        Header lines, one row per task (each model's main score, stage and layer, the paired
        difference with its 95% interval, p and Holm-adjusted p) and the summary line.
    """
    comparison = result.comparison
    method = "variance components" if comparison.method == "anova" else f"paired bootstrap, {comparison.n_boot:,} replicates"
    header = ["task", "a", "a at", "b", "b at", "a - b", "95% CI", "p", "p (Holm)"]
    rows = [header]
    for task in comparison.tasks:
        a, b = result.scores_a[task.task], result.scores_b[task.task]
        rows.append([
            task.task, f"{a.interval.value:.4f}", f"{a.stage} layer {a.layer}", f"{b.interval.value:.4f}", f"{b.stage} layer {b.layer}",
            f"{task.difference:+.4f}", f"[{task.ci95[0]:+.4f},{task.ci95[1]:+.4f}]", _p(task.p_value), _p(task.p_holm),
        ])
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    lines = [
        f"a = {result.model_a}, b = {result.model_b}: paired on the same evaluation items and probe seeds, {len(comparison.tasks)} task(s), {method}",
        "primary test: the mean over tasks of the differences (last line); per task: secondary tests, p Holm-adjusted over the tasks",
        "",
    ]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines += ["", comparison.summary_line()]
    return "\n".join(lines)
