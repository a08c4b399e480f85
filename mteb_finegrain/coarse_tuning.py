"""Stage ``coarse_tuned``: fine-tune a copy of the model on coarse labels only, with a cache.

A linear head on the mean-pooled (or CLS) output of the last layer is trained with cross-entropy
on the card's ``coarse_train`` split, with the labels of one level (by default the coarsest); the
labels of the finer levels are never passed in. The tuned checkpoint is
saved under the cache directory, keyed by everything that determines its weights, and reused.
It is written to a temporary folder and renamed into place when complete, so an interrupted run
never leaves a checkpoint that a later run would load.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mteb_finegrain.cards import TaskCard
from mteb_finegrain.data import LabelledSplit
from mteb_finegrain.encoder import LayerEncoder, pool_hidden_state
from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import COARSE_TRAINING_PROTOCOL, CoarseTraining, Protocol
from mteb_finegrain.store import atomic_replace_dir, checkpoints_dir, file_lock, recover_replaced_dir, sha256_chunks, sha256_json

logger = logging.getLogger(__name__)
_COMPLETE = "finegrain_checkpoint.json"


# CoarseTraining fields left out of checkpoint keys at their defaults (every checkpoint keyed
# without them was trained with these values), with those defaults.
_KEYED_WHEN_CHANGED = {"max_grad_norm": CoarseTraining().max_grad_norm}


def _training_key(settings: CoarseTraining) -> dict:
    """The training settings as the checkpoint key holds them.

    A setting of ``_KEYED_WHEN_CHANGED`` is in the key only when it differs from its default: at
    the default the key equals that of a checkpoint keyed without the setting (trained with the
    same value), and any other value gets a checkpoint of its own.
    """
    training = asdict(settings)
    del training["seed"]  # keyed on its own, as "seed"
    for name, default in _KEYED_WHEN_CHANGED.items():
        if training[name] == default:
            del training[name]
    return training


def checkpoint_key(encoder: LayerEncoder, card: TaskCard, protocol: Protocol, data_hash: str, prompt: str | None = None) -> dict:
    """Everything that determines the coarse-tuned weights."""
    key = {
        "train_level": protocol.train_level_name(card.level_names),
        "model": encoder.model_name,
        "model_revision": encoder.mteb_model_meta.revision,
        "card": card.name,
        "card_version": card.version,
        "data": data_hash,
        "protocol_version": COARSE_TRAINING_PROTOCOL,  # the version that last changed coarse training
        "pooling": encoder.pooling,
        "prompt": prompt,
        # The training seed (protocol 3.1 trained with Protocol.seed, 42 by default: the same
        # value, so the first run's checkpoint is the one 3.1 trained).
        "seed": protocol.coarse_training.seed,
        "training": _training_key(protocol.coarse_training),
    }
    device = encoder.device
    precision = training_precision(device)
    if precision != "float32":  # float32 (CPU) keys carry no precision: a key without one means float32
        key["precision"] = precision
    if device.type == "cpu":
        # CPU training sums in an order that depends on torch's intra-op threads: another thread
        # count trains (in the last bits) other weights, so it is another checkpoint.
        key["torch_threads"] = torch.get_num_threads()
    return key


def stage_checkpoint_key(encoder: LayerEncoder, split: LabelledSplit, card: TaskCard, protocol: Protocol, prompt: str | None = None) -> dict:
    """The key of the coarse-tuned checkpoint of ``encoder`` on ``split`` (nothing is loaded or trained)."""
    depth = card.level_names.index(protocol.train_level_name(card.level_names))
    return checkpoint_key(encoder, card, protocol, split_hash(split, depth), prompt)


def training_precision(device: torch.device) -> str:
    """``bfloat16-autocast`` on a CUDA device that supports it, ``float16-autocast`` on other CUDA
    devices, ``float32`` elsewhere (no autocast on the CPU: its weights are plain float32 training's)."""
    if device.type != "cuda":
        return "float32"
    return "bfloat16-autocast" if torch.cuda.is_bf16_supported() else "float16-autocast"


def checkpoint_cache_size() -> tuple[int, int, Path]:
    """(complete checkpoints, bytes, folder) of the coarse-tuned checkpoint cache."""
    root = checkpoints_dir()
    if not root.is_dir():
        return 0, 0, root
    count = sum((folder / _COMPLETE).is_file() for folder in root.iterdir() if folder.is_dir())
    size = sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
    return count, size, root


def clear_checkpoints() -> tuple[int, int, Path]:
    """Remove every cached checkpoint not being written now (its lock is free); return what went."""
    count, size, root = checkpoint_cache_size()
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_dir() and not folder.name.startswith(".partial-"):
                try:
                    with file_lock(_lock_path(folder), timeout=0):
                        shutil.rmtree(folder, ignore_errors=True)
                except TimeoutError:
                    logger.warning("%s is being written by another run: kept", folder)
    return count, size, root


def _key_dir(key: dict) -> Path:
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in key["model"])[-60:]
    return checkpoints_dir() / f"{safe_model}-{key['card']}-{sha256_json(key, length=20)}"


def _lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def split_hash(split: LabelledSplit, level: int = 0) -> str:
    """Hash of the texts and the training level's labels only: no other label can change the checkpoint."""
    return sha256_chunks(text.encode() + b"\0" + label.encode() + b"\n" for text, label in zip(split.texts, split.levels[level]))


