import json

import pytest

from mteb_finegrain.cards import discover_cards, load_card
from mteb_finegrain.data import carve_validation, load_card_data
from mteb_finegrain.errors import FineGrainError

from conftest import CARD, make_rows, write_jsonl


def test_builtin_cards_load():
    builtin, _ = discover_cards()
    assert {c.name for c in builtin} == {"TREC", "CLINC150", "MASSIVE", "GoEmotions", "TwentyNewsgroups"}
    trec = next(c for c in builtin if c.name == "TREC")
    assert trec.splits == {"coarse_train": "train", "fewshot_pool": "train", "evaluation": "test"}
    assert trec.level_names == ["coarse", "fine"]
    assert "@inproceedings" in trec.citation
    goemotions = next(c for c in builtin if c.name == "GoEmotions")
    assert goemotions.levels == (("sentiment", "l1"), ("ekman", "l2"), ("emotion", "l3"))
    assert goemotions.sample == {}
    newsgroups = next(c for c in builtin if c.name == "TwentyNewsgroups")
    assert newsgroups.sample == {"coarse_train": 5000, "evaluation": 2048} and newsgroups.version == "2"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace("license: mit\n", ""), "missing required key(s): license"),
        (lambda s: s + "colour: blue\n", "unknown key(s): colour"),
        (lambda s: s.replace("  evaluation: test\n", ""), "needs role(s): evaluation"),
        (lambda s: s.replace("name: Tiny", "name: 'not ok'"), "'name' must be an identifier"),
        (lambda s: s.replace("coarse: coarse, ", ""), "'columns' needs coarse"),
        (lambda s: s + "  test_b: test\n", "unknown split role"),
        (lambda s: s + "sample: {fewshot_pool: 10}\n", "'sample': role 'fewshot_pool' cannot be sampled"),
        (lambda s: s + "sample: {evaluation: 0}\n", "'sample': evaluation must be a positive number of rows, got 0"),
        (lambda s: s + "sample: {evaluation: true}\n", "'sample': evaluation must be a positive number of rows, got True"),
        (lambda s: s + "sample: [evaluation]\n", "'sample' must map split roles to numbers of rows"),
    ],
)
def test_bad_cards_name_the_problem(tmp_path, edit, message):
    card = tmp_path / "bad.yaml"
    card.write_text(edit(CARD.format(name="Tiny", local="tiny")))
    with pytest.raises(FineGrainError, match="bad.yaml") as info:
        load_card(card)
    assert message in str(info.value)


def test_load_local_data(finegrain_env, monkeypatch):
    data = load_card_data(load_card(finegrain_env["card"]))
    assert data.validation_carved
    assert len(data.evaluation) == 32
    assert data.hierarchy == {"ant": "animal", "bee": "animal", "oak": "plant", "elm": "plant"}
    assert data.level_names == ["coarse", "fine"]
    assert data.source == "data directory"
    assert data.content_hash.startswith("sha256:")
    # validation is carved out of the pool (and out of coarse training: same split)
    assert len(data.fewshot_pool) + len(data.validation) == 80
    assert data.coarse_train is data.fewshot_pool


def test_carved_validation_is_stratified_disjoint_and_seeded(finegrain_env):
    data = load_card_data(load_card(finegrain_env["card"]))
    pool = data.fewshot_pool
    merged = type(pool)(pool.texts + data.validation.texts, [pool.coarse + data.validation.coarse, pool.fine + data.validation.fine], "x")
    a_pool, a_val = carve_validation(merged, seed=3)
    b_pool, b_val = carve_validation(merged, seed=3)
    assert a_val.texts == b_val.texts
    assert sorted(set(a_val.fine)) == ["ant", "bee", "elm", "oak"]
    assert len(a_pool) + len(a_val) == len(merged)
    _, c_val = carve_validation(merged, seed=4)
    assert c_val.texts != a_val.texts


