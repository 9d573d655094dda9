"""`backforth eval ...` (backforth.evaluate.cli): outputs, exit codes, and a stub-server round trip."""

from __future__ import annotations

import json

import pytest
from stub_openai import StubOpenAIServer
from typer.testing import CliRunner

from backforth.cli import app  # `eval` as the CLI registers it, inside its one error path
from backforth.evaluate.data import BUNDLED_PATH

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["eval", *map(str, args)])


def judgements(path, prefs):
    rows = [{"instruction": f"Q{i}", "output_1": "ref" * 5, "output_2": "model" * (i + 1), "preference": p}
            for i, p in enumerate(prefs)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_winrate_prints_the_summary_json(tmp_path):
    path = judgements(tmp_path / "j.jsonl", [2, 2, 1, 1.5, None, 2])
    res = invoke("winrate", path)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["win_rate"] == pytest.approx(70.0)  # shares 1 1 0 .5 1
    assert (out["n_total"], out["n_wins"], out["n_wins_base"], out["n_draws"], out["n_unjudged"]) == (5, 3, 1, 1, 1)
    assert out["standard_error"] > 0 and "lc_win_rate" in out and out["length_source"] == "characters"


def test_winrate_single_row_has_null_standard_error(tmp_path):
    res = invoke("winrate", judgements(tmp_path / "j.jsonl", [2]))
    assert res.exit_code == 0 and json.loads(res.stdout)["standard_error"] is None


@pytest.mark.parametrize(("args", "match"), [
    (["winrate", "missing.jsonl"], "missing.jsonl: no such file"),
    (["compare", "no-equals-sign"], "NAME=FILE"),
    (["generate", "--out", "a.jsonl", "--eval-set", "nope.jsonl"], "nope.jsonl: no such file"),
    (["generate", "--out", "a.jsonl", "--suffix", "web", "--engine", "openai", "--model", "m"], "suffix 'web'"),
    (["generate", "--out", "a.jsonl", "--engine", "tpu"], "engine: 'tpu' is not an engine"),
])
def test_user_errors_exit_2_without_traceback(tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert match in res.stderr and "Traceback" not in res.output


def test_compare_prints_markdown_and_writes_csv(tmp_path):
    a = judgements(tmp_path / "a.jsonl", [2, 2, 1, 2])
    b = judgements(tmp_path / "b.jsonl", [1, 1, 2, 1])
    res = invoke("compare", f"Dolma + rewriting={a}@12.8K", f"ShareGPT={b}", "--csv", tmp_path / "t.csv",
                 "--markdown", tmp_path / "t.md")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("| Dataset | Size | Win rate (%)")
    assert lines[2].startswith("| Dolma + rewriting | 12.8K | 75.00 ± 25.00 |")
    assert lines[3].startswith("| ShareGPT |  | 25.00 ± 25.00 |")
    assert (tmp_path / "t.md").read_text() == res.stdout
    assert (tmp_path / "t.csv").read_text().splitlines()[1].startswith("Dolma + rewriting,12.8K,75.0,25.0,")


def _judge_reply(body: dict) -> str:
    """The stub judge prefers the answer that starts with 'stub:' (the model's), wherever it is."""
    text = body["messages"][-1]["content"]
    if "\nAnswer A:\n" not in text:
        return "stub:" + text[:40]  # a generation request: answer like the default stub
    return "A" if "\nAnswer A:\nstub:" in text else "Verdict: B"


def test_generate_then_judge_through_an_openai_server(tmp_path):
    refs = tmp_path / "refs.jsonl"
    questions = [json.loads(line) for line in open(BUNDLED_PATH)][:3]
    refs.write_text("".join(json.dumps({"instruction": q["instruction"], "output": "a reference", "generator": "ref"}) + "\n"
                            for q in questions))
    with StubOpenAIServer(responder=_judge_reply) as stub:
        server = ["--engine", "openai", "--model", "stub-model", "--base-url", stub.base_url, "--no-progress"]
        res = invoke("generate", "--out", tmp_path / "answers.jsonl", "--limit", 3, "--suffix", "assistant_web", *server)
        assert res.exit_code == 0, res.output
        assert "wrote 3 answers" in res.stdout
        answers = [json.loads(line) for line in open(tmp_path / "answers.jsonl")]
        assert answers[0]["suffix"] == "assistant_web" and answers[0]["output"].startswith("stub:")
        sent = stub.requests[0]["body"]
        assert sent["temperature"] == 0.7 and sent["top_p"] == 0.9
        assert sent["messages"][0]["content"].endswith("with knowledge from web search if needed.")

        judge_args = ["judge", tmp_path / "answers.jsonl", "--references", refs, "--out", tmp_path / "j.jsonl",
                      "--cache", tmp_path / "cache.jsonl", *server]
        res = invoke(*judge_args)
        assert res.exit_code == 0, res.output
        assert "wrote 3 judgements" in res.stdout and "6 judge calls" in res.stdout
        assert "win rate 100.00" in res.stdout
        rows = [json.loads(line) for line in open(tmp_path / "j.jsonl")]
        assert [r["preference"] for r in rows] == [2.0, 2.0, 2.0]
        assert rows[0]["raw_judgements"] == {"model_first": "A", "reference_first": "Verdict: B"}

        served = stub.count["/v1/chat/completions"]
        res = invoke(*[a if a != tmp_path / "j.jsonl" else tmp_path / "j2.jsonl" for a in judge_args])
        assert res.exit_code == 0 and "6 from cache" in res.stdout
        assert stub.count["/v1/chat/completions"] == served  # the cached judgements cost nothing


def test_judge_logprobs_through_an_openai_server(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"instruction": "Q", "output": "model answer"}) + "\n")
    refs = tmp_path / "refs.jsonl"
    refs.write_text(json.dumps({"instruction": "Q", "output": "reference answer"}) + "\n")
    with StubOpenAIServer(logprobs_for=lambda body: {"A": -0.2, " B": -1.8}) as stub:
        res = invoke("judge", answers, "-r", refs, "-o", tmp_path / "j.jsonl", "--method", "logprobs", "--no-cache",
                     "--engine", "openai", "--model", "stub-model", "--base-url", stub.base_url, "--no-progress")
        assert res.exit_code == 0, res.output
        body = stub.requests[0]["body"]
        assert body["messages"][-1] == {"role": "assistant", "content": "The better answer is "} and body["logprobs"] is True
    (row,) = [json.loads(line) for line in open(tmp_path / "j.jsonl")]
    assert row["preference"] == pytest.approx(1.5)  # a judge that leans to slot A whatever it reads: a draw
    assert row["preference_by_order"]["model_first"] > 1.5 > row["preference_by_order"]["reference_first"]
