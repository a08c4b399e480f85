"""The MTEB tasks: ``AbsTaskFineGrainHidden`` holds the evaluation logic once; one small subclass
per dataset card (``FineGrainHidden<name>``) and ``FineGrainHidden`` with every built-in card as
a subset are generated from the cards.
"""

from __future__ import annotations

import logging
import typing
from typing import Any

import pydantic

from mteb.abstasks import AbsTask
from mteb.abstasks.task_metadata import TaskMetadata

from mteb_finegrain.cards import TaskCard
from mteb_finegrain.data import CardData, load_card_data
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import EVAL_SPLIT, MAIN_SCORE, PROTOCOL_VERSION, SEED_PAPER_BIBTEX, Protocol
from mteb_finegrain.results import records_by_key

logger = logging.getLogger(__name__)




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
            subset: {EVAL_SPLIT: load_card_data(card, seed=self.protocol.seed)}
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
        # Imported here, not at the top: registering the tasks (while mteb itself is being
        # imported) must not import the encoder, which imports mteb.
        from mteb_finegrain.embedding_cache import StageEmbeddings, stage_key
        from mteb_finegrain.encoder import LayerEncoder
        from mteb_finegrain.evaluation import resolve_layers, score_stage

        card = self.cards[hf_subset]
        protocol = self.protocol
        batch_size = (encode_kwargs or {}).get("batch_size") or protocol.batch_size
        if isinstance(model, LayerEncoder):
            encoder = model
            # The results must say how they were made: a LayerEncoder that pools otherwise than
            # the protocol says is refused rather than recorded under the protocol's pooling.
            if encoder.pooling_setting != protocol.pooling:
                raise FineGrainError(
                    f"the LayerEncoder pools with {encoder.pooling_setting!r} but the task's protocol says {protocol.pooling!r}: "
                    f"create the task with Protocol(pooling={encoder.pooling_setting!r}) (mteb-finegrain run --pooling {encoder.pooling_setting}) "
                    f"or the encoder with pooling={protocol.pooling!r}"
                )
        else:
            encoder = LayerEncoder(model, pooling=protocol.pooling, batch_size=batch_size, show_progress_bar=self.show_progress_bar)
        resolve_layers(encoder, protocol)  # a layer out of range fails before any work
        train_level = protocol.train_level_name(data_split.level_names)  # likewise a level out of range
        # A model fitted on a fixed corpus (the TF-IDF + SVD control) learns its space from this
        # card's coarse_train texts (texts only, never labels), once, so that the evaluation,
        # validation and few-shot texts are all encoded in the same space.
        if getattr(encoder.source, "fit_on_coarse_train_texts", False):
            encoder.source.fit(data_split.coarse_train.texts)
        context = {"task_metadata": self.metadata, "hf_split": hf_split, "hf_subset": hf_subset}
        # The text every layer sees: the model's own prompt for this task, if it has one.
        prompt = encoder.prompt_for(self.metadata)
        records, validation, selected, encoded = [], {}, {}, {}
        for stage in protocol.stages:
            if stage == "coarse_tuned":
                if not encoder.has_hidden_states:
                    logger.warning("%s exposes no hidden states and cannot be fine-tuned: stage coarse_tuned skipped", encoder.model_name)
                    continue
                from mteb_finegrain.coarse_tuning import coarse_tuned_encoder, stage_checkpoint_key

                stage_id = stage_checkpoint_key(encoder, data_split.coarse_train, card, protocol, prompt)

                def load_stage_encoder():
                    # Loaded (or trained) only when an embedding is missing from the cache.
                    return coarse_tuned_encoder(encoder, data_split.coarse_train, card=card, protocol=protocol, show_progress_bar=self.show_progress_bar, prompt=prompt)
            else:
                stage_id = stage

                def load_stage_encoder():
                    return encoder

            key = stage_key(encoder, stage_id, data_split.content_hash, prompt) if self.embedding_cache else None
            embeddings = StageEmbeddings(load_stage_encoder, key, prompt=prompt, **context)
            scores = score_stage(encoder, data_split, protocol, stage, show_progress_bar=self.show_progress_bar, prompt=prompt, embeddings=embeddings)
            records.extend(scores.records)
            if protocol.fewshot == "setfit":
                from mteb_finegrain.scoring.setfit_fewshot import setfit_records

                records.extend(setfit_records(embeddings.encoder, data_split, protocol, stage, selected_layer=scores.selected_layer, show_progress_bar=self.show_progress_bar))
            validation[stage] = {str(layer): value for layer, value in scores.validation.items()}
            selected[stage] = scores.selected_layer
            encoded[stage] = {
                "texts_encoded": embeddings.encoded_texts,
                "cached": key is not None,
                # Wall seconds of the forward passes and of the scoring (issue 11: scoring <= encoding).
                "encode_seconds": round(embeddings.encode_seconds, 2),
                "scoring_seconds": round(scores.scoring_seconds, 2),
                # (layer, level) clustering results read from the cache instead of computed.
                "clustering_cached": scores.clustering_cached,
            }
        main_stage = protocol.main_stage if protocol.main_stage in selected else next(iter(selected))
        main = records_by_key(records)[(main_stage, data_split.level_names[-1], selected[main_stage], "probe_accuracy", protocol.main_shots)]
        return {
            MAIN_SCORE: main,
            "main_score_definition": protocol.main_score_definition(),
            "protocol_version": PROTOCOL_VERSION,
            "card": {
                "name": card.name,
                "version": card.version,
                "data": data_split.content_hash,
                "data_source": data_split.source,
                "levels": data_split.level_names,
                "classes_per_level": {name: len(set(labels)) for name, labels in zip(data_split.level_names, data_split.evaluation.levels)},
                "validation": "carved from few-shot pool" if data_split.validation_carved else card.splits["validation"],
                "sample": dict(card.sample),  # roles cut to a stratified sample of this many rows
                "sizes": {
                    "coarse_train": len(data_split.coarse_train),
                    "fewshot_pool": len(data_split.fewshot_pool),
                    "validation": len(data_split.validation),
                    "evaluation": len(data_split.evaluation),
                },
                "fine_classes": len(set(data_split.evaluation.fine)),
                "coarse_classes": len(set(data_split.evaluation.coarse)),
            },
            "coarse_training_level": train_level if "coarse_tuned" in selected else None,
            # Tokens kept per text when encoding (the model's limit) and in coarse training.
            "truncation": {
                "evaluation": encoder.truncation(data_split.evaluation.texts),
                "coarse_training_max_length": protocol.coarse_training.max_length,
            },
            "model": {
                "name": encoder.model_name,
                "revision": encoder.mteb_model_meta.revision,
                "layers": encoder.layers,
                "hidden_states": encoder.has_hidden_states,
                "pooling": encoder.pooling if encoder.has_hidden_states else None,  # what was applied ("model" resolved)
                "prompt": prompt,
                "note": None if encoder.has_hidden_states else "model exposes no hidden states: scored on its final embedding only (layer -1)",
            },
            "settings": protocol.to_dict() | {"batch_size": encoder.batch_size},  # the batch size that was used
            # Where and how the numbers were computed (not part of the protocol; for the record).
            "runtime": _runtime(encoder, encoded),
            "selected_layer": selected,
            "validation_probe_accuracy": validation,
            "records": records,
        }


def _runtime(encoder: Any, encoded: dict) -> dict:
    """Device, precision and embedding-cache use of one run."""
    import torch

    # torch's intra-op threads change the order of floating-point sums: the same run on another
    # thread count can differ in the last bits, and so, rarely, in a score.
    runtime = {"device": None, "encoding_dtype": None, "coarse_training_precision": None, "torch_threads": torch.get_num_threads(), "embeddings": encoded}
    if encoder.has_hidden_states:
        from mteb_finegrain.coarse_tuning import training_precision

        runtime.update(device=str(encoder.device), encoding_dtype=str(encoder.dtype).removeprefix("torch."))
        if "coarse_tuned" in encoded:
            runtime["coarse_training_precision"] = training_precision(encoder.device)
    return runtime


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
            # (Clustering, used before, named a secondary score and hid the probe). Note that, unlike
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


def _register_if_deferred() -> None:
    """Imported before mteb, this module's own import of mteb could not register the tasks."""
    from mteb_finegrain import _plugin

    if _plugin._deferred:
        _plugin._deferred = False
        _plugin.register_tasks()


_register_if_deferred()
