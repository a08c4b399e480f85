"""benchmarks/README.md's figures are what benchmarks/results/*.json hold (no model needed)."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_benchmarks_readme_figures_match_the_recorded_results():
    check = subprocess.run([sys.executable, str(BENCHMARKS / "make_readme.py"), "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_check_fails_when_a_recorded_figure_changes(tmp_path):
    import json
    import shutil

    copy = tmp_path / "benchmarks"
    shutil.copytree(BENCHMARKS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    result = sorted((copy / "results").glob("*.json"))[0]
    data = json.loads(result.read_text())
    case = next(iter(data["cases"].values()))
    figure = case["figures"][0]
    figure["value"] = "changed" if isinstance(figure["value"], str) else (not figure["value"] if isinstance(figure["value"], bool) else figure["value"] + 1)
    result.write_text(json.dumps(data, indent=2))
    check = subprocess.run([sys.executable, str(copy / "make_readme.py"), "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1, check.stdout + check.stderr
