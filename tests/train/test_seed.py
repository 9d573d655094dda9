"""Seed selection from oasst1-format messages: each selection rule, both file formats, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backforth.train.seed import (
    SEED_FIELDS,
    SeedError,
    build_seed,
    load_oasst_messages,
    load_seed,
    select_seed_pairs,
    select_seed_pairs_with_stats,
    write_seed,
)

# oasst1's message schema as published on the hub (dataset_info features).
DETOXIFY = pa.struct([(k, pa.float64()) for k in (
    "toxicity", "severe_toxicity", "obscene", "identity_attack", "insult", "threat",
    "sexual_explicit")])
SCHEMA = pa.schema([
    ("message_id", pa.string()),
    ("parent_id", pa.string()),
    ("user_id", pa.string()),
    ("created_date", pa.string()),
    ("text", pa.string()),
    ("role", pa.string()),
    ("lang", pa.string()),
    ("review_count", pa.int32()),
    ("review_result", pa.bool_()),
    ("deleted", pa.bool_()),
    ("rank", pa.int32()),
    ("synthetic", pa.bool_()),
    ("model_name", pa.string()),
    ("detoxify", DETOXIFY),
    ("message_tree_id", pa.string()),
    ("tree_state", pa.string()),
    ("emojis", pa.struct([("name", pa.list_(pa.string())), ("count", pa.list_(pa.int32()))])),
    ("labels", pa.struct([("name", pa.list_(pa.string())), ("value", pa.list_(pa.float64())),
                          ("count", pa.list_(pa.int32()))])),
])

_clock = iter(range(10_000))


def msg(mid: str, tree: str, parent: str | None, role: str, text: str, *, lang: str = "en",
        rank: int | None = None, deleted: bool = False, review_result: bool | None = True) -> dict:
    """One message row with every oasst1 column filled the way the hub export fills them."""
    return {
        "message_id": mid, "parent_id": parent, "user_id": f"user-{mid}",
        "created_date": f"2023-02-05T{next(_clock):06d}", "text": text, "role": role,
        "lang": lang, "review_count": 3, "review_result": review_result, "deleted": deleted,
        "rank": rank, "synthetic": False, "model_name": None,
        "detoxify": {k: 0.001 for k in DETOXIFY.names} if role == "prompter" else None,
        "message_tree_id": tree, "tree_state": "ready_for_export",
        "emojis": {"name": ["+1"], "count": [2]},
        "labels": {"name": ["spam"], "value": [0.0], "count": [3]},
    }


def tree(tid: str, prompt: str, replies: list[tuple[str, int | None]], **root_kw) -> list[dict]:
    """A root plus direct assistant replies given as (text, rank)."""
    rows = [msg(tid, tid, None, "prompter", prompt, **root_kw)]
    for i, (text, rank) in enumerate(replies):
        rows.append(msg(f"{tid}-a{i}", tid, tid, "assistant", text, rank=rank))
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


@pytest.fixture
def corpus() -> list[dict]:
    """Trees covering every rule; only t-good and t-multi qualify by default."""
    rows: list[dict] = []
    rows += tree("t-good", "  What is a llama?  ", [("A camelid.", 0), ("An animal.", 1)])
    # Second turn deeper in the tree: prompter -> assistant under the first reply. The first
    # reply is rank 1 only, so the tree has no first-turn rank-0 pair; the deeper rank-0 pair
    # must never be selected instead.
    rows += tree("t-deep", "Tell me a joke.", [("Why did...", 1)])
    rows += [msg("t-deep-p2", "t-deep", "t-deep-a0", "prompter", "Another one?"),
             msg("t-deep-a2", "t-deep", "t-deep-p2", "assistant", "Deep rank 0.", rank=0)]
    rows += tree("t-de-root", "Was ist ein Lama?", [("Ein Tier.", 0)], lang="de")
    rows += tree("t-de-reply", "Explain tides.", [])
    rows.append(msg("t-de-reply-a0", "t-de-reply", "t-de-reply", "assistant", "Gezeiten.",
                    lang="de", rank=0))
    rows += tree("t-deleted", "Deleted reply?", [])
    rows.append(msg("t-deleted-a0", "t-deleted", "t-deleted", "assistant", "x", rank=0,
                    deleted=True))
    rows += tree("t-del-root", "Deleted root", [("ok", 0)], deleted=True)
    rows += tree("t-review", "Spam prompt", [("ok", 0)], review_result=False)
    rows += tree("t-empty", "Empty reply", [("   ", 0)])
    rows += tree("t-unranked", "Only one reply", [("Single reply.", None)])
    rows += tree("t-noreply", "Nobody answered", [])
    # Two rank-0 style replies is impossible in oasst, but a tree yields one pair regardless.
    rows += tree("t-multi", "Pick one", [("first", 0), ("second", 0)])
    return rows


# ----------------------------------------------------------------------------------- selection


def test_selection_rules_and_reasons(corpus: list[dict]) -> None:
    rows, stats = select_seed_pairs_with_stats(corpus, n=None)
    assert [r["id"] for r in rows] == ["t-good", "t-multi"]
    assert stats.messages == len(corpus)
    assert stats.trees == 11
    assert stats.rejected == {
        "no_rank0_reply": 2,  # t-deep, t-unranked
        "non_english": 2,  # t-de-root, t-de-reply
        "deleted": 2,  # t-deleted, t-del-root
        "review_failed": 1,
        "empty": 1,
        "no_reply": 1,
    }
    assert stats.candidates == stats.selected == 2


def test_output_fields_and_first_turn(corpus: list[dict]) -> None:
    good = select_seed_pairs(corpus, n=None)[0]
    assert tuple(good) == SEED_FIELDS
    assert good == {
        "id": "t-good", "instruction": "What is a llama?", "response": "A camelid.",
        "prompt_message_id": "t-good", "response_message_id": "t-good-a0",
        "message_tree_id": "t-good", "lang": "en",
    }
    all_ids = {r["response_message_id"] for r in select_seed_pairs(corpus, n=None,
                                                                 accept_unranked_single=True)}
    assert "t-deep-a2" not in all_ids  # the second turn is never a seed pair


def test_one_pair_per_tree(corpus: list[dict]) -> None:
    rows = select_seed_pairs(corpus, n=None)
    multi = [r for r in rows if r["id"] == "t-multi"]
    assert len(multi) == 1 and multi[0]["response"] == "first"  # earliest created wins
    dup_root = msg("t-good-dup", "t-good", None, "prompter", "Same tree again")
    rows2, stats = select_seed_pairs_with_stats(corpus + [dup_root], n=None)
    assert [r["id"] for r in rows2].count("t-good") == 1
    assert stats.rejected["duplicate_tree"] == 1


def test_reply_from_other_tree_ignored() -> None:
    rows = tree("t1", "Question", [])
    rows.append(msg("stray", "other-tree", "t1", "assistant", "Stray answer", rank=0))
    _, stats = select_seed_pairs_with_stats(rows, n=None)
    assert stats.rejected == {"no_reply": 1}


def test_assistant_root_is_not_a_seed() -> None:
    rows = [msg("r", "r", None, "assistant", "I am a root?", rank=0)]
    out, stats = select_seed_pairs_with_stats(rows, n=None)
    assert out == [] and stats.rejected == {"root_not_prompter": 1}


def test_unranked_single_reply_opt_in(corpus: list[dict]) -> None:
    ids = [r["id"] for r in select_seed_pairs(corpus, n=None, accept_unranked_single=True)]
    assert ids == ["t-good", "t-multi", "t-unranked"]
    # Two unranked replies: nobody said which is better, so still rejected.
    two = tree("t2", "Q", [("a", None), ("b", None)])
    assert select_seed_pairs(two, n=None, accept_unranked_single=True) == []


def test_lang_parameter() -> None:
    rows = tree("de1", "Was ist ein Lama?", [("Ein Tier.", 0)], lang="de")
    rows[1]["lang"] = "de"
    assert [r["lang"] for r in select_seed_pairs(rows, lang="de")] == ["de"]
    assert select_seed_pairs(rows, lang="en") == []


def test_n_limit_is_deterministic_nested_and_sorted() -> None:
    rows = [m for i in range(40) for m in tree(f"t{i:02d}", f"Q{i}", [(f"A{i}", 0)])]
    five = select_seed_pairs(rows, n=5, seed=0)
    assert len(five) == 5
    assert [r["id"] for r in five] == sorted(r["id"] for r in five)
    assert five == select_seed_pairs(list(reversed(rows)), n=5, seed=0)  # input order irrelevant
    ten = {r["id"] for r in select_seed_pairs(rows, n=10, seed=0)}
    assert {r["id"] for r in five} <= ten  # nested samples
    assert {r["id"] for r in five} != {r["id"] for r in select_seed_pairs(rows, n=5, seed=1)}
    assert len(select_seed_pairs(rows, n=None)) == 40
    assert select_seed_pairs(rows, n=0) == []
    with pytest.raises(ValueError):
        select_seed_pairs(rows, n=-1)


def test_pandas_style_nulls() -> None:
    rows = tree("t1", "Q", [("A", 0)])
    rows[0]["parent_id"] = float("nan")
    rows[1]["rank"] = 0.0
    assert len(select_seed_pairs(rows)) == 1


# ------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", ["msgs.jsonl", "msgs.jsonl.gz", "msgs.parquet"])
def test_load_formats_give_same_seed(tmp_path: Path, corpus: list[dict], name: str) -> None:
    path = tmp_path / name
    (write_parquet if name.endswith(".parquet") else write_jsonl)(path, corpus)
    loaded = list(load_oasst_messages(str(path)))
    assert len(loaded) == len(corpus)
    assert set(loaded[0]) == set(SCHEMA.names)
    assert select_seed_pairs(loaded, n=None) == select_seed_pairs(corpus, n=None)


def test_folder_picks_split_files(tmp_path: Path) -> None:
    data = tmp_path / "snapshot" / "data"
    data.mkdir(parents=True)
    write_parquet(data / "train-00000-of-00001.parquet", tree("tr", "Train Q", [("A", 0)]))
    write_parquet(data / "validation-00000-of-00001.parquet", tree("va", "Val Q", [("A", 0)]))
    ids = lambda split: [r["id"] for r in select_seed_pairs(  # noqa: E731
        load_oasst_messages(str(tmp_path / "snapshot"), split=split))]
    assert ids("train") == ["tr"]
    assert ids("validation") == ["va"]
    with pytest.raises(SeedError, match="no file for split 'test'"):
        load_oasst_messages(str(tmp_path / "snapshot"), split="test")


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", tree("t1", "Q", [("A", 0)]))
    with path.open("a") as handle:
        handle.write('{"message_id": "x", oops\n')
    with pytest.raises(SeedError, match=r"bad\.jsonl:3: malformed JSON.*fix or delete"):
        list(load_oasst_messages(str(path)))


def test_missing_column_jsonl(tmp_path: Path) -> None:
    rows = tree("t1", "Q", [("A", 0)])
    del rows[1]["message_tree_id"]
    path = write_jsonl(tmp_path / "nocol.jsonl", rows)
    with pytest.raises(SeedError, match=r"nocol\.jsonl:2: missing required column\(s\) "
                                        r"message_tree_id"):
        list(load_oasst_messages(str(path)))


def test_missing_column_parquet_fails_up_front(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(tree("t1", "Q", [("A", 0)]), schema=SCHEMA).drop(["lang"])
    pq.write_table(table, tmp_path / "nolang.parquet")
    with pytest.raises(SeedError, match=r"nolang\.parquet: missing required column\(s\) lang"):
        load_oasst_messages(str(tmp_path / "nolang.parquet"))


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="does not exist"):
        load_oasst_messages(str(tmp_path / "nope.jsonl"))
    with pytest.raises(SeedError, match="no .jsonl"):
        load_oasst_messages(str(tmp_path))


def test_hub_path_calls_load_dataset(monkeypatch: pytest.MonkeyPatch, corpus: list[dict]) -> None:
    import datasets

    calls: list[tuple] = []

    def fake_load_dataset(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return datasets.Dataset.from_list(corpus)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = select_seed_pairs(load_oasst_messages("OpenAssistant/oasst1", split="validation"))
    assert calls == [("OpenAssistant/oasst1", "validation")]
    assert [r["id"] for r in rows] == ["t-good", "t-multi"]


# ---------------------------------------------------------------------------------- seed files


def test_build_write_and_load_seed(tmp_path: Path, corpus: list[dict]) -> None:
    src = write_parquet(tmp_path / "msgs.parquet", corpus)
    out = tmp_path / "out" / "seed.jsonl"
    counts = build_seed(str(src), out, n=1)
    assert counts["messages"] == len(corpus)
    assert counts["trees"] == 11
    assert counts["candidates"] == 2 and counts["selected"] == 1 and counts["not_sampled"] == 1
    assert counts["rejected"]["no_rank0_reply"] == 2
    seed_rows = load_seed(out)
    assert len(seed_rows) == 1 and set(seed_rows[0]) == set(SEED_FIELDS)
    assert write_seed(seed_rows, tmp_path / "copy.jsonl") == 1
    assert load_seed(tmp_path / "copy.jsonl") == seed_rows


def test_build_seed_with_nothing_selected_raises(tmp_path: Path, corpus: list[dict]) -> None:
    src = write_jsonl(tmp_path / "msgs.jsonl", corpus)
    with pytest.raises(SeedError, match="no seed pair qualified"):
        build_seed(str(src), tmp_path / "seed.jsonl", lang="fr")
    assert not (tmp_path / "seed.jsonl").exists()


def test_load_seed_errors_name_lines(tmp_path: Path) -> None:
    path = tmp_path / "seed.jsonl"
    path.write_text('{"instruction": "Q", "response": "A"}\n{"instruction": "Q2"}\n')
    with pytest.raises(SeedError, match=r"seed\.jsonl:2: field 'response' is missing"):
        load_seed(path)
    path.write_text('{"instruction": "Q", "response": "  "}\n')
    with pytest.raises(SeedError, match=r"seed\.jsonl:1: field 'response' is empty"):
        load_seed(path)
    path.write_text("not json\n")
    with pytest.raises(SeedError, match=r"seed\.jsonl:1: malformed JSON"):
        load_seed(path)
    with pytest.raises(SeedError, match="does not exist"):
        load_seed(tmp_path / "missing.jsonl")
