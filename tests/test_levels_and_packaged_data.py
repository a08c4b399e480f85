"""Hierarchies of any depth, and the data sources: data directory, packaged copy, Hub."""

from __future__ import annotations

import gzip
import json

import pytest

from mteb_finegrain.cards import discover_cards, load_card
from mteb_finegrain.data import load_card_data, packaged_data_dir
from mteb_finegrain.errors import FineGrainError

from conftest import CARD, make_rows, write_jsonl

# A third, coarsest level above the conftest hierarchy (coarse -> fine).
KINGDOM = {"animal": "living", "plant": "living"}
THREE_LEVELS = "columns: {text: text}\nlevels:\n  - {name: top, column: l1}\n  - {name: mid, column: l2}\n  - {name: leaf, column: l3}\n"


def _three_level_rows(n, seed):
    return [{"text": r["text"], "l1": KINGDOM[r["coarse"]] if r["coarse"] == "animal" else "green", "l2": r["coarse"], "l3": r["fine"]} for r in make_rows(n, seed)]


@pytest.fixture
def three_level_card(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "d" / "t3" / "train.jsonl", _three_level_rows(12, 1))
    write_jsonl(tmp_path / "d" / "t3" / "test.jsonl", _three_level_rows(4, 2))
    card = tmp_path / "t3.yaml"
    card.write_text(CARD.format(name="T3", local="t3").replace("columns: {text: text, coarse: coarse, fine: fine}\n", THREE_LEVELS))
    monkeypatch.setenv("MTEB_FINEGRAIN_DATA_DIR", str(tmp_path / "d"))
    return card


def test_three_level_card_loads_every_level(three_level_card):
    data = load_card_data(load_card(three_level_card))
    assert data.level_names == ["top", "mid", "leaf"]
    assert [len(set(labels)) for labels in data.evaluation.levels] == [2, 2, 4]
    assert data.parents[1] == {"animal": "living", "plant": "green"}
    assert data.parents[2]["oak"] == "plant"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[3].update(l1="green") if rows[3]["l2"] == "animal" else rows[3].update(l1="living"), "train.jsonl:4: mid label"),
        (lambda rows: rows[5].update(**({"l2": "plant", "l1": "green"} if rows[5]["l2"] == "animal" else {"l2": "animal", "l1": "living"})), "train.jsonl:6: leaf label"),
        (lambda rows: rows[2].pop("l2"), "train.jsonl:3: missing column(s) l2"),
        (lambda rows: rows[2].update(l1=""), "train.jsonl:3: top label (column 'l1') must be a non-empty string"),
    ],
)
def test_inconsistent_levels_name_file_and_line(three_level_card, tmp_path, edit, message):
    rows = _three_level_rows(12, 1)
    edit(rows)
    write_jsonl(tmp_path / "d" / "t3" / "train.jsonl", rows)
    with pytest.raises(FineGrainError) as info:
        load_card_data(load_card(three_level_card))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ("levels: [l1]\n", "'levels' needs at least two levels"),
        ("levels: l1\n", "'levels' must be a list"),
        ("levels: [l1, l1]\n", "used twice"),
        ("levels: [{name: a}, l2]\n", "'levels' item 0 must be a column name"),
    ],
)
def test_bad_levels_are_refused(tmp_path, levels, message):
    card = tmp_path / "bad.yaml"
    card.write_text(CARD.format(name="Bad", local="bad").replace("columns: {text: text, coarse: coarse, fine: fine}\n", "columns: {text: text}\n" + levels))
    with pytest.raises(FineGrainError, match="bad.yaml") as info:
        load_card(card)
    assert message in str(info.value)


