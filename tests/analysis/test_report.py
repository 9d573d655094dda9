"""The HTML report in a real browser: headless Chromium through Playwright.

Documents are untrusted web text, so the run below carries script and markup payloads in its
documents, instructions and model outputs; the page must show them as text and run none of them.
The screenshot goes to test-artifacts/report.png for a human to look at.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from backforth.analysis.analyze import analyze
from backforth.analysis.report import safe_json, word_diff, write_report
from backforth.pipeline.store import StageStore

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SCRIPT_DOC = ("Zebracorn facts. <script>window.__pwned=1</script> and then "
              "</script><img src=x onerror=window.__pwned=2> <!-- and a comment opener")
FILLER = "The committee met on Tuesday and discussed the budget for the new library in some detail."


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def row(i: int, text: str, **cols) -> dict:
    return {"id": f"doc-{i:02d}", "_index": i, "url": f"https://example.org/{i}", "text": text, **cols}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Ten documents: two exported, rejections at every stage, payloads in text and model output."""
    run = tmp_path_factory.mktemp("run")
    docs = [row(0, SCRIPT_DOC), row(1, "Too short."), row(2, FILLER * 3), row(3, FILLER + " Cats sleep a lot."),
            row(4, FILLER + " Dogs bark.")] + [row(i, f"{FILLER} Topic {i}: tides and the moon.") for i in range(5, 10)]
    ok = lambda r, **c: dict(r, _status="done", **c)  # noqa: E731
    bad = lambda r, stage, reason, **c: dict(r, _status="rejected", stage=stage, reason=reason, **c)  # noqa: E731
    prepared = [ok(r) for r in docs if r["id"] != "doc-01"]
    StageStore(run / "stages" / "prepare").write([bad(docs[1], "prepare", "too_short")] + prepared)
    instr = {r["id"]: ok(r, instruction=f"What does text {r['_index']} say? </script><!--", instruction_raw="x")
             for r in prepared}
    instr["doc-02"] = bad(prepared[1], "backtranslate", "overlong_instruction", instruction_raw="word " * 200)
    StageStore(run / "stages" / "backtranslate").write(list(instr.values()))
    scored = {k: dict(v, score=5 if k in ("doc-00", "doc-03", "doc-04") else 2, score_expected=4.1,
                      score_probs={"1": 0.1, "2": 0.1, "3": 0.1, "4": 0.2, "5": 0.5},
                      score_reason="P(score=5)=0.50 <b>bold?</b>") for k, v in instr.items() if v["_status"] == "done"}
    for k, v in scored.items():
        if v["score"] < 5:
            scored[k] = bad(v, "curate", "low_score")
    StageStore(run / "stages" / "curate").write(list(scored.values()))
    kept = [v for v in scored.values() if v["_status"] == "done"]
    rewritten = [ok(kept[0], response="Zebracorn facts, rewritten: <script>window.__pwned=3</script> safely."),
                 ok(kept[1], response=FILLER + " Cats sleep a great deal."),
                 bad(kept[2], "rewrite", "truncated_rewrite", response=None, response_raw="Dogs bark and bark and")]
    StageStore(run / "stages" / "rewrite").write(rewritten)
    # a stage stats.json does not list: its place comes from the pipeline's known order
    grounded = [dict(r, unsupported_share=0.1, unsupported_numbers=["1999"], unsupported_names=[],
                     unsupported_words=["sofa"]) for r in rewritten[:2]]
    StageStore(run / "stages" / "grounding").write(grounded)
    StageStore(run / "stages" / "distill").write(
                [dict(r, distilled="<img src=x onerror=window.__pwned=4> distilled") for r in grounded])
    write_jsonl(run / "sft.jsonl", [{"id": r["id"], "instruction": r["instruction"], "response": r["response"]}
                                    for r in rewritten[:2]])
    stats = {"variant": "filter+rewrite",
             "funnel": {"documents_in": 10, "prepared": 9, "instructions": 8, "scored": 8, "kept": 3,
                        "rewritten": 2, "exported": 2},
             "stages": {"prepare": {"rejected_by_reason": {"too_short": 1}},
                        "backtranslate": {"rejected_by_reason": {"overlong_instruction": 1}},
                        "curate": {"rejected_by_reason": {"low_score": 5},
                                   "score_distribution": {"1": 0, "2": 5, "3": 0, "4": 0, "5": 3}},
                        "rewrite": {"rejected_by_reason": {"truncated_rewrite": 1}}},
             "outputs": {"sft": 2, "rejects": 8}}
    (run / "stats.json").write_text(json.dumps(stats))
    (run / "config.yaml").write_text("curate:\n  threshold: 5\n")
    analyze(run, tokenizer=None)  # tiny sets: every comparison null with a note, no embedder loaded
    write_report(run)
    return run


