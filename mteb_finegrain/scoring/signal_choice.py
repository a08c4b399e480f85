"""Does a label-free layer signal pick the layer the fine labels would pick?

For every (model, task, stage) entry we have, per layer, the value of each label-free signal (for
example :func:`~mteb_finegrain.scoring.layer_signals.effective_rank`) and the 8-shot fine probe
accuracy on the validation and test splits. The reference is the layer the protocol selects: the
highest validation accuracy, the lowest layer among ties.

Each signal gets one direction for all entries (pick its largest or its smallest value), the sign of
its mean within-entry Spearman correlation with validation accuracy: one choice made on the pooled
validation data, never per entry, so that a signal cannot fit each entry on its own. Trivial rules
(last, second-to-last and middle layer) are scored alongside as the bar a signal has to clear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from mteb_finegrain.errors import FineGrainError


LAST, SECOND_TO_LAST, MIDDLE = "last layer", "second-to-last layer", "middle layer"
FIXED_RULES = (LAST, SECOND_TO_LAST, MIDDLE)


def _float_tuple(values, what: str, length: int) -> tuple[float, ...]:
    array = np.asarray(values, dtype=float)
    if array.shape != (length,):
        raise FineGrainError(f"{what} must hold one value per layer ({length}), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise FineGrainError(f"{what} holds a non-finite value at layer position {int(np.argmin(np.isfinite(array)))}")
    return tuple(float(v) for v in array)


@dataclass(frozen=True)
class SignalEntry:
    """Per-layer signal values and fine probe accuracies of one (model, task, stage).

    Parameters
    ----------
    model, task, stage : str
        What the entry is; used to name it in errors and in :class:`LayerPick`.
    signals : mapping of str to sequence of float
        Signal name -> its value at each layer, in the order of ``layers``.
    validation_accuracy : sequence of float
        8-shot fine probe accuracy of each layer on the validation split.
    test_accuracy : sequence of float
        The same on the test split.
    layers : sequence of int, optional
        Layer numbers, strictly increasing; ``0 .. n_layers - 1`` when omitted. At least 2 layers.
    """

    model: str
    task: str
    stage: str
    signals: Mapping[str, Sequence[float]]
    validation_accuracy: Sequence[float]
    test_accuracy: Sequence[float]
    layers: Sequence[int] | None = field(default=None)

    def __post_init__(self):
        name = f"entry ({self.model}, {self.task}, {self.stage})"
        length = len(self.validation_accuracy)
        layers = tuple(range(length)) if self.layers is None else tuple(self.layers)
        if len(layers) < 2:
            raise FineGrainError(f"{name} has {len(layers)} layer(s); choosing a layer needs at least 2")
        if any(not isinstance(layer, (int, np.integer)) for layer in layers) or any(b <= a for a, b in zip(layers, layers[1:])):
            raise FineGrainError(f"{name}: layers must be strictly increasing integers, got {list(layers)}")
        if not self.signals:
            raise FineGrainError(f"{name} has no signals")
        object.__setattr__(self, "layers", tuple(int(layer) for layer in layers))
        object.__setattr__(self, "validation_accuracy", _float_tuple(self.validation_accuracy, f"{name} validation_accuracy", len(layers)))
        object.__setattr__(self, "test_accuracy", _float_tuple(self.test_accuracy, f"{name} test_accuracy", len(layers)))
        signals = {str(key): _float_tuple(values, f"{name} signal {key!r}", len(layers)) for key, values in self.signals.items()}
        object.__setattr__(self, "signals", signals)

    @property
    def key(self) -> tuple[str, str, str]:
        """(model, task, stage)."""
        return (self.model, self.task, self.stage)

    def chosen_position(self) -> int:
        """Position (not layer number) of the validation-selected layer: best accuracy, lowest layer on ties."""
        return int(np.argmax(self.validation_accuracy))


@dataclass(frozen=True)
class LayerPick:
    """The layer one rule picks in one entry, and what it costs against the validation-selected layer."""

    model: str
    task: str
    stage: str
    rule: str
    layer: int
    chosen_layer: int  # the validation-selected layer
    spearman: float  # of the signal with validation accuracy across this entry's layers; nan for fixed rules
    validation_loss: float  # validation accuracy at chosen_layer minus at layer (>= 0)
    test_loss: float  # test accuracy at chosen_layer minus at layer (negative: the rule did better on test)


@dataclass(frozen=True)
class RuleSummary:
    """One row of the comparison table: a signal (with its pooled direction) or a fixed rule."""

    rule: str
    direction: str  # "maximise", "minimise" or "fixed"
    mean_spearman: float  # mean within-entry Spearman with validation accuracy (entries where it is defined); nan for fixed rules
    n_entries: int
    agreement: float  # share of entries where the rule picks the validation-selected layer
    mean_validation_loss: float
    mean_test_loss: float
    max_test_loss: float


def layer_spearman(values: Sequence[float], accuracy: Sequence[float]) -> float:
    """Spearman correlation across layers between a signal and probe accuracy.

    Parameters
    ----------
    values, accuracy : sequence of float
        One value per layer each.

    Returns
    -------
    float
        ``scipy.stats.spearmanr(values, accuracy).statistic``; nan when either is constant (no ranking).
    """
    values, accuracy = np.asarray(values, dtype=float), np.asarray(accuracy, dtype=float)
    if values.shape != accuracy.shape or values.ndim != 1 or len(values) < 2:
        raise FineGrainError(f"layer_spearman needs two 1-D sequences of equal length >= 2, got shapes {values.shape} and {accuracy.shape}")
    if np.ptp(values) == 0 or np.ptp(accuracy) == 0:
        return math.nan
    return float(spearmanr(values, accuracy).statistic)


def _check_entries(entries: Sequence[SignalEntry]) -> list[str]:
    if len(entries) == 0:
        raise FineGrainError("no entries: the signal comparison needs at least one (model, task, stage)")
    names = list(entries[0].signals)
    seen: set[tuple[str, str, str]] = set()
    for entry in entries:
        if not isinstance(entry, SignalEntry):
            raise FineGrainError(f"entries must be SignalEntry objects, got {type(entry).__name__}")
        if set(entry.signals) != set(names):
            raise FineGrainError(f"entry {entry.key} has signals {sorted(entry.signals)}, but {entries[0].key} has {sorted(names)}: every entry needs the same signals")
        if entry.key in seen:
            raise FineGrainError(f"entry {entry.key} appears twice")
        seen.add(entry.key)
    clashes = sorted(set(names) & set(FIXED_RULES))
    if clashes:
        raise FineGrainError(f"signal name {clashes[0]!r} is the name of a fixed rule; rename the signal")
    return names


def signal_directions(entries: Sequence[SignalEntry]) -> dict[str, int]:
    """The direction of each signal, decided once from the validation data of all entries.

    Parameters
    ----------
    entries : sequence of SignalEntry

    Returns
    -------
    dict of str to int
        +1 (pick the layer with the largest value) when the signal's mean within-entry Spearman
        correlation with validation accuracy is >= 0, else -1 (pick the smallest). Entries where
        the correlation is undefined (a constant signal or accuracy) are left out of the mean.

    Raises
    ------
    FineGrainError
        If there are no entries, they differ in their signals, or a signal's correlation is
        undefined in every entry.
    """
    names = _check_entries(entries)
    directions = {}
    for name in names:
        rhos = [layer_spearman(entry.signals[name], entry.validation_accuracy) for entry in entries]
        defined = [rho for rho in rhos if not math.isnan(rho)]
        if not defined:
            raise FineGrainError(f"signal {name!r} has no direction: it or the validation accuracy is constant across layers in every entry")
        directions[name] = 1 if np.mean(defined) >= 0 else -1
    return directions


def _fixed_position(rule: str, n_layers: int) -> int:
    # The middle of 0..12 (embeddings and 12 blocks) is 6; with an even count, the upper of the two.
    return {LAST: n_layers - 1, SECOND_TO_LAST: n_layers - 2, MIDDLE: n_layers // 2}[rule]


def layer_picks(entries: Sequence[SignalEntry]) -> list[LayerPick]:
    """The layer every rule picks in every entry: each signal in its pooled direction, then the fixed rules.

    A signal picks the layer with its largest value (direction +1) or smallest (-1), the lowest
    layer among ties; directions come from :func:`signal_directions` on the same entries.

    Parameters
    ----------
    entries : sequence of SignalEntry

    Returns
    -------
    list of LayerPick
        Entry by entry; within an entry the signals in the order of the first entry, then
        last, second-to-last and middle layer.

    Raises
    ------
    FineGrainError
        As :func:`signal_directions`.
    """
    return _picks(entries, signal_directions(entries))


def _picks(entries: Sequence[SignalEntry], directions: Mapping[str, int]) -> list[LayerPick]:
    picks = []
    for entry in entries:
        chosen = entry.chosen_position()
        choices = [(name, int(np.argmax(directions[name] * np.asarray(entry.signals[name]))), layer_spearman(entry.signals[name], entry.validation_accuracy)) for name in directions]
        choices += [(rule, _fixed_position(rule, len(entry.layers)), math.nan) for rule in FIXED_RULES]
        for rule, position, rho in choices:
            picks.append(LayerPick(
                entry.model, entry.task, entry.stage, rule,
                layer=entry.layers[position],
                chosen_layer=entry.layers[chosen],
                spearman=rho,
                validation_loss=entry.validation_accuracy[chosen] - entry.validation_accuracy[position],
                test_loss=entry.test_accuracy[chosen] - entry.test_accuracy[position],
            ))
    return picks


def compare_layer_rules(entries: Sequence[SignalEntry]) -> list[RuleSummary]:
    """One summary row per signal and per fixed rule, over all entries.

    Parameters
    ----------
    entries : sequence of SignalEntry

    Returns
    -------
    list of RuleSummary
        The signals (in the order of the first entry), then last, second-to-last and middle layer.

    Raises
    ------
    FineGrainError
        As :func:`signal_directions`.
    """
    directions = signal_directions(entries)
    picks = _picks(entries, directions)
    rows = []
    for rule in [*directions, *FIXED_RULES]:
        mine = [pick for pick in picks if pick.rule == rule]
        rhos = [pick.spearman for pick in mine if not math.isnan(pick.spearman)]
        direction = "fixed" if rule in FIXED_RULES else ("maximise" if directions[rule] > 0 else "minimise")
        rows.append(RuleSummary(
            rule=rule,
            direction=direction,
            mean_spearman=float(np.mean(rhos)) if rhos else math.nan,
            n_entries=len(mine),
            agreement=float(np.mean([pick.layer == pick.chosen_layer for pick in mine])),
            mean_validation_loss=float(np.mean([pick.validation_loss for pick in mine])),
            mean_test_loss=float(np.mean([pick.test_loss for pick in mine])),
            max_test_loss=float(np.max([pick.test_loss for pick in mine])),
        ))
    return rows


def format_table(rows: Sequence[RuleSummary], digits: int = 3) -> str:
    """A Markdown table of :func:`compare_layer_rules` rows, for the docs.

    Parameters
    ----------
    rows : sequence of RuleSummary
    digits : int, default=3
        Decimals of every number (accuracy losses are in the accuracies' own unit).

    Returns
    -------
    str
        Header, separator and one line per row, ending in a newline; an undefined Spearman is "–".
    """
    def number(value: float) -> str:
        return "–" if math.isnan(value) else f"{value:.{digits}f}"

    lines = [
        "| rule | direction | mean Spearman (val) | agreement | mean val loss | mean test loss | max test loss | entries |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.rule} | {row.direction} | {number(row.mean_spearman)} | {number(row.agreement)} | {number(row.mean_validation_loss)} "
            f"| {number(row.mean_test_loss)} | {number(row.max_test_loss)} | {row.n_entries} |"
        )
    return "\n".join(lines) + "\n"
