"""SetFit few-shot mode: contrastive fine-tuning of the model cut after layer k, then a LR head.

For a layer k, a copy of the encoder keeps only its first k transformer layers (layer 0: the
embeddings alone) and the protocol's pooling, so before training it computes exactly the layer-k
embedding that the frozen probe scores. The ``setfit`` library then tunes that body on
contrastive pairs of the few-shot sample and fits its logistic-regression head. Few-shot samples
are those of the probe for the same seed (``fewshot_indices``), so the two modes differ only in
the body tuning. The passed encoder is never modified: all training happens on deep copies.
"""

from __future__ import annotations

import copy
import logging
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from mteb_finegrain.encoder import LayerEncoder, pool_hidden_state
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.scoring.fewshot_probe import fewshot_indices, fit_counting_convergence_warnings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from mteb_finegrain.data import CardData
    from mteb_finegrain.protocol import Protocol

logger = logging.getLogger(__name__)

from mteb_finegrain.protocol import SETFIT_METRICS  # noqa: E402
# Texts on which a truncated copy must reproduce the original's layer-k embedding.
_CHECK_TEXTS = ("a short check sentence", "another, somewhat longer sentence to check the truncation")


def _layer_list(model: torch.nn.Module, n_layers: int) -> torch.nn.ModuleList:
    """The one ``ModuleList`` of ``n_layers`` blocks in ``model`` (BERT's ``encoder.layer``, ...).

    Found by shape rather than by name so that any architecture with a single stack of blocks
    works; an ambiguous or missing stack is an error rather than a guess.
    """
    stacks = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers
    ]
    if len(stacks) != 1:
        found = ", ".join(name for name, _ in stacks) or "none"
        raise FineGrainError(
            f"setfit mode cannot truncate {type(model).__name__}: expected exactly one list of "
            f"{n_layers} transformer layers, found {found}"
        )
    return stacks[0][1]


def truncated_body(encoder: LayerEncoder, layer: int, pooling: str) -> SentenceTransformer:
    """A new SentenceTransformer: ``encoder``'s transformer cut after ``layer``, plus ``pooling``.

    The original's own pooling, dense and normalisation modules are dropped: the body must
    embed a text exactly as ``LayerEncoder`` does at ``layer`` (checked on a few texts).

    Raises
    ------
    FineGrainError
        When the model has no per-layer hidden states, its layer stack cannot be found, or the
        truncated copy does not reproduce the layer's embedding (an unsupported architecture).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    if not encoder.has_hidden_states:
        raise FineGrainError(f"setfit mode needs a transformer with hidden states; {encoder.model_name} has none")
    encoder.check_layer(layer)
    n_layers = encoder.layers[-1]
    module = copy.deepcopy(encoder.sentence_transformer[0])
    model = module.auto_model
    if layer < n_layers:
        del _layer_list(model, n_layers)[layer:]
        model.config.num_hidden_layers = layer
        # Per-layer config lists (attention type per layer in newer architectures) must match.
        layer_types = getattr(model.config, "layer_types", None)
        if isinstance(layer_types, list) and len(layer_types) == n_layers:
            model.config.layer_types = layer_types[:layer]
    pooler = Pooling(model.config.hidden_size, pooling_mode=pooling)
    device = next(encoder._transformer.parameters()).device
    body = SentenceTransformer(modules=[module, pooler], device=str(device))
    _check_truncation(encoder, body, layer, pooling)
    return body


def _check_truncation(encoder: LayerEncoder, body: SentenceTransformer, layer: int, pooling: str) -> None:
    """Raise unless ``body`` embeds a few texts as the original's pooled ``hidden_states[layer]``.

    This catches architectures where cutting the stack is not enough (a final norm applied to
    the last state, layers that read ``num_hidden_layers`` elsewhere, ...).
    """
    texts = list(_CHECK_TEXTS)
    transformer = encoder._transformer
    tokenizer = encoder.sentence_transformer.tokenizer
    was_training, body_training = transformer.training, body.training
    transformer.eval()
    try:
        with torch.inference_mode():
            batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(next(transformer.parameters()).device)
            hidden = transformer(**batch, output_hidden_states=True, return_dict=True).hidden_states[layer]
            expected = pool_hidden_state(hidden, batch["attention_mask"], pooling).float().cpu().numpy()
        got = body.encode(texts, convert_to_numpy=True, show_progress_bar=False)
    finally:
        transformer.train(was_training)
        body.train(body_training)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
        raise FineGrainError(
            f"setfit mode cannot truncate {encoder.model_name} after layer {layer}: the truncated copy does "
            f"not reproduce that layer's embedding (unsupported architecture "
            f"{type(transformer).__name__})"
        )


@contextmanager
def _isolated_rng() -> Iterator[None]:
    """Let training seed the global RNGs without changing the caller's random streams."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@contextmanager
