"""Maintainer script: write the packaged copy of a built-in card's data (``<local>/<split>.jsonl.gz``).

    python mteb_finegrain/datasets/pack.py SOURCE_DIR CARD_NAME [CARD_NAME ...]

Reads each card's splits from ``SOURCE_DIR/<local>/`` with the card's own loader (so every row is
validated), keeps only the columns the card reads, and writes them gzip-compressed with a fixed
timestamp: packing the same rows twice gives identical bytes, and the data hash in the results
is the same as when the rows are read from ``SOURCE_DIR``. Only cards whose licence allows
redistribution may be packed (see ``LICENSES.md`` beside this file).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from mteb_finegrain.cards import discover_cards
from mteb_finegrain.data import DATA_DIR_ENV, find_split_file, packaged_data_dir, read_split_file
from mteb_finegrain.store import atomic_write

# Refused whatever the caller says: their licence does not allow redistribution.
NOT_REDISTRIBUTABLE = {"TwentyNewsgroups"}


def _gzip(raw, data: bytes) -> None:
    # No file name and a fixed timestamp in the header: the same rows give the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as out:
        out.write(data)


def pack(source: Path, card_name: str) -> list[Path]:
    """Write the packaged copy of the built-in card ``card_name`` from ``source``; return the files written."""
    cards = {card.name: card for card in discover_cards()[0]}
    if card_name not in cards:
        raise SystemExit(f"pack.py: unknown built-in card {card_name!r}; cards: {', '.join(sorted(cards))}")
    if card_name in NOT_REDISTRIBUTABLE:
        raise SystemExit(f"pack.py: {card_name} may not be redistributed; it is read from {DATA_DIR_ENV} only")
    card = cards[card_name]
    columns = [card.columns["text"]] + [column for _, column in card.levels if column]
    written = []
    target_dir = packaged_data_dir() / card.local
    target_dir.mkdir(parents=True, exist_ok=True)
    for split in sorted(set(card.splits.values())):
        path = find_split_file(source / card.local, split)
        if path is None:
            raise SystemExit(f"pack.py: {source / card.local}/{split}.jsonl not found")
        rows = read_split_file(path, card)
        lines = []
        for i, text in enumerate(rows.texts):
            labels = [levels[i] for levels in rows.levels]
            lines.append(json.dumps(dict(zip(columns, [text, *labels])), ensure_ascii=False))
        target = target_dir / f"{split}.jsonl.gz"
        data = ("\n".join(lines) + "\n").encode("utf-8")
        atomic_write(target, lambda raw, data=data: _gzip(raw, data))
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(argv[0])
    for name in argv[1:]:
        for path in pack(source, name):
            print(f"{path}  {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
