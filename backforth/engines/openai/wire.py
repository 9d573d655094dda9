"""What goes over the wire: request bodies for /chat/completions and /completions, and the parts
of a response (or an error response) the engine reads.

No tokenizer or chat template is available client-side: a chat request sent to /completions has
its messages joined plainly, and prompts that are too long are left for the server to refuse.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..base import Request, Result

TOP_LOGPROBS = 20  # the most vLLM (default max_logprobs) and hosted chat APIs return
_ERROR_SNIPPET = 200  # characters of a server's error message kept in Result.error


# ---- request bodies -----------------------------------------------------------------------------

def payload(req: Request, model: str, api: str) -> tuple[str, dict]:
    """(path, JSON body). A raw prompt always goes to /completions; messages follow `api`."""
    if req.prompt is not None or api == "completions":
        body: dict[str, Any] = {"model": model, "prompt": prompt_text(req)}
        path = "/completions"
    else:
        messages = list(req.messages or [])
        body = {"model": model, "messages": messages}
        if req.assistant_prefix:
            messages.append({"role": "assistant", "content": req.assistant_prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)  # vLLM/SGLang extensions
        path = "/chat/completions"
    if req.choices:
        body.update(max_tokens=1, temperature=0.0)
        if path == "/chat/completions":
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        else:
            body["logprobs"] = TOP_LOGPROBS
    else:
        body.update(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p)
        if req.stop:
            body["stop"] = list(req.stop)
    return path, body  # never a per-request `seed`: it would make every sample of a prompt identical


def prompt_text(req: Request) -> str:
    """The raw text for /completions. Messages are joined plainly: no chat template exists client-side."""
    text = req.prompt if req.prompt is not None else "\n\n".join(str(m.get("content", "")) for m in req.messages or [])
    return text + (req.assistant_prefix or "")


def prefix_key(req: Request) -> str:
    """The text a server's prefix cache sees, in order: what sorting groups by."""
    if req.prompt is not None:
        return req.prompt + (req.assistant_prefix or "")
    parts = [f"{m.get('role', '')}\x1f{m.get('content', '')}" for m in req.messages or []]
    return "\x1e".join(parts) + "\x1e" + (req.assistant_prefix or "")


# ---- responses ----------------------------------------------------------------------------------

def choice_text(choice: dict) -> str:
    if "message" in choice:
        return (choice.get("message") or {}).get("content") or ""
    return choice.get("text") or ""


def score_choices(req: Request, choice: dict, result: Result) -> Result:
    """Fill `result` from the first position's top logprobs for a request with `choices`."""
    top = top_logprobs(choice)
    if top is None:
        result.error = "server returned no logprobs (does it support `logprobs`/`top_logprobs`?)"
        result.finish_reason = "error"
        return result
    table = match_choices(req.choices or [], top)
    result.choice_logprobs = table
    best = max(table, key=table.get) if table else ""
    if best and table[best] != float("-inf"):
        result.text = best  # same convention as the transformers engine: text is the winning choice
    return result


def top_logprobs(choice: dict) -> dict[str, float] | None:
    """{token: logprob} of the first generated position, from either endpoint's response shape."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    if isinstance(lp.get("content"), list):  # chat: content[0].top_logprobs = [{token, logprob}, ...]
        if not lp["content"]:
            return None
        entries = lp["content"][0].get("top_logprobs") or []
        return {e["token"]: e["logprob"] for e in entries if isinstance(e, dict) and e.get("logprob") is not None}
    tops = lp.get("top_logprobs")  # completions: top_logprobs[0] = {token: logprob}
    if isinstance(tops, list) and tops and isinstance(tops[0], dict):
        return {t: v for t, v in tops[0].items() if v is not None}
    return None


def match_choices(choices: list[str], top: dict[str, float]) -> dict[str, float]:
    """Each choice's logprob; " 5" and "5" both count as "5" (the higher wins); absent ones are -inf."""
    table = {c: float("-inf") for c in choices}
    wanted = {c.strip(): c for c in choices}
    for token, logprob in top.items():
        c = wanted.get(token.strip())
        if c is not None:
            table[c] = max(table[c], float(logprob))
    return table


def server_message(resp: httpx.Response) -> str:
    """The short human part of an error body ({"error": {"message": ...}}, {"detail": ...}, or text)."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text.strip()[:_ERROR_SNIPPET] or resp.reason_phrase
    msg: Any = data
    if isinstance(data, dict):
        msg = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
    return str(msg).strip()[:_ERROR_SNIPPET]


def retry_after(resp: httpx.Response) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (backoff applies instead)."""
    value = resp.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