def train_on_coarse(encoder: LayerEncoder, texts: list[str], coarse: list[str], protocol: Protocol, show_progress_bar: bool = True, prompt: str | None = None):
    """Fine-tune a deep copy of ``encoder``'s SentenceTransformer on coarse labels; return it.

    The classification head is discarded after training: only the encoder weights are scored.
    Training seeds torch's global random generator (the head's initialisation, dropout) with
    ``protocol.coarse_training.seed``, inside ``torch.random.fork_rng``: the caller's generator is left as it was
    (the CPU's, and every CUDA device's when training on one); the trained weights are the same.
    """
    device = next(encoder.sentence_transformer.parameters()).device
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(protocol.coarse_training.seed)
        return _train(encoder, texts, coarse, protocol, show_progress_bar, prompt)


def _train(encoder: LayerEncoder, texts: list[str], coarse: list[str], protocol: Protocol, show_progress_bar: bool, prompt: str | None):
    settings = protocol.coarse_training
    if prompt:  # trained on the texts the model's encoder sees, as every layer is scored on them
        texts = [prompt + text for text in texts]
    model = copy.deepcopy(encoder.sentence_transformer)
    transformer = model[0].auto_model
    tokenizer = model.tokenizer
    device = next(transformer.parameters()).device
    classes = sorted(set(coarse))
    targets = torch.tensor([classes.index(c) for c in coarse])
    head = torch.nn.Linear(transformer.config.hidden_size, len(classes)).to(device)
    params = list(transformer.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(texts) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    warmup = int(settings.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup))
    )
    rng = np.random.default_rng(settings.seed)
    # Mixed precision on a GPU only: autocast for the forward pass, a gradient scaler for float16.
    precision = training_precision(device)
    autocast_dtype = {"bfloat16-autocast": torch.bfloat16, "float16-autocast": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "float16-autocast")
    transformer.train()
    progress = tqdm(total=total, desc="Coarse fine-tuning", disable=not show_progress_bar)
    try:
        for _ in range(settings.epochs):
            order = rng.permutation(len(texts))
            for start in range(0, len(texts), settings.batch_size):
                idx = order[start : start + settings.batch_size]
                batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=settings.max_length, return_tensors="pt").to(device)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    hidden = transformer(**batch, return_dict=True).last_hidden_state
                    logits = head(pool_hidden_state(hidden, batch["attention_mask"], encoder.pooling))
                    loss = torch.nn.functional.cross_entropy(logits.float(), targets[idx].to(device))
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}")
    finally:
        progress.close()
    transformer.eval()
    return model


def coarse_tuned_encoder(encoder: LayerEncoder, split: LabelledSplit, *, card: TaskCard, protocol: Protocol, show_progress_bar: bool = True, prompt: str | None = None) -> LayerEncoder:
    """A ``LayerEncoder`` on the coarse-tuned copy of ``encoder``, from the cache when present.

    Parameters
    ----------
    encoder : LayerEncoder
        The pretrained model (left unchanged).
    split : LabelledSplit
        The card's ``coarse_train`` split; only its texts and the labels of the protocol's
        ``train_level`` (default: the coarsest level) are used.
    card : TaskCard
    protocol : Protocol
    show_progress_bar : bool, default=True
    """
    level = protocol.train_level_name(card.level_names)
    labels = split.levels[card.level_names.index(level)]
    key = stage_checkpoint_key(encoder, split, card, protocol, prompt)
    target = _key_dir(key)
    device = encoder.device
    target.parent.mkdir(parents=True, exist_ok=True)
    # One process trains a checkpoint; another that needs the same one waits, then reuses it.
    with file_lock(_lock_path(target), waiting_message=f"Waiting for another process to finish the coarse-tuned checkpoint {target}"):
        model = _load_or_train(target, key, encoder, split, labels, level, protocol, show_progress_bar, prompt, device)
    tuned = LayerEncoder(model, pooling=encoder.pooling, batch_size=encoder.batch_size, show_progress_bar=encoder.show_progress_bar)
    tuned.mteb_model_meta = encoder.mteb_model_meta
    return tuned


def _load_or_train(target: Path, key: dict, encoder: LayerEncoder, split: LabelledSplit, labels: list[str], level: str, protocol: Protocol, show_progress_bar: bool, prompt: str | None, device):
    """The checkpoint at ``target`` when complete, else trained and written there atomically."""
    from sentence_transformers import SentenceTransformer

    # Staging folders of this key are written only under its lock: any left now is from a writer
    # that was killed, and is removed (it never had the completion marker, so was never trusted);
    # so is a replacement it left half done.
    for leftover in target.parent.glob(f".partial-{target.name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    recover_replaced_dir(target)
    if (target / _COMPLETE).is_file():
        logger.info("Reusing coarse-tuned checkpoint %s", target)
        model = SentenceTransformer(str(target), device=str(device), local_files_only=True)
    else:
        logger.info("Coarse fine-tuning on level %r (%d classes)", level, len(set(labels)))
        model = train_on_coarse(encoder, split.texts, labels, protocol, show_progress_bar, prompt=prompt)
        staging = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=target.parent))
        try:
            model.save(str(staging))
            # Inside the staging folder: it becomes visible only with the folder, complete.
            (staging / _COMPLETE).write_text(json.dumps(key, indent=2, sort_keys=True))
            atomic_replace_dir(staging, target)  # over a leftover without the completion marker
        except OSError as exc:  # a full disk: nothing is cached, the run stops with one line
            shutil.rmtree(staging, ignore_errors=True)
            raise FineGrainError(f"{target}: cannot write the coarse-tuned checkpoint ({exc.strerror or exc}); nothing was cached") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return model
