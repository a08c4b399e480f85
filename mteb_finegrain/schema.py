"""What a FineGrainHidden result is: one subset's scores, as pydantic models.

mteb's ``TaskResult`` is the envelope; inside it, ``scores["test"][i]`` holds one subset's
scores, written by the task and read back by ``report``, the leaderboard and the tests. This
module is the one definition of that dict. :class:`SubsetScores` builds it
(``SubsetScores(...).to_scores_dict()``) and reads it (:meth:`SubsetScores.read`).

A field that every protocol version wrote is required; one that a later version added
(``runtime``, ``truncation``, ``card.levels``, a record's ``level``, ...) is optional, so that
results of protocols 1.x, 2.x and 3.0 still read. Every block accepts keys it does not know, so
that results of a later protocol read too. Types are strict: a JSON string is not an integer,
``true`` is not a number. Whether the values make sense (ranges, every layer present, the main
score at the selected layer) is the leaderboard's question, not this module's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, PrivateAttr, ValidationError, model_serializer, model_validator

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import EVAL_SPLIT

if TYPE_CHECKING:
    from mteb_finegrain.protocol import Protocol

# Problems listed in one error message; the rest are counted.
MAX_PROBLEMS = 5


def _number(value: Any) -> float | int:
    # Kept as given (an int stays an int), so a result that is read and written back is unchanged.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number")
    return float(value) if isinstance(value, float) else int(value)


def _layers_setting(value: Any) -> str | list[int]:
    if value == "all" or (isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        return value
    raise ValueError("must be \"all\" or a list of layer integers")


Number = Annotated[float | int, PlainValidator(_number)]
"""An int or a float, never a bool (JSON ``true`` is not a score)."""
LayersSetting = Annotated[str | list[int], PlainValidator(_layers_setting)]
"""``settings.layers``: ``"all"`` or the scored layers."""


class _Block(BaseModel):
    """A JSON object of a result: strict types, unknown keys kept, written in the order given.

    The key order of a block built or read from a dict is remembered and used when it is
    written, so that ``to_scores_dict`` gives the writer's dict key for key, extra keys included.
    """

    model_config = ConfigDict(strict=True, extra="allow")
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler):
        block = handler(data)
        if isinstance(data, dict):
            block._order = tuple(data)
        return block

    @model_serializer(mode="wrap")
    def _in_given_order(self, handler) -> dict:
        out = handler(self)
        if not self._order:
            return out
        rank = {key: i for i, key in enumerate(self._order)}
        return dict(sorted(out.items(), key=lambda item: rank.get(item[0], len(rank))))


class Record(BaseModel):
    """One score: a metric of one layer, at one level of one stage (mean and std over seeds).

    ``level`` is absent in results of protocol 1 (one fine level); ``shots`` is None for
    clustering metrics; ``mode`` (``"setfit"``) marks SetFit records. Written in the order of
    the fields below, the order the scoring gives them (a record does not remember the order it
    was read in: there are thousands per result).
    """

    model_config = ConfigDict(strict=True, extra="allow")

    stage: str
    level: str | None = None
    layer: int
    metric: str
    shots: int | None
    value: Number
    std: Number
    mode: str | None = None
    # Protocol 4.0: the 95% interval of a probe_accuracy record (items, support sets and, for
    # coarse_tuned, coarse-training runs), and the spread of the value over coarse-training runs.
    ci95: list[Number] | None = None
    runs_std: Number | None = None

    @property
    def key(self) -> tuple:
        """``(stage, level, layer, metric, shots)``: what identifies the record in its subset."""
        return (self.stage, self.level, self.layer, self.metric, self.shots)


class CoarseTrainingSettings(_Block):
    """``settings.coarse_training``: :class:`mteb_finegrain.protocol.CoarseTraining`.

    ``max_grad_norm`` (protocol 3.1) is absent in older results.
    """

    epochs: int
    learning_rate: Number
    batch_size: int
    max_length: int
    weight_decay: Number
    warmup_ratio: Number
    max_grad_norm: Number | None = None


class SetFitSettingsBlock(_Block):
    """``settings.setfit``: :class:`mteb_finegrain.protocol.SetFitSettings`.

    ``num_epochs`` (protocol 3.1) is absent in older results.
    """

    shots: int
    seeds: int
    num_iterations: int
    max_steps: int
    batch_size: int
    learning_rate: Number
    num_epochs: int | None = None


class Settings(_Block):
    """``settings``: ``Protocol.to_dict()`` with the encode batch size that was used.

    ``train_level`` (protocol 2.0), ``probe_warm_start`` (3.0), the probe's and k-means'
    solver settings and ``validation_fraction`` (3.1) are absent in older results; fields a
    later protocol adds are kept as extra keys.
    """

    seed: int
    stages: list[str]
    layers: LayersSetting
    pooling: str
    clustering_seeds: int
    shots: list[int]
    probe_seeds: int
    main_shots: int
    probe_warm_start: bool | None = None
    probe_max_iter: int | None = None
    probe_tol: Number | None = None
    probe_c: Number | None = None
    probe_standardize: bool | None = None
    kmeans_l2_normalize: bool | None = None
    kmeans_n_init: int | None = None
    kmeans_max_iter: int | None = None
    kmeans_tol: Number | None = None
    validation_fraction: Number | None = None
    fewshot: str
    batch_size: int
    train_level: int | None = None
    coarse_training: CoarseTrainingSettings
    setfit: SetFitSettingsBlock
    clustering_seed_list: list[int]
    probe_seed_list: list[int]

    @classmethod
    def from_protocol(cls, protocol: Protocol, batch_size: int) -> Settings:
        """The settings block of a run of ``protocol`` that encoded ``batch_size`` texts at a time."""
        return cls.model_validate(protocol.to_dict() | {"batch_size": batch_size})


class StageEmbeddings(_Block):
    """``runtime.embeddings.<stage>``: how a stage's embeddings and scores were obtained.

    ``texts_encoded`` texts went through the model (0 when every embedding came from the cache);
    ``clustering_cached`` (layer, level) clustering results were read from the cache.
    """

    texts_encoded: int
    cached: bool
    encode_seconds: Number
    scoring_seconds: Number | None = None
    clustering_cached: int | None = None


class BlasLibrary(_Block):
    """One BLAS library loaded in the run, as threadpoolctl describes it."""

    internal_api: str | None = None
    version: str | None = None
    architecture: str | None = None
    threads: int | None = None


class Runtime(_Block):
    """``runtime``: where and how the numbers were computed (not part of the protocol).

    ``device``, ``encoding_dtype`` and ``coarse_training_precision`` are None for a model without
    hidden states (it is not ours to run). ``cpu`` (the CPU model), ``blas`` (the BLAS libraries)
    and ``convergence_warnings`` (probe fits that hit the iteration cap, per stage) are absent
    in older results.
    """

    device: str | None
    encoding_dtype: str | None
    coarse_training_precision: str | None
    torch_threads: int
    embeddings: dict[str, StageEmbeddings]
    cpu: str | None = None
    blas: list[BlasLibrary] | None = None
    convergence_warnings: dict[str, int] | None = None


class EvaluationTruncation(_Block):
    """``truncation.evaluation``: evaluation texts longer than the tokens encoding keeps.

    ``max_length`` and ``truncated`` are None when the model's tokenizer is not ours to see.
    """

    max_length: int | None
    texts: int
    truncated: int | None


class Truncation(_Block):
    """``truncation``: tokens kept per text when encoding and in coarse training."""

    evaluation: EvaluationTruncation
    coarse_training_max_length: int


class CardInfo(_Block):
    """``card``: the dataset card and the data the scores were computed on.

    ``data`` is the content hash (``sha256:...``) or the Hub dataset (``hub:<path>@<revision>``).
    ``levels`` (coarsest first), ``classes_per_level``, ``data_source`` and ``sample`` are
    absent in results of protocol 1.
    """

    name: str
    version: str
    data: str
    data_source: str | None = None
    levels: Annotated[list[str], Field(min_length=1)] | None = None
    classes_per_level: dict[str, int] | None = None
    validation: str
    sample: dict[str, int] | None = None
    sizes: dict[str, int]
    fine_classes: int
    coarse_classes: int


class ModelInfo(_Block):
    """``model``: the scored model.

    ``layers`` is ``[-1]`` (the final embedding) for a model without hidden states.
    ``pooling`` is the pooling applied (``"model"`` resolved; None without hidden states);
    it and ``prompt`` are absent in results of protocol 1.
    """

    name: str
    revision: str | None
    layers: list[int]
    hidden_states: bool
    pooling: str | None = None
    prompt: str | None = None
    note: str | None


class SubsetScores(_Block):
    """One subset's scores: the dict written inside mteb's ``TaskResult.scores["test"][i]``.

    The task writes every field up to ``records``; mteb adds ``main_score`` (a copy of
    ``selected_layer_probe_accuracy``), ``hf_subset``, ``languages`` and ``mteb_version``.

    Examples
    --------
    Reading the first subset of a result file:

    >>> document = json.loads(Path("FineGrainHiddenTREC.json").read_text())  # doctest: +SKIP
    >>> scores = SubsetScores.read(document["scores"]["test"][0], where="FineGrainHiddenTREC.json")  # doctest: +SKIP
    >>> scores.selected_layer["coarse_tuned"], scores.records[0].key  # doctest: +SKIP
    (5, ('pretrained', 'coarse', 0, 'v_measure', None))
    """

    selected_layer_probe_accuracy: Number
    main_score_definition: str
    protocol_version: str
    card: CardInfo
    coarse_training_level: str | None = None
    truncation: Truncation | None = None
    model: ModelInfo
    settings: Settings
    runtime: Runtime | None = None
    selected_layer: dict[str, int]
    validation_probe_accuracy: dict[str, dict[str, Number]]
    # Protocol 4.0 (absent before): the main score's 95% interval and what intervals mean; the
    # coarse-training runs; the layer choice with disjoint seeds; per-layer drift and label-free
    # signals; the per-seed predictions every interval is computed from (uncertainty.evidence).
    main_score_ci95: list[Number] | None = None
    interval: dict[str, Any] | None = None
    coarse_training_runs: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    representation: dict[str, Any] | None = None
    records: list[Record]
    predictions: dict[str, Any] | None = None
    main_score: Number | None = None
    hf_subset: str | None = None
    languages: list[str] | None = None
    mteb_version: str | None = None

    def to_scores_dict(self) -> dict:
        """The dict to write: the fields that were given, in the order given, as JSON types."""
        return self.model_dump(exclude_unset=True)

    @classmethod
    def read(cls, scores: Any, *, where: str) -> SubsetScores:
        """Validate one subset's scores as read from a result file.

        Parameters
        ----------
        scores : object
            ``TaskResult.scores[split][i]``, parsed from JSON.
        where : str
            The file and subset, for the error message (``"<file>: split 'test' subset 'default'"``).

        Raises
        ------
        FineGrainError
            Naming ``where`` and each offending field with its value, on one line.
        """
        try:
            return cls.model_validate(scores)
        except ValidationError as exc:
            problems = describe_errors(exc)
            more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
            raise FineGrainError(f"{where}: " + "; ".join(problems[:MAX_PROBLEMS]) + more) from None

    @property
    def levels(self) -> list[str | None]:
        """The card's levels, coarsest first (``[None]`` for results of protocol 1)."""
        return list(self.card.levels) if self.card.levels else [None]

    def lookup(self) -> dict[tuple, float | int]:
        """``(stage, level, layer, metric, shots) -> value`` of every record."""
        return {record.key: record.value for record in self.records}


