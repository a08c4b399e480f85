"""The protocol version must change whenever a default changes (scores are compared by version)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import pytest

from mteb_finegrain.errors import FineGrainError
from mteb_finegrain.protocol import PROTOCOL_VERSION, CoarseTraining, Protocol

# sha256 (first 16 hex digits) of the default settings as results record them, per version.
# Changing a default fails this test: bump PROTOCOL_VERSION, add its fingerprint here and say
# what changed in CHANGELOG.md's protocol section.
DEFAULTS_FINGERPRINT = {
    "1.0": "872928a05b1cbac8",
    "1.1": "a43fcd05ecd19924",
    "2.0": "14e237dfd02ccda8",
    "3.0": "d3ebf6b3f42eff36",
    "3.1": "f1a297c1f5518ea5",
    "4.0": "686712be659e8dc7",
}
# What each version scores besides its settings: a change of a metric list is a protocol change too.
METRICS_BY_VERSION = {
    "4.0": (("v_measure", "ami", "ari", "cluster_accuracy"), ("within_coarse_v_measure", "within_coarse_ami"), ("probe_accuracy", "probe_f1_macro")),
}
# The settings protocol 4.0 added: several coarse-training runs with a seed of their own, and
# validation probes with seeds disjoint from the scoring ones. Without them, 4.0's settings are 3.1's.
ADDED_IN_4_0 = {"top": ("coarse_seeds", "validation_probe_seed_list", "coarse_seed_list"), "coarse_training": ("seed",)}
# The settings protocol 3.1 added to the record, at the values the code has always used: no
# number changed. Without them, 3.1's defaults are 3.0's.
RECORDED_IN_3_1 = {
    "top": ("probe_max_iter", "probe_tol", "probe_c", "probe_standardize", "kmeans_l2_normalize", "kmeans_n_init", "kmeans_max_iter", "kmeans_tol", "validation_fraction"),
    "coarse_training": ("max_grad_norm",),
    "setfit": ("num_epochs",),
}


def _fingerprint(protocol: Protocol) -> str:
    return hashlib.sha256(json.dumps(protocol.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def test_defaults_match_the_protocol_version():
    assert PROTOCOL_VERSION in DEFAULTS_FINGERPRINT, f"no fingerprint recorded for protocol {PROTOCOL_VERSION}"
    assert _fingerprint(Protocol()) == DEFAULTS_FINGERPRINT[PROTOCOL_VERSION], (
        f"a default of protocol {PROTOCOL_VERSION} changed: bump PROTOCOL_VERSION"
    )


def _without(settings: dict, added: dict) -> str:
    for block, names in added.items():
        for name in names:
            del (settings if block == "top" else settings[block])[name]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def test_protocol_4_0_settings_are_3_1s_plus_the_runs_and_the_validation_seeds():
    assert _without(Protocol().to_dict(), ADDED_IN_4_0) == DEFAULTS_FINGERPRINT["3.1"]
    # And 3.1 only recorded settings 3.0 already used.
    assert _without(_without_dict(Protocol().to_dict(), ADDED_IN_4_0), RECORDED_IN_3_1) == DEFAULTS_FINGERPRINT["3.0"]


def _without_dict(settings: dict, added: dict) -> dict:
    _without(settings, added)
    return settings


def test_the_metrics_match_the_protocol_version():
    from mteb_finegrain.protocol import CLUSTERING_METRICS, PROBE_METRICS, WITHIN_PARENT_METRICS

    assert (CLUSTERING_METRICS, WITHIN_PARENT_METRICS, PROBE_METRICS) == METRICS_BY_VERSION[PROTOCOL_VERSION], "a metric changed: bump PROTOCOL_VERSION"


def test_coarse_training_and_layer_choice_have_seeds_of_their_own():
    protocol = Protocol(seed=7, coarse_training=CoarseTraining(seed=100), coarse_seeds=2)
    assert protocol.coarse_seed_list == [100, 101]
    assert protocol.probe_seed_list == [7, 8, 9, 10, 11]
    assert protocol.validation_probe_seed_list == [12, 13, 14, 15, 16]
    assert not set(protocol.probe_seed_list) & set(protocol.validation_probe_seed_list)
    with pytest.raises(FineGrainError, match="coarse_seeds must be a positive integer"):
        Protocol(coarse_seeds=0)
    with pytest.raises(FineGrainError, match="coarse_training.seed must be an integer"):
        Protocol(coarse_training=CoarseTraining(seed="1"))


def test_every_setting_is_recorded():
    settings = Protocol().to_dict()
    assert {f.name for f in dataclasses.fields(Protocol)} <= set(settings)
    assert settings["coarse_training"] == dataclasses.asdict(Protocol().coarse_training)
    assert settings["setfit"] == dataclasses.asdict(Protocol().setfit)
    assert set(Protocol().clustering_options()) | set(Protocol().probe_options()) <= set(settings)


def test_each_version_has_its_own_defaults():
    fingerprints = list(DEFAULTS_FINGERPRINT.values())
    assert len(set(fingerprints)) == len(fingerprints)


def test_a_changed_setting_changes_the_fingerprint():
    changed = Protocol(setfit=dataclasses.replace(Protocol().setfit, max_steps=Protocol().setfit.max_steps + 1))
    assert _fingerprint(changed) != _fingerprint(Protocol())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stages": ("pretrained", "finetuned")}, "stages must be a non-empty subset"),
        ({"pooling": "max"}, "pooling must be 'mean', 'cls' or 'model', got 'max'"),
        ({"main_shots": 3}, "main_shots 3 must be one of shots"),
        ({"probe_seeds": 0}, "probe_seeds must be a positive integer, got 0"),
        ({"train_level": "top"}, "train_level must be an integer level index"),
        ({"probe_max_iter": 0}, "probe_max_iter must be a positive integer, got 0"),
        ({"kmeans_n_init": True}, "kmeans_n_init must be a positive integer, got True"),
        ({"probe_tol": -1.0}, "probe_tol must be a positive number, got -1.0"),
        ({"probe_c": "1"}, "probe_c must be a positive number, got '1'"),
        ({"kmeans_l2_normalize": 1}, "kmeans_l2_normalize must be True or False, got 1"),
        ({"validation_fraction": 1.0}, "validation_fraction must be a number between 0 and 1 (exclusive), got 1.0"),
        ({"coarse_training": CoarseTraining(max_grad_norm=0.0)}, "coarse_training.max_grad_norm must be positive, got 0.0"),
    ],
)
def test_invalid_settings_name_the_value(kwargs, message):
    with pytest.raises(FineGrainError, match=re.escape(message)):
        Protocol(**kwargs)


def test_the_validation_fraction_is_the_carved_share(finegrain_env):
    from mteb_finegrain.cards import load_card
    from mteb_finegrain.data import load_card_data
    from mteb_finegrain.errors import FineGrainError

    card = load_card(finegrain_env["card"])  # no validation split: it is carved from the pool
    default = load_card_data(card)
    assert default.validation.texts == load_card_data(card, validation_fraction=Protocol().validation_fraction).validation.texts
    assert len(default.validation) == 4 * 2  # 10% of each fine class's 20 rows
    larger = load_card_data(card, validation_fraction=0.25)
    assert len(larger.validation) == 4 * 5 and len(larger.fewshot_pool) == 4 * 15
    with pytest.raises(FineGrainError, match="validation fraction must be between 0 and 1 \\(exclusive\\), got 0"):
        load_card_data(card, validation_fraction=0)


def test_train_level_names_a_level_of_the_card():
    assert Protocol().train_level_name(["sentiment", "ekman", "emotion"]) == "sentiment"
    assert Protocol(train_level=-1).train_level_name(["coarse", "fine"]) == "fine"
    with pytest.raises(FineGrainError, match="train_level 3 is out of range for a card with 3 levels"):
        Protocol(train_level=3).train_level_name(["a", "b", "c"])


def test_every_imported_third_party_module_is_a_declared_dependency():
    """The package must not rely on what happens to arrive with another library."""
    import ast
    import re
    import sys
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    module_of = {"scikit_learn": "sklearn", "pyyaml": "yaml", "sentence_transformers": "sentence_transformers"}

    def modules(requirements: list[str]) -> set[str]:
        names = {re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower().replace("-", "_") for dep in requirements}
        return {module_of.get(name, name) for name in names}

    provided = modules(project["dependencies"])
    # An optional extra's modules may be imported by the one part that needs them (the sweep).
    sweep_extra = modules(project["optional-dependencies"]["sweep"])

    def allowed(path: Path) -> set[str]:
        parts = path.relative_to(root).with_suffix("").parts
        return provided | (sweep_extra if parts[:2] == ("mteb_finegrain", "sweep") else set())

    missing = set()
    for path in [*(root / "mteb_finegrain").rglob("*.py"), root / "mteb_finegrain_autoload.py"]:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
        third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("mteb_finegrain", "mteb_finegrain_autoload")}
        missing |= {f"{path.relative_to(root)}: {m}" for m in third_party - allowed(path)}
    assert missing == set()


def test_leaderboard_code_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, mteb_finegrain.leaderboard.cli; print(sorted(m for m in ('torch', 'mteb', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_importing_the_task_module_before_mteb_still_registers_the_tasks():
    import subprocess
    import sys

    code = "from mteb_finegrain.task import make_task_class; import mteb; print(mteb.get_task('FineGrainHiddenTREC').metadata.name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "FineGrainHiddenTREC"
