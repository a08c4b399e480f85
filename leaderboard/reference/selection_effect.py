"""What choosing the layer with disjoint probe seeds changed, from protocol 4.0 results.

    python leaderboard/reference/selection_effect.py RESULTS_DIR [RESULTS_DIR ...] [--digits N]

Protocol 4.0 chooses each stage's layer with validation probes whose seeds (47-51 by default)
do not score the evaluation split (42-46); up to 3.1 the scoring seeds' own probes chose it.
Every 4.0 result records, in its ``selection`` block, the layer the 3.1 rule would have chosen
per stage and the main score at it (the evaluation split's probe accuracy with the scoring
seeds, so the two main scores differ only where the layers do).

Per (model, task) this prints a Markdown row: the main stage, its layer chosen with the
validation seeds and with the scoring seeds, the main score each way and their difference
(scoring seeds minus validation seeds), and the other stage's two layers. A summary line follows:
how often the layer changed (main stage; every stage), and the mean and the largest difference
of the main score. A model with a single layer (nothing to choose) is shown but not counted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import STAGES
from mteb_finegrain.results import SubsetResult, task_label
from mteb_finegrain.results import load_current_results as load_4_0


@dataclass(frozen=True)
class SelectionRow:
    """One (model, task): the layer choice with disjoint validation seeds and with the scoring seeds.

    Attributes
    ----------
    model, task : str
    main_stage : str
        The stage of the main score (coarse_tuned when it was run).
    layers : dict of str to (int, int)
        Per stage scored, ``(layer chosen with the validation seeds, with the scoring seeds)``.
    main_score : float
        The main score as recorded (layer chosen with the validation seeds).
    main_score_with_scoring_seeds : float
        The main score at the layer the scoring seeds would have chosen.
    n_layers : int
        Layers the main stage chose among.
    """

    model: str
    task: str
    main_stage: str
    layers: dict[str, tuple[int, int]]
    main_score: float
    main_score_with_scoring_seeds: float
    n_layers: int

    @property
    def difference(self) -> float:
        """Main score with the scoring seeds minus with the validation seeds."""
        return self.main_score_with_scoring_seeds - self.main_score

    @property
    def has_choice(self) -> bool:
        """Whether the main stage had at least 2 layers to choose among."""
        return self.n_layers >= 2

    def changed(self, stage: str) -> bool:
        """Whether the two seed sets chose different layers for ``stage``."""
        disjoint, same = self.layers[stage]
        return disjoint != same


def selection_row(result: SubsetResult) -> SelectionRow:
    """The :class:`SelectionRow` of one result.

    Raises
    ------
    FineGrainError
        Naming the file, when the ``selection`` block is missing or lacks a stage's layer or the
        main score.
    """
    scores = result.parsed
    block = scores.selection
    if not isinstance(block, dict):
        raise FineGrainError(f"{result.path}: no selection block")
    same = block.get("selected_layer_with_scoring_seeds")
    other = block.get("main_score_with_scoring_seeds")
    if not isinstance(same, dict) or isinstance(other, bool) or not isinstance(other, (int, float)):
        raise FineGrainError(f"{result.path}: selection needs selected_layer_with_scoring_seeds (per stage) and main_score_with_scoring_seeds (a number)")
    stages = [stage for stage in STAGES if stage in scores.selected_layer]
    if not stages:
        raise FineGrainError(f"{result.path}: selected_layer names no stage")
    layers = {}
    for stage in stages:
        if not isinstance(same.get(stage), int) or isinstance(same.get(stage), bool):
            raise FineGrainError(f"{result.path}: selection.selected_layer_with_scoring_seeds has no layer for {stage}")
        layers[stage] = (scores.selected_layer[stage], same[stage])
    main_stage = "coarse_tuned" if "coarse_tuned" in stages else stages[0]
    return SelectionRow(
        model=result.model,
        task=task_label(result),
        main_stage=main_stage,
        layers=layers,
        main_score=float(scores.selected_layer_probe_accuracy),
        main_score_with_scoring_seeds=float(other),
        n_layers=len((scores.validation_probe_accuracy or {}).get(main_stage, {})),
    )


def _seeds(results: Sequence[SubsetResult], name: str) -> str:
    found = {tuple((result.parsed.selection or {}).get(name) or ()) for result in results}
    if len(found) != 1:
        return "various"
    seeds = next(iter(found))
    return f"{seeds[0]}-{seeds[-1]}" if seeds and list(seeds) == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def summary_line(rows: Sequence[SelectionRow], digits: int = 4) -> str:
    """How often the layer changed and what it did to the main score, on one line."""
    counted = [row for row in rows if row.has_choice]
    if not counted:
        return "no (model, task) with a layer to choose"
    main_changes = sum(row.changed(row.main_stage) for row in counted)
    stage_choices = [(row, stage) for row in counted for stage in row.layers]
    stage_changes = sum(row.changed(stage) for row, stage in stage_choices)
    line = (
        f"layer changed in {main_changes} of {len(counted)} (model, task) main-stage choices and in {stage_changes} of "
        f"{len(stage_choices)} stage choices; main score with the scoring seeds minus with the validation seeds: "
        f"mean {sum(row.difference for row in counted) / len(counted):+.{digits}f} over all {len(counted)}"
    )
    changed = [row for row in counted if row.changed(row.main_stage)]
    if not changed:
        return line + " (the same layer gives the same main score)"
    largest = max(changed, key=lambda row: abs(row.difference))
    return (
        line + f", {sum(row.difference for row in changed) / len(changed):+.{digits}f} over the {len(changed)} changed, "
        f"largest {largest.difference:+.{digits}f} ({largest.model} on {largest.task})"
    )


def render(results_dirs: Sequence[str | Path], *, digits: int = 4) -> str:
    """The Markdown table and the summary line for the folders (see the module docstring)."""
    results = load_4_0(results_dirs)
    rows = sorted((selection_row(result) for result in results), key=lambda row: (row.model, row.task))
    validation, scoring = _seeds(results, "validation_seeds"), _seeds(results, "scoring_seeds")
    lines = [
        f"| model | task | main stage | layer (validation seeds {validation}) | layer (scoring seeds {scoring}) "
        f"| main score | main score with scoring seeds | difference | other stage: layer (validation / scoring seeds) |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        disjoint, same = row.layers[row.main_stage]
        others = "; ".join(f"{stage} {a} / {b}" for stage, (a, b) in row.layers.items() if stage != row.main_stage) or "–"
        mark = "" if row.has_choice else " (one layer)"
        lines.append(
            f"| {_cell(row.model)} | {_cell(row.task)} | {row.main_stage}{mark} | {disjoint} | {same} | {row.main_score:.{digits}f} "
            f"| {row.main_score_with_scoring_seeds:.{digits}f} | {row.difference:+.{digits}f} | {others} |"
        )
    return "\n".join(lines) + "\n\n" + summary_line(rows, digits) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR", help="folders of protocol 4.0 results")
    parser.add_argument("--digits", type=int, default=4, help="decimals of the scores (default 4)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render(args.results_dirs, digits=args.digits))
    except FineGrainError as exc:
        print(f"selection_effect.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