def _data_error(finegrain_env, rows_train=None, rows_test=None):
    root = finegrain_env["data_dir"] / "tiny"
    if rows_train is not None:
        (root / "train.jsonl").write_text(rows_train)
    if rows_test is not None:
        (root / "test.jsonl").write_text(rows_test)
    with pytest.raises(FineGrainError) as info:
        load_card_data(load_card(finegrain_env["card"]))
    return str(info.value)


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_empty_text_names_file_and_line(finegrain_env):
    rows = make_rows(3, seed=1)
    rows[4]["text"] = "   "
    message = _data_error(finegrain_env, rows_train=_jsonl(rows))
    assert "train.jsonl:5: empty text" in message


def test_missing_column_names_file_and_line(finegrain_env):
    rows = make_rows(3, seed=1)
    del rows[2]["fine"]
    assert "train.jsonl:3: missing column(s) fine" in _data_error(finegrain_env, rows_train=_jsonl(rows))


def test_a_text_may_hold_line_separators_other_than_newline(finegrain_env):
    # JSON allows U+2028 and U+0085 unescaped inside strings; str.splitlines() would cut there.
    rows = make_rows(3, seed=1)
    rows[0]["text"] += " \u2028 \x85 end"
    raw = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert "\u2028" in raw and "\x85" in raw
    (finegrain_env["data_dir"] / "tiny" / "train.jsonl").write_text(raw, encoding="utf-8")
    data = load_card_data(load_card(finegrain_env["card"]))
    assert any("\u2028" in t and "\x85" in t for t in data.fewshot_pool.texts + data.validation.texts)


def test_fine_label_under_two_coarse_labels(finegrain_env):
    rows = make_rows(3, seed=1)
    rows[6] = {"text": "ant0 ant1", "coarse": "plant", "fine": "ant"}
    message = _data_error(finegrain_env, rows_train=_jsonl(rows))
    assert "fine label 'ant'" in message and "exactly one coarse label" in message and "train.jsonl:7" in message


def test_evaluation_label_missing_from_pool(finegrain_env):
    rows = [r for r in make_rows(5, seed=1) if r["fine"] != "elm"]
    message = _data_error(finegrain_env, rows_train=_jsonl(rows))
    assert "never occur in the few-shot pool" in message and "elm" in message


def test_missing_data_dir_and_split(finegrain_env, monkeypatch, tmp_path):
    (finegrain_env["data_dir"] / "tiny" / "test.jsonl").unlink()
    assert "test.jsonl: split file not found" in _data_error(finegrain_env)
    monkeypatch.setenv("MTEB_FINEGRAIN_DATA_DIR", str(tmp_path / "nowhere"))
    assert "data directory does not exist" in _data_error(finegrain_env)


def test_hierarchy_card_without_coarse_column(tmp_path, monkeypatch):
    rows = [{"text": r["text"], "label": r["fine"]} for r in make_rows(4, seed=1)]
    write_jsonl(tmp_path / "d" / "h" / "train.jsonl", rows)
    write_jsonl(tmp_path / "d" / "h" / "test.jsonl", rows[:8])
    card = tmp_path / "h.yaml"
    text = CARD.format(name="H", local="h").replace("columns: {text: text, coarse: coarse, fine: fine}", "columns: {text: text, fine: label}\nhierarchy: {ant: animal, bee: animal, oak: plant, elm: plant}")
    card.write_text(text)
    monkeypatch.setenv("MTEB_FINEGRAIN_DATA_DIR", str(tmp_path / "d"))
    data = load_card_data(load_card(card))
    assert set(data.evaluation.coarse) == {"animal", "plant"}