def test_safe_json_cannot_close_the_script_block():
    text = safe_json({"doc": "</script><script>alert(1)</script><!-- & \u2028"})
    assert "</" not in text and "<!--" not in text and "<" not in text
    assert json.loads(text) == {"doc": "</script><script>alert(1)</script><!-- & \u2028"}


def test_word_diff_marks_inserted_and_deleted_words():
    segs = word_diff("The cat sat on the mat today.", "The cat sat on the sofa today, happily.")
    assert segs[0] == ["=", "The cat sat on the "]
    assert ["-", "mat today."] in segs and ["+", "sofa today, happily."] in segs


def test_report_is_one_self_contained_file(run_dir):
    page = (run_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing loads from the network
    assert page.count("data:image/png;base64,") >= 3
    data = page.split('id="examples-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data  # the payloads travel escaped
    assert "How far apart the sets are" in page


def browser():
    """Playwright's Chromium on Debian's binary; a missing browser is a failure, not a skip."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `make test` installs it (pip install playwright)")
    return sync_playwright()


def test_report_in_a_real_browser(run_dir):
    problems: list[str] = []
    with browser() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto((run_dir / "report.html").as_uri())
        page.wait_for_selector(".example")

        assert problems == []
        assert page.evaluate("typeof window.__pwned") == "undefined"
        figures = page.locator("img.fig")
        assert figures.count() == 3
        for i in range(3):
            box = figures.nth(i).bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100
            assert figures.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
        assert page.locator("#example-list img, #example-list script").count() == 0
        assert page.locator("table").count() >= 3  # rejects, comparisons, per-set

        cards = page.locator("#example-list .example")
        assert cards.count() == 10
        first = page.locator('.example[data-id="doc-00"]')
        assert "<script>window.__pwned=1</script>" in first.locator(".col").first.inner_text()
        assert "</script><img src=x onerror=window.__pwned=2>" in first.inner_text()
        assert first.locator("ins").count() >= 1 and first.locator("del").count() >= 1

        cats = page.locator('.example[data-id="doc-03"]').inner_text()
        assert "grounding check: unsupported share 0.1; numbers: 1999; words: sofa" in cats
        assert "<img src=x onerror=window.__pwned=4> distilled" in cats

        page.fill("#search", "zebracorn")
        assert cards.count() == 1 and cards.first.get_attribute("data-id") == "doc-00"
        page.fill("#search", "")
        assert cards.count() == 10

        page.select_option("#filter-stage", "curate")
        assert cards.count() == 5
        assert all("at curate" in t for t in cards.locator(".ex-stage").all_inner_texts())
        page.select_option("#filter-stage", "")
        page.select_option("#filter-reason", "truncated_rewrite")
        assert cards.count() == 1 and "Dogs bark and bark" in cards.first.inner_text()
        page.select_option("#filter-reason", "")
        page.select_option("#filter-status", "exported")
        assert sorted(cards.evaluate_all("cs => cs.map(c => c.dataset.id)")) == ["doc-00", "doc-03"]
        page.select_option("#filter-status", "")

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert problems == []
        chromium.close()
    assert os.path.getsize(ARTIFACTS / "report.png") > 10_000
