"""A model server that restarts mid-stage is waited out: the run goes on and finishes, every row once,
and no request is sent again after the server answered it (counted at the stub server)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter

from stub_openai import StubOpenAIServer
from test_runner_openai import doc_number, make_config, responder, stage_of

from run_files import read_sft
from backforth.engines.openai import OpenAIEngine
from backforth.workflows import run

N_DOCS = 40
OUTAGE_S = 20.0  # the server is away this long, from the 10th backtranslation request on
STAGES = ("page_kind", "backtranslate", "curate", "rewrite", "distill")


class Engines:
    """Engines as build_engine makes them (wait_for_server_s 600 by default), probing at most 0.5 s apart."""

    def __init__(self):
        self.engines: list[OpenAIEngine] = []

    def __call__(self, m) -> OpenAIEngine:
        eng = OpenAIEngine(m.model, base_url=m.base_url, max_in_flight=m.max_in_flight, timeout_s=m.timeout_s,
                           max_retries=m.max_retries, api=m.api, backoff_base_s=0.05, backoff_max_s=0.5,
                           wait_for_server_s=m.wait_for_server_s)
        self.engines.append(eng)
        return eng


class Timeline(logging.Handler):
    def __init__(self, t0: float):
        super().__init__(logging.WARNING)
        self.t0, self.events = t0, []

    def add(self, what: str) -> None:
        self.events.append((time.perf_counter() - self.t0, what))

    def emit(self, record: logging.LogRecord) -> None:
        self.add("engine: " + record.getMessage())


def test_a_server_restart_mid_stage_is_waited_out(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"doc{i:02d}", "text": f"Document {i} explains topic {i}. "
                                        + " ".join(f"fact{i}x{j}" for j in range(45))}) + "\n" for i in range(N_DOCS)))
    timeline = Timeline(time.perf_counter())
    seen = Counter()

    def delay(body):  # the 10th backtranslation request kills the server while it is being served
        if stage_of(body) == "backtranslate":
            seen["bt"] += 1
            if seen["bt"] == 10:
                threading.Thread(target=outage, daemon=True).start()
        return 0.05

    def outage():
        time.sleep(0.02)
        serving = stub.active
        stub.go_away()
        timeline.add(f"stub: server gone (port refuses connections; the {serving} requests it was serving dropped)")
        time.sleep(OUTAGE_S)
        stub.come_back()
        timeline.add("stub: server back on the same port")

    log = logging.getLogger("backforth.engines.openai")
    log.addHandler(timeline)
    try:
        with StubOpenAIServer(responder=responder, delay_s=delay) as stub:
            cfg = make_config(docs, stub, max_retries=2)
            engines = Engines()
            timeline.add("run starts")
            stats = run(cfg, tmp_path / "run", engine_factory=engines)
            timeline.add("run finished")
            stub.settle()
            posts = [r for r in stub.requests if isinstance(r["body"], dict)]
    finally:
        log.removeHandler(timeline)
    print("\n" + "\n".join(f"{t:6.2f} s  {what}" for t, what in timeline.events))

    sft = read_sft(tmp_path / "run")
    assert sorted(r["id"] for r in sft) == [f"doc{i:02d}" for i in range(N_DOCS)]  # every row, once
    assert stats["funnel"]["exported"] == N_DOCS
    answered = Counter((stage_of(r["body"]), doc_number(r["body"])) for r in posts if r["answered"])
    assert answered == Counter({(s, i): 1 for s in STAGES for i in range(N_DOCS)})  # each answered once
    dropped = [r for r in posts if not r["answered"]]
    assert dropped and all(stage_of(r["body"]) == "backtranslate" for r in dropped)
    for r in dropped:  # sent again after the restart, never after an answer
        key = (stage_of(r["body"]), doc_number(r["body"]))
        [answer] = [p for p in posts if p["answered"] and (stage_of(p["body"]), doc_number(p["body"])) == key]
        assert answer["t_in"] > r["t_in"]
    [eng] = engines.engines  # four roles, one model config: one engine
    assert [o["back"] for o in eng.server.outages] == [True] and eng.server.outages[0]["seconds"] >= OUTAGE_S - 1
    assert eng.stats["errors"] == 0
    said = [what for _t, what in timeline.events]
    assert any("is not answering" in w for w in said) and any("is back after" in w for w in said)
    assert not (tmp_path / "run" / "run.lock").exists()  # the run let go of its run dir