def test_hub_loading_path_converts_class_labels(tmp_path, monkeypatch):
    """The hub path (used when no local data) maps ClassLabel ids to names and validates rows."""
    import datasets

    from mteb_finegrain import data as data_module

    features = datasets.Features({"text": datasets.Value("string"), "coarse": datasets.ClassLabel(names=["animal", "plant"]), "fine": datasets.ClassLabel(names=["ant", "bee", "elm", "oak"])})
    rows = make_rows(4, seed=1)
    table = {"text": [r["text"] for r in rows], "coarse": [["animal", "plant"].index(r["coarse"]) for r in rows], "fine": [["ant", "bee", "elm", "oak"].index(r["fine"]) for r in rows]}
    calls = []

    def fake_load_dataset(path, revision, split):
        calls.append((path, revision, split))
        return datasets.Dataset.from_dict(table, features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    card = tmp_path / "hub.yaml"
    card.write_text(CARD.format(name="Hub", local="hub") + "hub: {path: org/tiny, revision: abc123}\n")
    loaded = load_card_data(load_card(card))
    assert ("org/tiny", "abc123", "test") in calls
    assert set(loaded.evaluation.fine) == {"ant", "bee", "elm", "oak"}
    assert loaded.source == "hub"
    assert data_module.data_dir() is None
    # The same rows from a local folder give the same data hash.
    write_jsonl(tmp_path / "d" / "hub" / "train.jsonl", rows)
    write_jsonl(tmp_path / "d" / "hub" / "test.jsonl", rows)
    monkeypatch.setenv("MTEB_FINEGRAIN_DATA_DIR", str(tmp_path / "d"))
    assert load_card_data(load_card(card)).content_hash == loaded.content_hash


def test_one_bad_user_card_is_skipped_not_fatal(tmp_path, monkeypatch):
    (tmp_path / "good.yaml").write_text(CARD.format(name="Good", local="good"))
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    (tmp_path / "twin.yaml").write_text(CARD.format(name="TREC", local="x"))  # a built-in name
    monkeypatch.setenv("MTEB_FINEGRAIN_TASK_PATH", str(tmp_path))
    with pytest.raises(FineGrainError, match="bad.yaml: not valid YAML"):
        discover_cards()
    skipped = []
    builtin, user = discover_cards(skipped=skipped)
    assert [c.name for c in user] == ["Good"] and "TREC" in {c.name for c in builtin}
    assert [str(e).split(": ")[0].rsplit("/", 1)[-1] for e in skipped] == ["bad.yaml", "twin.yaml"]
    assert "already used by" in str(skipped[1])


def _sampled_card(finegrain_env, sample: str):
    card = finegrain_env["card"]
    card.write_text(card.read_text() + f"sample: {sample}\n")
    return load_card(card)


def test_card_sample_is_stratified_seeded_and_in_file_order(finegrain_env):
    card = _sampled_card(finegrain_env, "{evaluation: 16, coarse_train: 20}")
    assert card.sample == {"evaluation": 16, "coarse_train": 20}
    data = load_card_data(card, seed=42)
    assert len(data.evaluation) == 16 and len(data.coarse_train) == 20
    assert {label: data.evaluation.fine.count(label) for label in set(data.evaluation.fine)} == {"ant": 4, "bee": 4, "elm": 4, "oak": 4}
    assert data.evaluation.lines == sorted(data.evaluation.lines)  # file order kept
    # the few-shot pool and the validation slice are not sampled; coarse training takes a sample of the pool
    assert len(data.fewshot_pool) + len(data.validation) == 80
    assert data.coarse_train is not data.fewshot_pool and set(data.coarse_train.texts) <= set(data.fewshot_pool.texts)
    assert load_card_data(card, seed=42).evaluation.texts == data.evaluation.texts
    assert load_card_data(card, seed=7).evaluation.texts != data.evaluation.texts


def test_card_sample_larger_than_the_split_keeps_it_whole(finegrain_env):
    data = load_card_data(_sampled_card(finegrain_env, "{evaluation: 1000}"))
    assert len(data.evaluation) == 32


def test_card_sample_that_cannot_be_stratified_names_card_and_role(finegrain_env):
    card = _sampled_card(finegrain_env, "{evaluation: 2}")  # 4 fine classes
    with pytest.raises(FineGrainError, match=r"tiny.yaml: sample: evaluation: cannot draw a stratified sample of 2 of 32 rows"):
        load_card_data(card)