def test_gzip_split_files_give_the_same_rows_and_hash(finegrain_env):
    card = load_card(finegrain_env["card"])
    plain = load_card_data(card)
    folder = finegrain_env["data_dir"] / "tiny"
    for split in ("train", "test"):
        path = folder / f"{split}.jsonl"
        (folder / f"{split}.jsonl.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    packed = load_card_data(card)
    assert packed.content_hash == plain.content_hash
    assert packed.evaluation.texts == plain.evaluation.texts


def test_truncated_gzip_is_one_clear_error(finegrain_env):
    folder = finegrain_env["data_dir"] / "tiny"
    data = gzip.compress((folder / "train.jsonl").read_bytes())
    (folder / "train.jsonl").unlink()
    (folder / "train.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FineGrainError, match=r"train.jsonl.gz: not a complete gzip file"):
        load_card_data(load_card(finegrain_env["card"]))


def test_builtin_redistributable_cards_run_from_the_packaged_copy(monkeypatch):
    monkeypatch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    cards = {card.name: card for card in discover_cards()[0]}
    for name in ("TREC", "CLINC150", "MASSIVE", "GoEmotions"):
        data = load_card_data(cards[name])
        assert data.source == "packaged copy", name
    assert (packaged_data_dir() / "LICENSES.md").is_file()
    assert not (packaged_data_dir() / "20newsgroups").exists()


def test_unshipped_card_says_how_to_get_its_data(monkeypatch, tmp_path):
    monkeypatch.setenv("MTEB_FINEGRAIN_DATA_DIR", str(tmp_path))  # exists, but without 20newsgroups/
    card = {c.name: c for c in discover_cards()[0]}["TwentyNewsgroups"]
    with pytest.raises(FineGrainError) as info:
        load_card_data(card)
    message = str(info.value)
    assert "not packaged" in message and "qwone.com" in message and "MTEB_FINEGRAIN_DATA_DIR" in message


def test_data_directory_overrides_the_packaged_copy(monkeypatch, tmp_path):
    rows = [json.loads(line) for line in gzip.decompress((packaged_data_dir() / "trec" / "test.jsonl.gz").read_bytes()).decode().splitlines()]
    write_jsonl(tmp_path / "trec" / "test.jsonl", rows[:-1])  # one row fewer: different data
    train = gzip.decompress((packaged_data_dir() / "trec" / "train.jsonl.gz").read_bytes())
    (tmp_path / "trec" / "train.jsonl").write_bytes(train)
    card = {c.name: c for c in discover_cards()[0]}["TREC"]
    monkeypatch.delenv("MTEB_FINEGRAIN_DATA_DIR", raising=False)
    shipped = load_card_data(card)
    monkeypatch.setenv("MTEB_FINEGRAIN_DATA_DIR", str(tmp_path))
    override = load_card_data(card)
    assert override.source == "data directory" and len(override.evaluation) == len(shipped.evaluation) - 1
    assert override.content_hash != shipped.content_hash


def test_aggregate_task_holds_the_shipped_cards_only():
    import mteb

    import mteb_finegrain  # noqa: F401

    task = mteb.get_task("FineGrainHidden")
    assert set(task.cards) == {"TREC", "CLINC150", "MASSIVE", "GoEmotions"}
    assert mteb.get_task("FineGrainHiddenTwentyNewsgroups").metadata.license == "not specified"


def test_three_level_task_scores_every_level_and_reports_them(three_level_card, tiny_st, tmp_path, monkeypatch):
    import mteb

    from mteb_finegrain.report import format_table, plot_layers
    from mteb_finegrain.results import load_results
    from mteb_finegrain.task import make_task_class

    from conftest import fast_protocol

    monkeypatch.setenv("MTEB_FINEGRAIN_CACHE_DIR", str(tmp_path / "cache"))
    task = make_task_class(load_card(three_level_card))(protocol=fast_protocol(train_level=1), show_progress_bar=False)
    mteb.evaluate(tiny_st, [task], cache=mteb.ResultCache(str(tmp_path / "out")), overwrite_strategy="always", show_progress_bar=False)
    (result,) = load_results(tmp_path / "out")
    scores = result.scores
    assert scores["card"]["levels"] == ["top", "mid", "leaf"]
    assert scores["card"]["classes_per_level"] == {"top": 2, "mid": 2, "leaf": 4}
    assert scores["coarse_training_level"] == "mid"
    keys = {(r["stage"], r["level"], r["layer"], r["metric"]) for r in result.records()}
    for stage in ("pretrained", "coarse_tuned"):
        for layer in (0, 1, 2):
            for level in ("top", "mid", "leaf"):
                assert (stage, level, layer, "probe_accuracy") in keys and (stage, level, layer, "v_measure") in keys
                assert ((stage, level, layer, "within_coarse_v_measure") in keys) == (level != "top")
    main = result.lookup()[("coarse_tuned", "leaf", scores["selected_layer"]["coarse_tuned"], "probe_accuracy", 8)]
    assert scores["main_score"] == main
    table = format_table([result])
    assert "level top (coarsest, 2 classes)" in table and "level leaf (finest, 4 classes)" in table
    assert "coarse_tuned on level mid" in table
    assert plot_layers([result], tmp_path / "levels.png").stat().st_size > 10_000


def test_task_metadata_is_filled_and_says_classification():
    import mteb

    import mteb_finegrain  # noqa: F401

    for name in ("FineGrainHidden", "FineGrainHiddenTREC", "FineGrainHiddenGoEmotions", "FineGrainHiddenTwentyNewsgroups"):
        metadata = mteb.get_task(name).metadata
        assert metadata.is_filled(), name
        assert metadata.type == "Classification" and metadata.task_subtypes, name
    assert "FineGrainHiddenTREC" not in {t.metadata.name for t in mteb.get_tasks(task_types=["Clustering"])}
