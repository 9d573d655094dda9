"""The runner end to end with a deterministic fake engine: outputs, accounting, resume and conflicts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_engine import FakeEngine, section, stage_of

from run_files import read_distilled, read_sft
from backforth.config import WEB_TAG, build_config
from backforth.engines.base import EngineUnavailable, Request, Result
from backforth.evaluate.data import BUNDLED_PATH
from backforth.errors import UserError
from backforth.pipeline import RunConflict, registry
from backforth.pipeline.method import run_method
from backforth.pipeline.store import StageStore
from backforth.pipeline.stages.prepare import normalize_text

STAGES = ["prepare", "backtranslate", "curate", "rewrite", "distill"]
MODEL_STAGES = STAGES[1:]


def doc_text(i: int, n: int = 45) -> str:
    words = " ".join(f"fact{i}x{j}" for j in range(n))
    return f"Document {i} explains topic {i}.   {words}\r\n\r\n\r\nEnd   of document {i}."


# File order is not id order, so "input order" is not confused with sorting by id.
DOCS: list[tuple[str, str | None]] = [
    ("d10", doc_text(10)),
    ("d00", doc_text(0)),
    ("d07", doc_text(7)),
    ("d03", "Too short to be an answer."),
    ("BROKEN", None),                   # a malformed JSON line
    ("d05", doc_text(5)),
    ("d02", "  " + doc_text(0).replace(" ", "  ") + "  "),   # d00 again, other whitespace
    ("d11", doc_text(11)),
    ("d01", doc_text(1)),
    ("d08", doc_text(8)),
    ("d04", doc_text(4)),
    ("d09", doc_text(9)),
    ("d06", doc_text(6)),
    ("d12", doc_text(12, n=900)),       # longer than the backward model's context
]
BROKEN_ID = "docs.jsonl:5"
INPUT_IDS = [BROKEN_ID if i == "BROKEN" else i for i, _ in DOCS]
CONTEXT = 1000

EXPECTED_REJECTS = {
    BROKEN_ID: ("input", "malformed_json"),
    "d02": ("prepare", "duplicate"),
    "d03": ("prepare", "too_short"),
    "d12": ("prepare", "too_long"),
    "d04": ("backtranslate", "empty_instruction"),
    "d11": ("backtranslate", "echo_instruction"),
    "d05": ("curate", "low_score"),
    "d06": ("curate", "unparsed_score"),
    "d07": ("rewrite", "refusal"),
    "d08": ("rewrite_redraw", "truncated_rewrite"),  # cut off twice: the second draw, with twice the budget, too
}


def expected_rejects(variant: str) -> dict[str, tuple[str, str]]:
    present = {"input", "prepare", "backtranslate"}
    present |= {"curate"} if "filter" in variant else set()
    present |= {"rewrite", "rewrite_redraw"} if "rewrite" in variant else set()
    return {k: v for k, v in EXPECTED_REJECTS.items() if v[0] in present}


def instruction_for(key: str) -> str:
    return f"What should I know about subject number {int(key[1:])} in practice?"


def responder(req: Request) -> Result | str:
    """Deterministic answers by stage and row id (the request's key)."""
    stage, key = stage_of(req), req.key
    if stage == "backtranslate":
        doc = section(req.messages[-1]["content"], "<<<", ">>>")
        if key == "d04":
            return "Sure! Here is the instruction:"
        if key == "d11":
            return "Instruction: " + " ".join(doc.split()[5:14])
        return f'Sure! Here is the instruction:\n"{instruction_for(key)}"'
    if stage == "curate":
        if key == "d05":
            return "Helpful but reads like a blog post.\nScore: 3"
        if key == "d06":
            return "Looks fine to me."
        return "Direct, complete and expert.\nScore: 5"
    if stage == "rewrite":
        draft = section(req.messages[0]["content"], "<draft>", "</draft>")
        if key == "d07":
            return "I'm sorry, but I can't help with that."
        if key == "d08":
            return Result(text="Here is a long answer that never", finish_reason="length")
        if key == "d10":  # some models write the opener again although it was forced
            return f"[RES]Rewritten for {key}: {' '.join(draft.split()[:6])}[/RES]"
        return f"Rewritten for {key}: {' '.join(draft.split()[:6])}"
    if key == "d09":
        return "I am unable to answer that."
    return f"Distilled answer to: {req.messages[-1]['content']}"


def write_docs(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for doc_id, text in DOCS:
            fh.write('{"id": "broken", "text": \n' if text is None
                     else json.dumps({"id": doc_id, "text": text, "url": f"https://example.com/{doc_id}"}) + "\n")
    return path


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs.jsonl")


# Near-dedup, decontamination and grounding are off in these tests of the runner itself (resume, order,
# exports, fingerprints): the synthetic instructions differ by one word (near-duplicates) and the fake
# rewrites add words their documents lack. test_all_default_stages runs them all.
HYGIENE_STAGES = ("dedup_documents", "dedup_instructions", "decontaminate", "grounding")


def config(docs: Path, variant: str = "filter+rewrite", hygiene: bool = False, **sections):
    # d12 is one page too long for the backward model: it must stay whole to be rejected as too_long.
    data = {"input": {"path": str(docs)}, "variant": variant, "runner": {"progress": False, "chunk_size": 3},
            "prepare": {"split": {"enabled": False}}}
    if not hygiene:
        data.update({name: {"enabled": False} for name in HYGIENE_STAGES})
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return build_config(data)


def fake(**kw) -> FakeEngine:
    return FakeEngine(responder, context_length=CONTEXT, **kw)


def run(cfg, out: Path, engine: FakeEngine, **kw):
    return run_method(cfg, out, engine_factory=lambda model_cfg: engine, **kw)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def stage_ids(out: Path, stage: str) -> list[str]:
    """Ids of the rows a stage finished, from its shards (a row appears once per time it was written)."""
    return list(StageStore(out / "stages" / stage).ids())


def assert_no_duplicate_requests(engine: FakeEngine) -> None:
    dups = {k: n for k, n in engine.by_stage_key.items() if n > 1}
    assert not dups, f"requested more than once: {dups}"


# ---- a full run, per variant --------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["filter+rewrite", "filter", "rewrite"])
def test_full_run(tmp_path, docs, variant):
    out = tmp_path / "run"
    engine = fake()
    stats = run(config(docs, variant), out, engine)

    for name in ("sft.jsonl", "sft.parquet", "rejects.jsonl", "README.md", "stats.json", "distilled.parquet",
                 "config.yaml", "fingerprints.json"):
        assert (out / name).is_file(), name
    assert stats == json.loads((out / "stats.json").read_text())

    sft, rejects = read_sft(out), read_jsonl(out / "rejects.jsonl")
    want_rejects = expected_rejects(variant)
    want_sft = [i for i in INPUT_IDS if i not in want_rejects]
    # every input document ends exactly once in sft.jsonl or rejects.jsonl
    all_ids = [r["id"] for r in sft] + [r["id"] for r in rejects]
    assert sorted(all_ids) == sorted(INPUT_IDS) and len(all_ids) == len(set(all_ids))
    assert [r["id"] for r in sft] == want_sft  # input order
    assert {r["id"]: (r["stage"], r["reason"]) for r in rejects} == want_rejects
    for r in rejects:
        assert list(r)[:3] == ["id", "stage", "reason"]

    by_id = dict(DOCS)
    for r in sft:
        user, assistant = r["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert user["content"] == r["instruction"] + " " + WEB_TAG
        assert user["content"].endswith(" Answer with knowledge from web search.")
        assert r["instruction"] == instruction_for(r["id"])
        assert assistant["content"] == r["response"] and r["variant"] == variant
        assert r["url"] == f"https://example.com/{r['id']}"
        if variant == "filter":
            assert r["response"] == normalize_text(by_id[r["id"]])
        else:
            assert r["response"].startswith(f"Rewritten for {r['id']}: Document") and "RES" not in r["response"]
        if "filter" in variant:
            assert r["score"] == 5 and r["score_method"] == "generate" and r["score_reason"]
            assert r["provenance"]["curate_model"] == "fake-model"
        else:
            assert r["score"] is None and r["provenance"]["curate_model"] is None
        assert r["provenance"]["backtranslate_model"] == "fake-model"
        assert r["provenance"]["backtranslate_prompt"].startswith("backtranslate@1#")
        assert r["distilled"] == (None if r["id"] == "d09" else f"Distilled answer to: {r['instruction']}")

    distilled = read_distilled(out)
    assert [r["id"] for r in distilled] == [i for i in want_sft if i != "d09"]

    # rejected data is data: what the stage saw is kept
    rej = {r["id"]: r for r in rejects}
    assert rej["d04"]["instruction_raw"] == "Sure! Here is the instruction:"
    assert rej[BROKEN_ID]["detail"].startswith("malformed_json")
    assert rej["d12"]["n_tokens"] > rej["d12"]["n_words"] - 1
    if "filter" in variant:
        assert rej["d06"]["score"] is None and rej["d06"]["score_raw"] == "Looks fine to me."
        assert rej["d05"]["score"] == 3
    if "rewrite" in variant:
        assert rej["d08"]["rewrite_finish_reason"] == "length" and rej["d08"]["response"] is None

    # the fake saw each (stage, row) once, and never a row an earlier stage rejected
    assert_no_duplicate_requests(engine)
    kept_by_bt = [i for i in INPUT_IDS if i not in EXPECTED_REJECTS or EXPECTED_REJECTS[i][0] not in
                  ("input", "prepare", "backtranslate")]
    assert sorted(engine.keys_for("backtranslate")) == sorted(
        i for i in INPUT_IDS if want_rejects.get(i, ("",))[0] not in ("input", "prepare"))
    if "filter" in variant:
        assert sorted(engine.keys_for("curate")) == sorted(kept_by_bt)
    else:
        assert engine.keys_for("curate") == []
    assert sorted(engine.keys_for("distill")) == sorted(want_sft)

    # stats agree with the files
    funnel = stats["funnel"]
    assert funnel["documents_in"] == len(INPUT_IDS)
    assert funnel["prepared"] == len(INPUT_IDS) - 4
    assert funnel["instructions"] == len(kept_by_bt)
    assert funnel["exported"] == len(sft) == stats["outputs"]["sft"]
    assert stats["outputs"]["rejects"] == len(rejects)
    assert stats["outputs"]["distilled"] == len(distilled)
    for stage, st in stats["stages"].items():
        assert st["rejected_by_reason"] == {
            reason: sum(1 for s, r in want_rejects.values() if r == reason and (s == stage or (s == "input" and stage == "prepare")))
            for reason in st["rejected_by_reason"]}
        assert st["in"] == st["kept"] + st["rejected"] + sum(st.get("reconsidered", {}).values())
    assert sum(st["rejected"] for st in stats["stages"].values()) == len(rejects)
    if "rewrite" in variant:  # d08, cut off, drawn again by the next stage (and cut off again)
        assert stats["stages"]["rewrite"]["reconsidered"] == {"truncated_rewrite": 1}
        assert (stats["stages"]["rewrite_redraw"]["redrawn"], stats["stages"]["rewrite_redraw"]["recovered"]) == (1, 0)
    if "filter" in variant:
        cur = stats["stages"]["curate"]
        assert funnel["scored"] == len(kept_by_bt) - 1 and funnel["kept"] == len(kept_by_bt) - 2
        assert cur["score_distribution"] == {"1": 0, "2": 0, "3": 1, "4": 0, "5": len(kept_by_bt) - 2}
        assert cur["parse_failures"] == 1 and cur["parse_rate"] == round((len(kept_by_bt) - 1) / len(kept_by_bt), 4)
    if "rewrite" in variant:
        assert funnel["rewritten"] == len(want_sft)
    assert stats["stages"]["backtranslate"]["prompt_tokens"] > 0 and stats["stages"]["backtranslate"]["completion_tokens"] > 0
    assert stats["stages"]["distill"]["distill_failed_by_reason"] == {"refusal": 1}

    # parquet reads back with the same rows
    table = pq.read_table(out / "sft.parquet")
    assert table.column("id").to_pylist() == [r["id"] for r in sft]
    assert table.column("messages").to_pylist() == [r["messages"] for r in sft]
    assert table.column("response").to_pylist() == [r["response"] for r in sft]

    # the card says how much and how to load it
    card = (out / "README.md").read_text()
    assert f"`sft.jsonl` / `sft.parquet`: {len(sft)} pairs" in card
    assert f"`rejects.jsonl`: {len(rejects)} rejected rows" in card
    assert f"| documents_in | {len(INPUT_IDS)} |" in card and f"| exported | {len(sft)} |" in card
    assert f'load_dataset("{out.resolve()}", split="train")' in card  # the run dir itself, from anywhere
    assert "path: sft.parquet" in card and WEB_TAG in card
    assert "| prepare | too_short | 1 |" in card
    rubric = {"answer": "whether the page holds a useful answer", "humpback": "Humpback's 5-point rubric"}
    assert rubric[config(docs, variant).curate.rubric] in card  # the card names the rubric the run used


def test_a_rewrite_lost_to_sampling_gets_a_second_draw(tmp_path, docs):
    """d08's first rewrite is cut off; its second draw (twice the budget) closes: the pair is exported,
    once, its second draw named in its provenance, and `rewrite.redraw: false` loses it as the paper would."""
    def second_draw_closes(req: Request) -> Result | str:
        if stage_of(req) == "rewrite" and req.key == "d08" and req.draw:
            return "Rewritten for d08 on the second draw."
        return responder(req)

    engine = FakeEngine(second_draw_closes, context_length=CONTEXT)
    out = tmp_path / "run"
    stats = run(config(docs), out, engine)
    sft = {r["id"]: r for r in read_sft(out)}
    assert sft["d08"]["response"] == "Rewritten for d08 on the second draw."
    assert sft["d08"]["provenance"]["rewrite_redraw_model"] == "fake-model"
    assert all(r["provenance"]["rewrite_redraw_model"] is None for i, r in sft.items() if i != "d08")
    assert engine.keys_for("rewrite_redraw") == ["d08"]  # only the row the first draw lost
    [again] = [r for r in engine.received if r.draw]
    first = next(r for r in engine.received if r.key == "d08" and not r.draw and stage_of(r) == "rewrite")
    assert again.max_tokens == 2 * first.max_tokens and again.messages == first.messages
    st = stats["stages"]
    assert st["rewrite"]["reconsidered"] == {"truncated_rewrite": 1} and "truncated_rewrite" not in st["rewrite"]["rejected_by_reason"]
    assert (st["rewrite_redraw"]["redrawn"], st["rewrite_redraw"]["recovered"], st["rewrite_redraw"]["rejected"]) == (1, 1, 0)
    assert stats["funnel"]["rewritten_after_redraw"] == stats["funnel"]["rewritten"] + 1
    assert st["rewrite_redraw"]["completion_tokens"] > 0  # the second draw is paid for, and counted
    assert "1 of them passed (their `provenance.rewrite_redraw_model` is set" in (out / "README.md").read_text()

    paper = run(config(docs, rewrite={"redraw": False}), tmp_path / "paper", FakeEngine(second_draw_closes, context_length=CONTEXT))
    assert "rewrite_redraw" not in paper["stages"] and "d08" not in {r["id"] for r in read_sft(tmp_path / "paper")}


def test_a_run_with_every_row_rejected_still_exports(tmp_path):
    docs = tmp_path / "short.jsonl"
    docs.write_text('{"id": "a", "text": "tiny"}\n{"id": "b", "text": "also tiny"}\n')
    engine = fake()
    stats = run(config(docs), tmp_path / "run", engine)
    assert (tmp_path / "run" / "sft.jsonl").read_text() == ""
    assert pq.read_table(tmp_path / "run" / "sft.parquet").num_rows == 0
    assert [r["reason"] for r in read_jsonl(tmp_path / "run" / "rejects.jsonl")] == ["too_short", "too_short"]
    assert stats["funnel"]["exported"] == 0 and engine.received == []
    assert "No pair was kept" in (tmp_path / "run" / "README.md").read_text()


# ---- every default stage on ---------------------------------------------------------------------

ALL_STAGES = ["prepare", "dedup_documents", "page_kind", "backtranslate", "dedup_instructions", "decontaminate", "curate",
              "best_response", "rewrite", "rewrite_redraw", "grounding", "distill"]
EVAL_ROWS = [json.loads(line) for line in BUNDLED_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]
EVAL_INDEX = 1  # the bundled eval question the fake backward model "writes" for h04
HYGIENE_DOCS: list[tuple[str, str]] = [
    ("h00", doc_text(20, n=200)),
    ("h01", doc_text(21)),
    # h00 with a new footer: a near-duplicate page. Long, so that its 5-gram Jaccard is 0.98, where
    # LSH (9 bands of 13) misses about one pair in a million; at 0.92 it would miss one in 40.
    ("h02", doc_text(20, n=200) + "\nLast updated in March."),
    ("h03", doc_text(23)),
    ("h04", doc_text(24)),   # its instruction is an eval question
    ("h05", doc_text(25)),   # asked the same question as h03, but for one word
    ("h06", doc_text(26)),   # its rewrite adds a price and a year the page never gave
    ("h07", doc_text(27)),
]
HYGIENE_REJECTS = {
    "h02": ("dedup_documents", "near_duplicate"),
    "h05": ("dedup_instructions", "near_duplicate"),
    "h04": ("decontaminate", "contaminated"),
    "h06": ("grounding", "ungrounded"),
}


def distinct_instruction(n: int) -> str:
    """Instructions that share only their frame (word Jaccard 0.5, far below the dedup threshold)."""
    return f"How does topic {n} relate to fact{n}x3 and fact{n}x7?"


def hygiene_responder(req: Request) -> Result | str:
    stage, key = stage_of(req), req.key
    n = 20 + int(key[1:])
    if stage == "backtranslate":
        if key == "h04":
            return EVAL_ROWS[EVAL_INDEX]["instruction"]
        if key == "h05":  # h03's question with one more word (word Jaccard 0.9)
            return distinct_instruction(23).replace("How does", "How exactly does")
        return distinct_instruction(n)
    if stage == "curate":
        return "Direct, complete and expert.\nScore: 5"
    if stage == "rewrite":
        faithful = f"Topic {n} is explained by fact{n}x3 and fact{n}x7."
        if key == "h06":
            return faithful + " It costs $450 and was first described in 1987."
        return faithful
    return f"Distilled answer to: {req.messages[-1]['content']}"


def test_all_default_stages(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in HYGIENE_DOCS), encoding="utf-8")
    cfg = config(docs, hygiene=True)
    assert registry.names(cfg) == ALL_STAGES  # the defaults, nothing disabled
    out, engine = tmp_path / "run", FakeEngine(hygiene_responder, context_length=CONTEXT)
    stats = run(cfg, out, engine)
    input_ids = [i for i, _ in HYGIENE_DOCS]

    sft, rejects = read_sft(out), read_jsonl(out / "rejects.jsonl")
    # every input document ends exactly once in sft.jsonl or rejects.jsonl
    all_ids = [r["id"] for r in sft] + [r["id"] for r in rejects]
    assert sorted(all_ids) == sorted(input_ids) and len(all_ids) == len(set(all_ids))
    assert [r["id"] for r in sft] == [i for i in input_ids if i not in HYGIENE_REJECTS]
    assert {r["id"]: (r["stage"], r["reason"]) for r in rejects} == HYGIENE_REJECTS
    rej = {r["id"]: r for r in rejects}
    # near-duplicates name the row they duplicate (the earlier one, kept)
    assert rej["h02"]["duplicate_of"] == "h00" and rej["h02"]["duplicate_similarity"] >= 0.8
    assert rej["h05"]["duplicate_of"] == "h03" and rej["h05"]["duplicate_similarity"] >= 0.8
    # contamination names the eval item
    item = EVAL_ROWS[EVAL_INDEX]
    assert rej["h04"]["instruction"] == item["instruction"]
    assert rej["h04"]["contaminated_with"] == {"eval_set": "bundled", "index": EVAL_INDEX, "id": item["id"]}
    # grounding names what the rewrite added
    assert rej["h06"]["unsupported_numbers"] == ["450", "1987"]
    assert rej["h06"]["response"].endswith("It costs $450 and was first described in 1987.")
    for r in sft:
        n = 20 + int(r["id"][1:])
        assert r["instruction"] == distinct_instruction(n)
        assert r["response"] == f"Topic {n} is explained by fact{n}x3 and fact{n}x7." and r["unsupported_share"] == 0.0

    # no model saw a row a hygiene stage had dropped
    assert_no_duplicate_requests(engine)
    assert "h02" not in engine.keys_for("backtranslate")
    assert not {"h02", "h04", "h05"} & set(engine.keys_for("curate"))
    assert "h06" in engine.keys_for("rewrite") and "h06" not in engine.keys_for("distill")

    # stats: one section per stage, in order, agreeing with rejects.jsonl
    assert list(stats["stages"]) == ALL_STAGES == list(stats["fingerprints"])
    for stage, st in stats["stages"].items():
        want = Counter(reason for s, reason in HYGIENE_REJECTS.values() if s == stage)
        assert st["rejected_by_reason"] == dict(want), stage
        assert st["in"] == st["kept"] + st["rejected"] + sum(st.get("reconsidered", {}).values())
    assert sum(st["rejected"] for st in stats["stages"].values()) == len(rejects) == stats["outputs"]["rejects"]
    assert stats["stages"]["grounding"]["ungrounded_rate"] == round(1 / stats["stages"]["grounding"]["in"], 4)
    funnel = stats["funnel"]
    assert (funnel["documents_in"], funnel["prepared"], funnel["unique_documents"], funnel["instructions"],
            funnel["unique_instructions"], funnel["uncontaminated"], funnel["kept"], funnel["rewritten"],
            funnel["grounded"], funnel["exported"]) == (8, 8, 7, 7, 6, 5, 5, 5, 4, 4)


# ---- resume -------------------------------------------------------------------------------------

def outputs(out: Path) -> dict[str, str]:
    files = {name: (out / name).read_text() for name in ("sft.jsonl", "rejects.jsonl")}
    return {**files, "distilled": read_distilled(out), "sft.parquet": read_sft(out)}


@pytest.fixture
def reference(tmp_path, docs) -> dict[str, str]:
    engine = fake()
    run(config(docs), tmp_path / "reference", engine)
    assert_no_duplicate_requests(engine)
    return outputs(tmp_path / "reference")


def written(out: Path) -> dict[str, set[str]]:
    return {st: set(stage_ids(out, st)) for st in STAGES if StageStore(out / "stages" / st).exists()}


def assert_resumed_without_repeats(engine: FakeEngine, before: dict[str, set[str]]) -> None:
    again = [(s, k) for (s, k) in engine.by_stage_key if k in before.get(s, set())]
    assert not again, f"re-requested finished rows: {again}"


@pytest.mark.parametrize("stage, after", [("rewrite", 5), ("backtranslate", 4), ("curate", 1)])
def test_resume_after_ctrl_c(tmp_path, docs, reference, stage, after):
    out, cfg = tmp_path / "run", config(docs, runner={"chunk_size": 2, "progress": False})
    engine = fake(fail_after=after, fail_stage=stage)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out, engine)
    assert engine.served[stage] == after
    before = written(out)
    # the chunks before the interruption are on disk, the one in flight is not
    assert len(before.get(stage, ())) == 2 * (after // 2) and not (out / "sft.jsonl").exists()
    assert all(not before.get(s) for s in STAGES[STAGES.index(stage) + 1:])

    engine.fail_after = None
    engine.reset_counts()
    run(cfg, out, engine)
    assert_resumed_without_repeats(engine, before)
    assert_no_duplicate_requests(engine)
    assert engine.keys_for(stage) and all(k not in before.get(stage, ()) for k in engine.keys_for(stage))
    for earlier in MODEL_STAGES[:MODEL_STAGES.index(stage)]:
        assert engine.keys_for(earlier) == []
    assert outputs(out) == reference
    for st in STAGES:  # every row finished once in every stage file
        ids = stage_ids(out, st)
        assert len(ids) == len(set(ids))


def test_resume_after_the_server_went_away(tmp_path, docs, reference):
    out, cfg = tmp_path / "run", config(docs)
    engine = fake(fail_after=3, fail_with=EngineUnavailable, fail_stage="distill")
    with pytest.raises(EngineUnavailable):
        run(cfg, out, engine)
    before = written(out)
    assert len(before["distill"]) == 3
    engine.fail_after = None
    engine.reset_counts()
    run(cfg, out, engine)
    assert_resumed_without_repeats(engine, before)
    assert len(engine.keys_for("distill")) == 1 and engine.keys_for("rewrite") == []
    assert outputs(out) == reference


def test_a_finished_run_rerun_requests_nothing(tmp_path, docs, reference):
    out = tmp_path / "run"
    engine = fake()
    run(config(docs), out, engine)
    engine.reset_counts()
    stats = run(config(docs), out, engine)
    assert engine.received == [] and outputs(out) == reference
    assert stats["outputs"]["sft"] == len(read_sft(out))
    # a bigger chunk size is not a data change
    run(config(docs, runner={"chunk_size": 50, "progress": False}), out, engine)
    assert engine.received == []


def test_partial_last_line_is_repaired(tmp_path, docs, reference):
    out, cfg = tmp_path / "run", config(docs, runner={"chunk_size": 2, "progress": False})
    engine = fake(fail_after=4, fail_stage="curate")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out, engine)
    curate = out / "stages" / "curate"
    done = stage_ids(out, "curate")
    assert len(done) == 4
    # a crash in the middle of writing the next chunk: half of a shard, under its temporary name
    ref_rows = list(StageStore(tmp_path / "reference" / "stages" / "curate").rows())
    nxt = next(r for r in ref_rows if r["id"] not in done)
    whole = next(curate.glob("part-*.parquet")).read_bytes()
    (curate / ".tmp-part-000000000099-0123456789abcdef-1.parquet").write_bytes(whole[: len(whole) // 2])

    engine.fail_after = None
    engine.reset_counts()
    run(cfg, out, engine)
    assert not list(curate.glob(".tmp-*"))  # the torn shard is gone, never read
    rows = list(StageStore(curate).rows())  # every shard reads whole
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in ref_rows)
    assert nxt["id"] in engine.keys_for("curate")  # the half-written row was not finished: done again
    assert all(k not in done for k in engine.keys_for("curate"))
    assert outputs(out) == reference


def test_until_stops_after_a_stage_and_the_next_run_goes_on(tmp_path, docs, reference):
    out, engine = tmp_path / "run", fake()
    assert run(config(docs), out, engine, until="backtranslate") is None
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["backtranslate", "page_kind", "prepare"]
    assert not (out / "sft.jsonl").exists()
    engine.reset_counts()
    run(config(docs), out, engine)
    assert engine.keys_for("backtranslate") == [] and engine.keys_for("curate")
    assert outputs(out) == reference
    with pytest.raises(UserError, match="--until rewrite"):
        run_method(config(docs, variant="filter"), out, until="rewrite")


def test_export_is_in_input_order_whatever_the_stage_file_order(tmp_path, docs, reference):
    out, engine = tmp_path / "run", fake()
    run(config(docs), out, engine)
    # the last stage's rows written back one shard each, last row first (as Ray actors may finish)
    final = StageStore(out / "stages" / "distill")
    rows = list(final.rows())
    for p in final.shards():
        p.unlink()
    for row in reversed(rows):
        final.write([row])
    run(config(docs), out, engine)
    assert outputs(out)["sft.jsonl"] == reference["sft.jsonl"]


# ---- a changed config ---------------------------------------------------------------------------

def test_changed_threshold_is_a_conflict_and_force_redoes_from_curate(tmp_path, docs, reference):
    out, engine = tmp_path / "run", fake()
    run(config(docs), out, engine)
    stage_files = {str(p): p.read_bytes() for p in (out / "stages").rglob("*") if p.is_file()}

    engine.reset_counts()
    with pytest.raises(RunConflict) as info:
        run(config(docs, curate={"threshold": 3}), out, engine)
    msg = str(info.value)
    assert "curate: changed threshold" in msg and "--force" in msg and str(out) in msg
    assert "rewrite: changed (an earlier stage)" in msg
    assert "backtranslate" not in msg and "prepare" not in msg
    assert engine.received == []
    assert {str(p): p.read_bytes() for p in (out / "stages").rglob("*") if p.is_file()} == stage_files  # nothing touched

    engine.reset_counts()
    stats = run(config(docs, curate={"threshold": 3}), out, engine, force=True)
    assert engine.keys_for("backtranslate") == []  # upstream of the change: reused
    assert sorted(engine.keys_for("curate")) == sorted(stage_ids(out, "curate"))
    assert "d05" in engine.keys_for("rewrite")
    assert_no_duplicate_requests(engine)
    sft_ids = [r["id"] for r in read_sft(out)]
    assert "d05" in sft_ids and "d06" not in sft_ids
    assert stats["stages"]["curate"]["rejected_by_reason"] == {"unparsed_score": 1}
    assert json.loads((out / "fingerprints.json").read_text())["curate"]["fields"]["threshold"] == 3
    # and now the forced settings are the run's: a plain re-run goes on quietly
    engine.reset_counts()
    run(config(docs, curate={"threshold": 3}), out, engine)
    assert engine.received == []


def test_changed_model_is_a_conflict_naming_it(tmp_path, docs):
    out, engine = tmp_path / "run", fake()
    run(config(docs), out, engine)
    cfg = config(docs, models={"backward": {"model": "another-model"}})
    with pytest.raises(RunConflict, match="backtranslate: changed model"):
        run(cfg, out, engine)
    engine.reset_counts()
    run(cfg, out, engine, force=True)
    assert len(engine.keys_for("backtranslate")) == len(stage_ids(out, "backtranslate"))
    assert_no_duplicate_requests(engine)


def test_engines_are_built_per_model_and_closed(tmp_path, docs):
    built = []

    def factory(model_cfg):
        built.append(model_cfg.model)
        return FakeEngine(responder, name=model_cfg.model, context_length=CONTEXT)

    cfg = config(docs, models={"scorer": {"model": "judge"}, "distiller": {"model": "teacher"}})
    run_method(cfg, tmp_path / "run", engine_factory=factory)
    assert sorted(built) == ["embedded", "judge", "teacher"]  # backward and rewriter share one engine
    sft = read_sft(tmp_path / "run")
    prov = sft[0]["provenance"]
    assert (prov["backtranslate_model"], prov["curate_model"], prov["rewrite_model"], prov["distill_model"]) == (
        "embedded", "judge", "embedded", "teacher")


def test_a_run_dir_of_the_old_jsonl_layout_is_refused_with_a_message(tmp_path, docs):
    out = tmp_path / "run"
    (out / "stages").mkdir(parents=True)
    (out / "stages" / "prepare.jsonl").write_text('{"id": "d00", "_status": "done"}\n')
    with pytest.raises(UserError, match="older backforth .*prepare.jsonl.*new --out"):
        run(config(docs), out, fake())