def _quiet_setfit() -> Iterator[None]:
    """SetFit sets its own logger to INFO on import; keep its per-training banners out of the output."""
    from setfit import logging as setfit_logging

    level = setfit_logging.get_verbosity()
    setfit_logging.set_verbosity_warning()
    try:
        yield
    finally:
        setfit_logging.set_verbosity(level)


def _train_and_score(
    encoder: LayerEncoder,
    layer: int,
    train_texts: list[str],
    train_labels: list[str],
    data: CardData,
    protocol: Protocol,
    seed: int,
    show_progress_bar: bool,
) -> tuple[float, float]:
    """Train one SetFit model (layer, seed) and return its evaluation accuracy and macro-F1."""
    from setfit import SetFitModel, Trainer, TrainingArguments
    from transformers import set_seed
    from transformers.trainer_callback import ProgressCallback

    settings = protocol.setfit
    batch_size = encoder.batch_size
    set_seed(seed)
    body = truncated_body(encoder, layer, encoder.pooling)
    # The probe's head: raw embeddings, the same solver settings and seed.
    head = LogisticRegression(C=protocol.probe_c, tol=protocol.probe_tol, max_iter=protocol.probe_max_iter, random_state=seed)
    model = SetFitModel(model_body=body, model_head=head)
    with tempfile.TemporaryDirectory(prefix="finegrain-setfit-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            batch_size=settings.batch_size,
            num_iterations=settings.num_iterations,
            # max_steps also caps how many pairs SetFit generates (max_steps * batch_size).
            max_steps=settings.max_steps if settings.max_steps > 0 else -1,
            body_learning_rate=settings.learning_rate,
            num_epochs=settings.num_epochs,
            seed=seed,
            report_to="none",
            save_strategy="no",
            show_progress_bar=show_progress_bar,
        )
        trainer = Trainer(model=model, args=args)
        st_args = trainer.st_trainer.args
        st_args.disable_tqdm = not show_progress_bar
        st_args.data_seed = seed
        st_args.dataloader_pin_memory = body.device.type == "cuda"  # pinning on CPU only warns
        if not show_progress_bar:
            # The transformers progress bar is created regardless of disable_tqdm once registered.
            trainer.st_trainer.pop_callback(ProgressCallback)
        # Only the body phase goes through the Trainer; the head is fitted below as
        # SetFitModel.fit does, but with the encoding batch size and progress bar under our control.
        trainer.train_embeddings(train_texts, train_labels)
    train_x = model.encode(train_texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
    eval_x = model.encode(data.evaluation.texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
    # One BLAS thread, as for the probe: small problems run several times slower with threads.
    with threadpool_limits(1):
        not_converged = fit_counting_convergence_warnings(model.model_head, train_x, train_labels)
        predicted = model.model_head.predict(eval_x)
    if not_converged:
        logger.info("SetFit head of layer %d seed %d stopped at max_iter=%d before converging", layer, seed, protocol.probe_max_iter)
    truth = data.evaluation.fine
    return float(accuracy_score(truth, predicted)), float(f1_score(truth, predicted, average="macro"))


def _check_settings(protocol: Protocol) -> None:
    settings = protocol.setfit
    for name in ("shots", "seeds", "num_iterations", "batch_size", "num_epochs"):
        value = getattr(settings, name)
        if not isinstance(value, int) or value < 1:
            raise FineGrainError(f"setfit.{name} must be a positive integer, got {value!r}")
    if not isinstance(settings.max_steps, int):
        raise FineGrainError(f"setfit.max_steps must be an integer (-1: no limit), got {settings.max_steps!r}")
    if not settings.learning_rate > 0:
        raise FineGrainError(f"setfit.learning_rate must be positive, got {settings.learning_rate!r}")


def setfit_records(
    encoder: LayerEncoder,
    data: CardData,
    protocol: Protocol,
    stage: str,
    *,
    selected_layer: int,
    show_progress_bar: bool = True,
) -> list[dict]:
    """SetFit scores of ``encoder`` cut after the validation-selected layer and after the last layer.

    For each of the two layers (one if they coincide) and each seed ``protocol.seed + i``,
    ``i < protocol.setfit.seeds``: take ``protocol.setfit.shots`` examples per fine class of the
    few-shot pool (the probe's sample for that seed), fine-tune a deep copy of the encoder
    truncated after the layer, with ``protocol.pooling``, by SetFit's contrastive training
    (``num_iterations`` pairs per example and side, at most ``max_steps`` steps of
    ``batch_size`` pairs), fit SetFit's logistic-regression head, and classify the evaluation
    split. Every random source is seeded, so a rerun gives identical numbers on the same
    hardware.

    Parameters
    ----------
    encoder : LayerEncoder
        The stage's model; left unchanged. It must expose hidden states (not an API model).
    data : CardData
    protocol : Protocol
        ``protocol.setfit`` holds the training settings; ``protocol.seed`` the base seed.
    stage : str
        Label written into the records (``pretrained`` or ``coarse_tuned``).
    selected_layer : int
        The layer chosen on the validation split by the probe.
    show_progress_bar : bool, default=True

    Returns
    -------
    list of dict
        ``{stage, level, layer, metric, shots, value, std, mode}`` with ``metric`` in
        ``setfit_accuracy`` and ``setfit_f1_macro``, ``value``/``std`` the mean and standard
        deviation over seeds and ``mode`` = ``"setfit"``; layers ascending.

    Raises
    ------
    FineGrainError
        On invalid settings, a model without hidden states or an architecture that cannot be
        truncated.
    """
    _check_settings(protocol)
    if not encoder.has_hidden_states:
        raise FineGrainError(f"setfit mode needs a transformer with hidden states; {encoder.model_name} has none")
    settings = protocol.setfit
    layers = sorted({encoder.check_layer(selected_layer), encoder.layers[-1]})
    seeds = [protocol.seed + i for i in range(settings.seeds)]
    pool = data.fewshot_pool
    samples = {seed: fewshot_indices(pool.fine, [settings.shots], seed)[settings.shots] for seed in seeds}

    records: list[dict] = []
    runs = tqdm(total=len(layers) * len(seeds), desc=f"SetFit ({stage})", disable=not show_progress_bar)
    try:
        with _isolated_rng(), _quiet_setfit():
            for layer in layers:
                accuracy, f1 = [], []
                for seed in seeds:
                    started = time.perf_counter()
                    idx = samples[seed]
                    acc, macro = _train_and_score(
                        encoder,
                        layer,
                        [pool.texts[i] for i in idx],
                        [pool.fine[i] for i in idx],
                        data,
                        protocol,
                        seed,
                        show_progress_bar,
                    )
                    accuracy.append(acc)
                    f1.append(macro)
                    logger.info("SetFit %s layer %d seed %d: accuracy %.4f (%.0fs)", stage, layer, seed, acc, time.perf_counter() - started)
                    runs.update(1)
                for metric, values in zip(SETFIT_METRICS, (accuracy, f1)):
                    records.append(
                        {
                            "stage": stage,
                            "level": data.level_names[-1],  # SetFit is scored at the finest level
                            "layer": layer,
                            "metric": metric,
                            "shots": settings.shots,
                            "value": float(np.mean(values)),
                            "std": float(np.std(values)),
                            "mode": "setfit",
                        }
                    )
    finally:
        runs.close()
    return records