def subset_label(scores: Any, index: int) -> str:
    """How an error names a subset: its ``hf_subset``, or its position when that is unusable."""
    subset = scores.get("hf_subset") if isinstance(scores, dict) else None
    return repr(subset) if isinstance(subset, str) else f"#{index}"


def read_subset(scores: Any, path: str | Path, split: str = EVAL_SPLIT, index: int = 0) -> SubsetScores:
    """:meth:`SubsetScores.read` of ``scores[split][index]`` of the result file at ``path``."""
    return SubsetScores.read(scores, where=f"{path}: split {split!r} subset {subset_label(scores, index)}")


def schema_problems(scores: Any) -> list[str]:
    """Every way ``scores`` fails :class:`SubsetScores`, one phrase each (empty when it is valid)."""
    try:
        SubsetScores.model_validate(scores)
    except ValidationError as exc:
        return describe_errors(exc)
    return []


# pydantic error type -> what the field must be, in words.
_MUST_BE = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _field_name(loc: tuple) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "the subset scores"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_errors(exc: ValidationError) -> list[str]:
    """One phrase per error of a :class:`SubsetScores` validation: the field, what it must be, its value."""
    out = []
    for error in exc.errors(include_url=False):
        field = _field_name(error["loc"])
        kind = error["type"]
        if kind == "missing":
            out.append(f"{field} is missing")
            continue
        if kind in _MUST_BE:
            what = f"must be {_MUST_BE[kind]}"
        elif kind == "too_short":
            what = "must not be empty"
        elif kind == "value_error":  # raised by this module's validators, worded to follow the field name
            what = str(error["ctx"]["error"])
        else:
            what = error["msg"][:1].lower() + error["msg"][1:]
        out.append(f"{field} {what}, got {_shown(error.get('input'))}")
    return out
