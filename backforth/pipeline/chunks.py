"""The unit of work of every executor: one chunk of rows through one stage.

`build_chunk` copies the rows and collects the requests their stage needs, remembering whose is
whose; the engine answers them; `finish_chunk` applies the results, and each row ends done or
rejected with its reason. A row whose request failed because the server was unreachable (a
`retryable` result) is left out, unfinished, so that a resumed run sends it again: a partial chunk
is a return value (`Finished.unfinished`), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engines.base import Engine, Result
from .stage import DONE, LATER, REJECTED, Stage
from .store import BOOKKEEPING
from .tokens import count_results


@dataclass
class Pending:
    rows: list[dict]  # copies, which the stage fills in
    bases: list[dict | None]  # the rows as received (what the store compares against)
    spans: list[tuple[int, int] | None]  # each row's requests; None for a bad input line
    requests: list


@dataclass
class Finished:
    rows: list[dict]
    bases: list[dict | None]
    unfinished: int = 0  # rows left for the next run: the server could not be reached
    failed: list[dict] = field(default_factory=list)  # {"id", "error"}: left unfinished by the stage's choice


def build_chunk(st: Stage, chunk: list[dict], first: bool = False) -> Pending:
    """`first`: the chunk comes from the input, so a row is stored whole (nothing earlier holds it)."""
    rows, bases, spans, requests = [], [], [], []
    for row in chunk:
        base = None if first else {k: v for k, v in row.items() if k not in BOOKKEEPING[2:]}
        row = dict(base or row)
        rows.append(row)
        bases.append(base)
        if "_reject" in row:  # a bad input line: it goes straight to the rejects
            spans.append(None)
            continue
        reqs = st.requests(row)
        spans.append((len(requests), len(requests) + len(reqs)))
        requests.extend(reqs)
    return Pending(rows, bases, spans, requests)


def finish_chunk(st: Stage, pending: Pending, results: list[Result]) -> Finished:
    out = Finished([], [])
    count_results(st.count, results)  # every call of the chunk, the rows left unfinished too: they were paid for
    for row, base, span in zip(pending.rows, pending.bases, pending.spans):
        mine = [] if span is None else results[span[0]:span[1]]
        if any(r.retryable for r in mine):
            out.unfinished += 1  # not the row's fault: leave it for the resumed run
            continue
        if st.failed_stay_unfinished and any(not r.ok for r in mine):
            out.failed.append({"id": row["id"], "error": next(r.error for r in mine if not r.ok)})
            continue
        if span is None:
            row.update(_status=REJECTED, stage="input", reason=row.pop("_reject"), detail=row.pop("_detail", None))
        else:
            reason = st.apply(row, mine)
            if reason == LATER:
                continue  # left for a later run, not rejected
            row["_status"] = DONE if reason is None else REJECTED
            if reason is not None:
                row.update(stage=st.name, reason=reason)
        out.rows.append(row)
        out.bases.append(base)
    return out


def process_chunk(st: Stage, engine: Engine | None, chunk: list[dict], first: bool = False) -> Finished:
    """One chunk through one stage, synchronously (a Ray actor's batch)."""
    pending = build_chunk(st, chunk, first)
    results = engine.generate(pending.requests) if pending.requests else []
    return finish_chunk(st, pending, results)
