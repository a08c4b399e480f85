"""Property-based fuzzing of everything a user writes: cards, JSON Lines rows, result files (and
the result schema they follow), leaderboard submissions.

The property, for every generated input: either success (and then the loaded object is sound),
or one ``FineGrainError`` whose message names the offending file; never another exception (a
traceback for the user), never a partial write. Cases per property: ``MTEB_FINEGRAIN_FUZZ_EXAMPLES``
(default 200, what CI runs); docs/reliability.md says how many all passed locally.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import string
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from leaderboard_fixtures import XSS_NAME, as_written_by, edit_results, subset_scores, tree_digest, write_submission  # noqa: E402
from mteb_finegrain.cards import load_card  # noqa: E402
from mteb_finegrain.data import load_card_data  # noqa: E402
from mteb_finegrain.errors import FineGrainError  # noqa: E402
from mteb_finegrain.protocol import PROTOCOL_VERSION  # noqa: E402
from mteb_finegrain.schema import CardInfo, ModelInfo, Record, Runtime, Settings, SubsetScores, read_subset  # noqa: E402

EXAMPLES = int(os.environ.get("MTEB_FINEGRAIN_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# Values of every JSON/YAML type, including the awkward ones.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "\t\n", "<script>alert(1)</script>", XSS_NAME, "/root/.cache/x", "file:///home/u/m", "ñ\u2028\x85", "a" * 5000]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=8)


def _one_line_naming(error: FineGrainError, *names: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    assert any(name in message for name in names), message


# -- cards ---------------------------------------------------------------------------------------

BASE_CARD = {
    "name": "Fuzz",
    "description": "A fuzzed card.",
    "reference": "https://example.org/fuzz",
    "license": "mit",
    "citation": "@misc{fuzz, title = {Fuzz}, year = {2026}}",
    "local": "fuzz",
    "columns": {"text": "text", "coarse": "coarse", "fine": "fine"},
    "splits": {"coarse_train": "train", "fewshot_pool": "train", "evaluation": "test"},
}
CARD_KEYS = sorted(BASE_CARD) + ["hub", "hierarchy", "levels", "download", "version", "languages", "domains", "date", "colour"]
card_edits = st.lists(st.tuples(st.sampled_from(CARD_KEYS), st.one_of(st.just("<delete>"), values)), max_size=4)


@FUZZ
@given(edits=card_edits, raw=st.one_of(st.none(), st.text(max_size=200)))
def test_fuzz_cards(tmp_path_factory, edits, raw):
    from mteb_finegrain.task import make_task_class

    folder = tmp_path_factory.mktemp("card")
    card = dict(BASE_CARD)
    for key, value in edits:
        if value == "<delete>":
            card.pop(key, None)
        else:
            card[key] = value
    path = folder / "fuzz.yaml"
    path.write_text(raw if raw is not None else yaml.safe_dump(card, allow_unicode=True), encoding="utf-8")
    try:
        loaded = load_card(path)
        make_task_class(loaded)  # what mteb's TaskMetadata refuses is ours to report too
    except FineGrainError as error:
        _one_line_naming(error, "fuzz.yaml")
        event("card refused")
        return
    event("card accepted")
    assert loaded.name and len(loaded.levels) >= 2


# -- JSON Lines rows -----------------------------------------------------------------------------

THREE_LEVEL_CARD = dict(BASE_CARD, columns={"text": "text"}, levels=[{"name": "top", "column": "l1"}, {"name": "mid", "column": "l2"}, {"name": "leaf", "column": "l3"}])
labels = st.one_of(st.sampled_from(["a", "b", "c"]), st.sampled_from(["", None, 3, ["a"], "ä\u2028"]))
good_row = st.builds(
    lambda text, leaf: {"text": text, "l1": "x" if leaf in "ab" else "y", "l2": "p" if leaf == "a" else "q", "l3": leaf},
    st.sampled_from(["a plain text", "ünïcödé ✓", "line\u2028separator", "x" * 100_000]),
    st.sampled_from(["a", "b", "c"]),
)
bad_row = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(st.text(max_size=20), st.sampled_from(["", "   ", "\t"]), st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2)),
        "l1": labels,
        "l2": labels,
        "l3": labels,
        "extra": values,
    },
)
raw_line = st.one_of(
    st.sampled_from(['{"text": "a", "text": "b", "l1": "x", "l2": "p", "l3": "a"}', "[1, 2]", "not json", '"a string"', "{", "null", "\ufeff{}"]),
    st.text(max_size=40),
)
lines = st.lists(st.one_of(good_row.map(json.dumps), good_row.map(lambda r: json.dumps(r, ensure_ascii=False)), bad_row.map(lambda r: json.dumps(r, allow_nan=True)), raw_line), min_size=0, max_size=12)


@FUZZ
@given(train=lines, test=lines)
def test_fuzz_jsonl_rows(tmp_path_factory, monkeypatch_module, train, test):
    folder = tmp_path_factory.mktemp("rows")
    (folder / "fuzz").mkdir()
    (folder / "fuzz" / "train.jsonl").write_text("\n".join(train), encoding="utf-8")
    (folder / "fuzz" / "test.jsonl").write_text("\n".join(test), encoding="utf-8")
    card_path = folder / "fuzz.yaml"
    card_path.write_text(yaml.safe_dump(THREE_LEVEL_CARD), encoding="utf-8")
    monkeypatch_module.setenv("MTEB_FINEGRAIN_DATA_DIR", str(folder))
    try:
        data = load_card_data(load_card(card_path))
    except FineGrainError as error:
        _one_line_naming(error, "train.jsonl", "test.jsonl", "fuzz.yaml")
        event("rows refused")
        return
    event("rows accepted")
    splits = (data.coarse_train, data.fewshot_pool, data.validation, data.evaluation)
    for split in splits:
        assert all(isinstance(t, str) and t.strip() for t in split.texts)
        assert all(isinstance(label, str) and label for labels in split.levels for label in labels)
    for depth in (1, 2):  # every label has exactly one parent, in every split
        pairs = {(labels[depth][i], labels[depth - 1][i]) for labels in (s.levels for s in splits) for i in range(len(labels[0]))}
        children = [child for child, _ in pairs]
        assert len(children) == len(set(children))
    assert set(data.evaluation.fine) <= set(data.fewshot_pool.fine)


@pytest.fixture(scope="module")
def monkeypatch_module():
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


# -- result files and leaderboard submissions ----------------------------------------------------

PATHS = [
    ("scores",), ("task_name",), ("scores", "test"), ("scores", "test", 0), ("scores", "test", 0, "records"),
    ("scores", "test", 0, "records", 0), ("scores", "test", 0, "records", 0, "value"), ("scores", "test", 0, "records", 0, "std"),
    ("scores", "test", 0, "records", 0, "layer"), ("scores", "test", 0, "records", 0, "level"), ("scores", "test", 0, "records", 0, "stage"),
    ("scores", "test", 0, "records", 0, "metric"), ("scores", "test", 0, "records", 0, "shots"), ("scores", "test", 0, "records", 5, "value"),
    ("scores", "test", 0, "main_score"), ("scores", "test", 0, "selected_layer"), ("scores", "test", 0, "selected_layer", "coarse_tuned"),
    ("scores", "test", 0, "validation_probe_accuracy"), ("scores", "test", 0, "card"), ("scores", "test", 0, "card", "name"),
    ("scores", "test", 0, "card", "levels"), ("scores", "test", 0, "card", "data"), ("scores", "test", 0, "model"), ("scores", "test", 0, "model", "layers"),
    ("scores", "test", 0, "model", "name"), ("scores", "test", 0, "settings"), ("scores", "test", 0, "settings", "shots"),
    ("scores", "test", 0, "protocol_version"), ("scores", "test", 0, "hf_subset"),
    # Free-form places: most edits here are accepted, so markup reaches the built page.
    ("scores", "test", 0, "card", "note"), ("scores", "test", 0, "model", "note"), ("evaluation_time",), ("scores", "test", 0, "main_score_definition"),
]
META_KEYS = ["name", "revision", "n_parameters", "reference", "framework"]
edits = st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(st.just("<delete>"), values, st.sampled_from([math.nan, math.inf, -1.5, 2.0, 99, -7, "</script><script>alert(1)</script>"]))), min_size=1, max_size=3)
meta_edits = st.lists(st.tuples(st.sampled_from(META_KEYS), st.one_of(st.just("<delete>"), values)), max_size=2)


def _apply(document, path, value) -> None:
    target = document
    for key in path[:-1]:
        try:
            target = target[key]
        except (KeyError, IndexError, TypeError):
            return  # the path is gone (an earlier edit replaced a parent): nothing to edit
    try:
        if value == "<delete>":
            del target[path[-1]]
        else:
            target[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass


@pytest.fixture(scope="module")
def valid_submission(tmp_path_factory):
    root = write_submission(tmp_path_factory.mktemp("valid"), cards=("TREC",), n_layers=3, model=XSS_NAME)
    return root


@FUZZ
@given(changes=edits, meta_changes=meta_edits)
def test_fuzz_result_files_and_submissions(tmp_path_factory, monkeypatch_module, valid_submission, changes, meta_changes):
    from mteb_finegrain.leaderboard import add_submission, build_leaderboard
    from mteb_finegrain.report import format_table, json_records
    from mteb_finegrain.results import load_results

    monkeypatch_module.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    monkeypatch_module.delenv("MTEB_FINEGRAIN_TASK_PATH", raising=False)
    work = tmp_path_factory.mktemp("sub")
    submission = work / "sub"
    shutil.copytree(valid_submission, submission)
    (result,) = submission.rglob("FineGrainHiddenTREC.json")
    document = json.loads(result.read_text())
    for path, value in changes:
        _apply(document, path, value)
    result.write_text(json.dumps(document, allow_nan=True), encoding="utf-8")
    meta_file = result.parent / "model_meta.json"
    meta = json.loads(meta_file.read_text())
    for key, value in meta_changes:
        _apply(meta, (key,), value)
    meta_file.write_text(json.dumps(meta, allow_nan=True), encoding="utf-8")

    # Reading results back (report): one clear error, or results that are what the file holds.
    try:
        results = load_results(submission)
        format_table(results)
        json_records(results)
    except FineGrainError as error:
        _one_line_naming(error, "FineGrainHiddenTREC.json")
    else:
        assert all(result.parsed.to_scores_dict() == result.scores for result in results)

    # Adding to a leaderboard that already holds one entry: accepted, or refused with nothing changed.
    board = work / "board"
    add_submission(write_submission(work / "first", cards=("TREC",), n_layers=3, model="org/first"), board, hashes=_HASHES)
    before = tree_digest(board)
    try:
        add_submission(submission, board, hashes=_HASHES)
    except FineGrainError as error:
        assert "submission rejected" in str(error) or "already" in str(error), str(error)
        assert tree_digest(board) == before
        event("submission refused")
        return
    event("submission accepted")
    build_leaderboard(board)
    page = (board / "index.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page and "<img src=x" not in page


_HASHES = None


@pytest.fixture(autouse=True, scope="module")
def _shared_hashes():
    global _HASHES
    from mteb_finegrain.leaderboard.validate import DataHashes

    _HASHES = DataHashes()  # the packaged data is hashed once for all examples
    yield


# -- the result schema ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
WHERE = "FineGrainHiddenTREC.json: split 'test' subset 'default'"


def test_committed_results_read_back_key_for_key():
    files = sorted((REPO / "leaderboard" / "results").rglob("FineGrainHidden*.json"))
    if not files:
        pytest.skip("no leaderboard results in this checkout")
    for path in files:
        for i, scores in enumerate(json.loads(path.read_text(encoding="utf-8"))["scores"]["test"]):
            written = read_subset(scores, path, index=i).to_scores_dict()
            assert json.dumps(written) == json.dumps(scores), path  # same keys, order and values


@pytest.mark.parametrize("version", sorted({"1.0", "1.1", "2.0", "3.0", PROTOCOL_VERSION}))
def test_results_of_every_protocol_version_read(tmp_path, monkeypatch, version):
    from mteb_finegrain.report import format_table, json_records
    from mteb_finegrain.results import load_results

    monkeypatch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    scores = as_written_by(subset_scores("TREC", model="org/m", revision="r", n_layers=3), version)
    assert json.dumps(SubsetScores.read(scores, where=WHERE).to_scores_dict()) == json.dumps(scores)
    root = write_submission(tmp_path, cards=("TREC",), n_layers=3, model="org/m", revision="r")
    edit_results(root, lambda s: (s.clear(), s.update(scores)))
    (result,) = load_results(root)
    assert result.parsed.protocol_version == version and result.records()
    assert result.levels == ([None] if version.startswith("1.") else ["coarse", "fine"])
    table = format_table([result])
    assert f"protocol={version}" in table and ("level coarse (coarsest" in table) != version.startswith("1.")
    assert {r["level"] for r in json_records([result]) if "split" not in r} == set(result.levels)  # representation rows have no level


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _or_none(check):
    return lambda value: value is None or check(value)


def _list_of(check, empty: bool = True):
    return lambda value: isinstance(value, list) and (empty or bool(value)) and all(check(x) for x in value)


def _dict_of(check):
    return lambda value: isinstance(value, dict) and all(check(x) for x in value.values())


# A field of the schema -> (required, what a value must be to fit it).
FIELDS = {
    ("selected_layer_probe_accuracy",): (True, _is_number),
    ("main_score_definition",): (True, lambda v: isinstance(v, str)),
    ("protocol_version",): (True, lambda v: isinstance(v, str)),
    ("coarse_training_level",): (False, _or_none(lambda v: isinstance(v, str))),
    ("main_score",): (False, _or_none(_is_number)),
    ("languages",): (False, _or_none(_list_of(lambda v: isinstance(v, str)))),
    ("records", 0, "stage"): (True, lambda v: isinstance(v, str)),
    ("records", 0, "level"): (False, _or_none(lambda v: isinstance(v, str))),
    ("records", 0, "layer"): (True, _is_int),
    ("records", 0, "shots"): (True, _or_none(_is_int)),
    ("records", 0, "value"): (True, _is_number),
    ("records", 0, "std"): (True, _is_number),
    ("selected_layer", "coarse_tuned"): (False, _is_int),
    ("validation_probe_accuracy", "pretrained", "0"): (False, _is_number),
    ("card", "name"): (True, lambda v: isinstance(v, str)),
    ("card", "levels"): (False, _or_none(_list_of(lambda v: isinstance(v, str), empty=False))),
    ("card", "classes_per_level"): (False, _or_none(_dict_of(_is_int))),
    ("card", "sizes"): (True, _dict_of(_is_int)),
    ("model", "layers"): (True, _list_of(_is_int)),
    ("model", "hidden_states"): (True, lambda v: isinstance(v, bool)),
    ("model", "revision"): (True, _or_none(lambda v: isinstance(v, str))),
    ("settings", "main_shots"): (True, _is_int),
    ("settings", "layers"): (True, lambda v: v == "all" or _list_of(_is_int)(v)),
    ("settings", "probe_warm_start"): (False, _or_none(lambda v: isinstance(v, bool))),
    ("settings", "probe_max_iter"): (False, _or_none(_is_int)),
    ("settings", "validation_fraction"): (False, _or_none(_is_number)),
    ("settings", "coarse_training", "learning_rate"): (True, _is_number),
    ("runtime", "torch_threads"): (True, _is_int),
    ("runtime", "embeddings", "pretrained", "cached"): (True, lambda v: isinstance(v, bool)),
    ("runtime", "convergence_warnings"): (False, _or_none(_dict_of(_is_int))),
    ("truncation", "evaluation", "truncated"): (True, _or_none(_is_int)),
}


def _field_name(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


@pytest.fixture(scope="module")
def valid_scores():
    return subset_scores("TREC", model="org/m", revision="r", n_layers=3, data_hash="sha256:" + "0" * 64)


@FUZZ
@given(path=st.sampled_from(sorted(FIELDS, key=str)), value=st.one_of(st.just("<delete>"), values, st.sampled_from([math.nan, 0, 1.5, "all", [], [0, 1], True])))
def test_fuzz_schema_refuses_exactly_the_wrong_types(valid_scores, path, value):
    scores = json.loads(json.dumps(valid_scores))
    _apply(scores, path, value)
    required, fits = FIELDS[path]
    ok = not required if value == "<delete>" else fits(value)
    try:
        parsed = SubsetScores.read(scores, where=WHERE)
    except FineGrainError as error:
        event("refused")
        assert not ok, str(error)
        _one_line_naming(error, WHERE)
        assert _field_name(path) in str(error), str(error)
        return
    event("accepted")
    assert ok, f"{_field_name(path)} = {value!r} was accepted"
    assert parsed.to_scores_dict() == scores


json_keys = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)
records = st.lists(
    st.fixed_dictionaries(
        {
            "stage": st.sampled_from(["pretrained", "coarse_tuned"]),
            "level": st.one_of(st.none(), st.sampled_from(["coarse", "fine"])),
            "layer": st.integers(min_value=-1, max_value=48),
            "metric": st.sampled_from(["v_measure", "ari", "probe_accuracy", "setfit_accuracy"]),
            "shots": st.one_of(st.none(), st.integers(min_value=1, max_value=64)),
            "value": st.one_of(st.floats(min_value=-1, max_value=1), st.sampled_from([0, 1])),
            "std": st.floats(min_value=0, max_value=1),
        },
        optional={"mode": st.just("setfit")},
    ).map(lambda r: {k: r[k] for k in Record.model_fields if k in r}),  # in the order the writer gives a record
    max_size=6,
)


BLOCKS = {"": SubsetScores, "card": CardInfo, "model": ModelInfo, "settings": Settings, "runtime": Runtime}


@FUZZ
@given(records=records, extras=st.lists(st.tuples(st.sampled_from(["", "card", "model", "settings", "runtime"]), json_keys, values), max_size=3))
def test_fuzz_schema_round_trip(valid_scores, records, extras):
    """Any valid subset, with keys a later protocol might add, is written back as it was read."""
    scores = json.loads(json.dumps(valid_scores))
    scores["records"] = records
    for parent, key, value in extras:
        target = scores[parent] if parent else scores
        if key not in BLOCKS[parent].model_fields and key not in target:
            target[key] = value  # a new key, not a known field with a wrong type
    text = json.dumps(scores, allow_nan=True)
    again = SubsetScores.read(json.loads(text), where=WHERE)
    assert json.dumps(again.to_scores_dict(), allow_nan=True) == text
    assert [r.key for r in again.records] == [(r["stage"], r["level"], r["layer"], r["metric"], r["shots"]) for r in records]
