"""The MTEB tasks: ``AbsTaskFineGrainHidden`` adapts mteb's task interface to the engine
(``runner.run_subset``); one small subclass per dataset card (``FineGrainHidden<name>``) and
``FineGrainHidden`` with every built-in card as a subset are generated from the cards.
"""

from __future__ import annotations

import typing
from typing import Any

import pydantic

from mteb.abstasks import AbsTask
from mteb.abstasks.task_metadata import TaskMetadata

from mteb_finegrain.cards import TaskCard
from mteb_finegrain.data import CardData, load_card_data
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import EVAL_SPLIT, MAIN_SCORE, PROTOCOL_VERSION, SEED_PAPER_BIBTEX, Protocol


class AbsTaskFineGrainHidden(AbsTask):
    """Score every hidden layer of a model on fine labels, before and after coarse fine-tuning.

    Subclasses set ``cards`` (subset name -> card) and ``metadata``. ``protocol`` holds every
    setting; the default protocol is what ``mteb run`` uses.
    """

    cards: dict[str, TaskCard]
    protocol: Protocol = Protocol()
    show_progress_bar: bool = True
    embedding_cache: bool = True

    def __init__(self, protocol: Protocol | None = None, show_progress_bar: bool = True, embedding_cache: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if protocol is not None:
            self.protocol = protocol
        self.show_progress_bar = show_progress_bar
        # Off also with MTEB_FINEGRAIN_EMBEDDING_CACHE=0 (for the plain `mteb run`).
        self.embedding_cache = embedding_cache

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Load and validate each card's data (local JSON Lines first, else the hub)."""
        if self.data_loaded:
            return
        self.dataset = {
            subset: {EVAL_SPLIT: load_card_data(card, seed=self.protocol.seed, validation_fraction=self.protocol.validation_fraction)}
            for subset, card in self.cards.items()
            if subset in self.hf_subsets
        }
        self.data_loaded = True

    def _calculate_descriptive_statistics_from_split(self, split: str, *, hf_subset: str | None = None, compute_overall: bool = False, num_proc: int | None = None) -> dict:
        """Sizes and label counts of each role split of the card(s)."""
        self.load_data()
        subsets = [hf_subset] if hf_subset else list(self.dataset)
        stats = {}
        for subset in subsets:
            data: CardData = self.dataset[subset][EVAL_SPLIT]
            for role in ("coarse_train", "fewshot_pool", "validation", "evaluation"):
                part = getattr(data, role)
                stats[f"{subset}/{role}"] = {
                    "num_samples": len(part),
                    "num_fine_labels": len(set(part.fine)),
                    "num_coarse_labels": len(set(part.coarse)),
                    "num_labels_per_level": {name: len(set(labels)) for name, labels in zip(data.level_names, part.levels)},
                    "average_text_length": sum(map(len, part.texts)) / len(part),
                }
        return stats

    def _evaluate_subset(self, model: Any, data_split: CardData, *, hf_split: str, hf_subset: str, encode_kwargs: Any, **kwargs: Any) -> dict:
        """One subset's scores (see ``runner.run_subset``), as the dict mteb stores in the result."""
        # Imported here, not at the top: registering the tasks (while mteb itself is being
        # imported) must not import the encoder, which imports mteb.
        from mteb_finegrain.runner import run_subset

        encoder = self._layer_encoder(model, encode_kwargs)
        scores = run_subset(
            encoder, data_split, self.cards[hf_subset], self.protocol, embedding_cache=self.embedding_cache,
            show_progress_bar=self.show_progress_bar, task_metadata=self.metadata, hf_split=hf_split, hf_subset=hf_subset,
        )
        return scores.to_scores_dict()

    def _layer_encoder(self, model: Any, encode_kwargs: Any):
        """``model`` as a ``LayerEncoder`` pooling as the protocol says (a passed-in one is checked)."""
        from mteb_finegrain.encoder import LayerEncoder

        protocol = self.protocol
        if not isinstance(model, LayerEncoder):
            batch_size = (encode_kwargs or {}).get("batch_size") or protocol.batch_size
            return LayerEncoder(model, pooling=protocol.pooling, batch_size=batch_size, show_progress_bar=self.show_progress_bar)
        # The results must say how they were made: a LayerEncoder that pools otherwise than the
        # protocol says is refused rather than recorded under the protocol's pooling.
        if model.pooling_setting != protocol.pooling:
            raise FineGrainError(
                f"the LayerEncoder pools with {model.pooling_setting!r} but the task's protocol says {protocol.pooling!r}: "
                f"create the task with Protocol(pooling={model.pooling_setting!r}) (mteb-finegrain run --pooling {model.pooling_setting}) "
                f"or the encoder with pooling={protocol.pooling!r}"
            )
        return model


def _metadata(name: str, cards: list[TaskCard], description: str) -> TaskMetadata:
    single = len(cards) == 1
    card = cards[0]
    if single and card.hub:
        dataset = {"path": card.hub["path"], "revision": card.hub["revision"]}
    else:
        dataset = {"path": "mteb-finegrain/" + "+".join(c.name for c in cards), "revision": "cards-" + "-".join(f"{c.name}v{c.version}" for c in cards)}
    eval_langs = card.languages if single else {c.name: c.languages for c in cards}
    try:
        return TaskMetadata(
            name=name,
            description=f"{description} Protocol {PROTOCOL_VERSION}; main score: {Protocol().main_score_definition()}.",
            reference=card.reference if single else "https://github.com/mteb-finegrain/mteb-finegrain",
            dataset=dataset,
            # mteb has no type for "probe every hidden layer before and after fine-tuning". The main
            # score is the accuracy of a logistic regression trained on a few labelled embeddings
            # per class, as in mteb's Classification tasks, so that is the least misleading type
            # (Clustering would name a secondary score and hide the probe). Note that, unlike
            # mteb's classification tasks, these also fine-tune a copy of the model (coarse_tuned).
            type="Classification",
            task_subtypes=sorted({subtype for c in cards for subtype in c.task_subtypes}),
            category="t2c",
            modalities=["text"],
            eval_splits=[EVAL_SPLIT],
            eval_langs=eval_langs,
            main_score=MAIN_SCORE,
            # The aggregate spans its cards: every domain, the earliest to the latest date.
            date=card.date if single else _date_span(cards),
            domains=card.domains if single else sorted({d for c in cards for d in (c.domains or [])}),
            license=card.license if single else "multiple",
            annotations_creators="human-annotated",
            dialect=[],
            sample_creation="found",
            bibtex_citation="\n\n".join([SEED_PAPER_BIBTEX] + [c.citation for c in cards]),
        )
    except pydantic.ValidationError as exc:
        raise _card_metadata_error(cards, exc) from None


# TaskMetadata field -> the card key it comes from, for error messages.
_CARD_KEYS = {"task_subtypes": "task_subtypes", "license": "license", "reference": "reference", "domains": "domains", "date": "date", "eval_langs": "languages", "description": "description", "bibtex_citation": "citation"}


def _allowed(field: str) -> str:
    """What mteb's TaskMetadata accepts for ``field``, in words."""
    if field == "license":
        return "one of mteb's licence ids (" + ", ".join(_literal_values(field)) + ") or a URL; 'not specified' when unknown"
    if field == "reference":
        return "a URL (http://... or https://...)"
    if field == "domains":
        return "a list of mteb's domains (" + ", ".join(_literal_values(field)) + ")"
    if field == "date":
        return 'two dates ["YYYY-MM-DD", "YYYY-MM-DD"]'
    if field == "eval_langs":
        return "ISO 639-3 codes with script, e.g. [eng-Latn]"
    return ""


def _literal_values(field: str) -> list[str]:
    """The strings a ``Literal`` anywhere in a TaskMetadata field's annotation allows."""

    def leaves(annotation) -> list:
        args = typing.get_args(annotation)
        return [annotation] if not args else [leaf for arg in args for leaf in leaves(arg)]

    return [leaf for leaf in leaves(TaskMetadata.model_fields[field].annotation) if isinstance(leaf, str)]


def _card_metadata_error(cards: list[TaskCard], exc: pydantic.ValidationError) -> FineGrainError:
    """One line naming the card file, each offending key, its value and what mteb accepts."""
    problems: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        key = _CARD_KEYS.get(field, field)
        if key not in problems:
            problems[key] = f"{key} {error.get('input')!r} is not accepted by mteb" + (f": use {_allowed(field)}" if _allowed(field) else f" ({error['msg']})")
    where = cards[0].source if len(cards) == 1 else ", ".join(str(c.source) for c in cards)
    return FineGrainError(f"{where}: " + "; ".join(problems.values()))


def _date_span(cards: list[TaskCard]):
    dates = [c.date for c in cards if c.date]
    return (min(d[0] for d in dates), max(d[1] for d in dates)) if dates else None


def make_task_class(card: TaskCard) -> type[AbsTaskFineGrainHidden]:
    """The ``FineGrainHidden<name>`` task class of one card."""
    return type(
        card.task_name,
        (AbsTaskFineGrainHidden,),
        {"cards": {"default": card}, "metadata": _metadata(card.task_name, [card], card.description), "__module__": __name__},
    )


def make_aggregate_class(cards: list[TaskCard]) -> type[AbsTaskFineGrainHidden]:
    """``FineGrainHidden``: every built-in card as one subset."""
    description = "Hidden-layer fine-grained label information after coarse-label fine-tuning, on " + ", ".join(c.name for c in cards) + "."
    return type(
        "FineGrainHidden",
        (AbsTaskFineGrainHidden,),
        {"cards": {c.name: c for c in cards}, "metadata": _metadata("FineGrainHidden", cards, description), "__module__": __name__},
    )
