"""Record an existing results folder under a model's public name (scores untouched).

    python leaderboard/reference/relabel.py RESULTS_DIR NAME

For results made from a local copy of a public model without ``mteb-finegrain run --model-name``
(for instance with plain ``mteb run``, which names a local directory ``local/<title>``): rewrites
the model name in ``model_meta.json`` and in every ``FineGrainHidden*.json`` beside it, each file
written to a temporary file and renamed into place. The revision (a hash of the model files)
stays, so the entry still says exactly which files were run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _write(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def relabel(results_dir: Path, name: str) -> list[Path]:
    metas = sorted(results_dir.rglob("model_meta.json"))
    if len(metas) != 1:
        raise SystemExit(f"relabel.py: expected one model_meta.json under {results_dir}, found {len(metas)}")
    meta_file = metas[0]
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["name"] = name
    changed = [meta_file]
    for path in sorted(meta_file.parent.glob("FineGrainHidden*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for subsets in data["scores"].values():
            for scores in subsets:
                scores["model"]["name"] = name
        _write(path, data)
        changed.append(path)
    _write(meta_file, meta)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for changed in relabel(Path(sys.argv[1]), sys.argv[2]):
        print(changed)
