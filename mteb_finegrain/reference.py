"""Reference entries of the leaderboard: the controls every probing study needs, and their tooling.

* :func:`random_init_copy`: a model with the architecture and tokenizer of a trained one but
  randomly initialised transformer weights. What the pretrained model scores above it was learned
  in pre-training rather than given by the architecture and the tokenizer.

The TF-IDF + SVD control is in :mod:`mteb_finegrain.tfidf_svd` (the plugin registers
it with mteb at import, which must not import this script module).

Command line (used by ``leaderboard/reference/prepare.sh``)::

    python -m mteb_finegrain.reference random-init MODEL_DIR OUT [--seed N]

Rebuilding all-mpnet-base-v2 from PyPI parts concerns only this project's reference entries:
it is ``leaderboard/reference/assemble_mpnet.py``, not part of the package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.store import atomic_replace_dir

__all__ = ["main", "random_init_copy"]


# -- random-init control -----------------------------------------------------------------------


def _model_title(model_dir: Path) -> str:
    """The title the plugin names a local model by (README heading, else the folder name)."""
    from mteb_finegrain._plugin import local_model_name

    return local_model_name(model_dir).removeprefix("local/")


def random_init_copy(model_dir: str | os.PathLike, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Save a copy of a SentenceTransformer model with randomly initialised transformer weights.

    The architecture (config), tokenizer, pooling and every other module setting are kept; only
    the transformer's weights are drawn afresh (``AutoModel.from_config`` after
    ``torch.manual_seed(seed)``). The copy's ``README.md`` is titled
    ``# <original title> (random init, seed <seed>)``, so the plugin names it
    ``local/<original title> (random init, seed <seed>)`` and results can never be mistaken for
    the trained model's.

    Parameters
    ----------
    model_dir : str or path-like
        A local SentenceTransformer model directory.
    out_dir : str or path-like
        Where the copy is written (created; an existing directory is overwritten).
    seed : int, default=0
        Torch seed of the initialisation: the same seed gives bit-identical weights.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    FineGrainError
        If ``model_dir`` is not a model directory, or a module after the transformer has weights
        of its own (e.g. a Dense layer): a control must not keep any trained weight.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    source = Path(model_dir).resolve()
    if not (source / "config.json").is_file():
        raise FineGrainError(f"{source}: not a model directory (no config.json)")
    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    trained = [type(module).__name__ for module in list(model)[1:] if next(module.parameters(), None) is not None]
    if trained:
        raise FineGrainError(f"{source}: modules {trained} after the transformer have trained weights; only the transformer is re-initialised")
    trained_transformer = model[0].auto_model
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        fresh = AutoModel.from_config(trained_transformer.config)
    # Copy the fresh values into the loaded module (strict: every tensor is replaced) rather than
    # swap modules: how sentence-transformers holds its model differs between versions.
    trained_transformer.load_state_dict(fresh.state_dict(), strict=True)
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place: an interrupted run leaves the old copy.
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=target.parent))
    try:
        _save_control(model, staging, source, seed)
        atomic_replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _save_control(model, folder: Path, source: Path, seed: int) -> None:
    model.save(str(folder))
    # sentence-transformers writes a generated model card; ours names the control plainly.
    title = f"{_model_title(source)} (random init, seed {seed})"
    (folder / "README.md").write_text(
        f"# {title}\n\n"
        f"The architecture, tokenizer and pooling of `{source.name}` with randomly initialised "
        f"transformer weights (`transformers.AutoModel.from_config` after `torch.manual_seed({seed})`). "
        "A control for mteb-finegrain: it shows how much fine-grained information the architecture "
        "and tokenizer give without any training.\n\n"
        f"Made by `python -m mteb_finegrain.reference random-init {source.name} OUT --seed {seed}`.\n",
        encoding="utf-8",
    )


# -- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m mteb_finegrain.reference random-init ...``."""
    parser = argparse.ArgumentParser(prog="python -m mteb_finegrain.reference", description="Prepare the models of the leaderboard's reference entries.")
    sub = parser.add_subparsers(dest="command", required=True)
    random_init = sub.add_parser("random-init", help="copy a local SentenceTransformer model with randomly initialised transformer weights")
    random_init.add_argument("model_dir", help="local SentenceTransformer model directory")
    random_init.add_argument("out", help="directory to write the copy to (replaced if it exists)")
    random_init.add_argument("--seed", type=int, default=0, help="torch seed of the initialisation (default 0)")
    args = parser.parse_args(argv)
    try:
        path = random_init_copy(args.model_dir, args.out, seed=args.seed)
    except FineGrainError as exc:
        print(f"mteb_finegrain.reference: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
