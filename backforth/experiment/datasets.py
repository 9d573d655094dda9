"""The datasets an experiment compares, derived from one pipeline run, and the external ones.

One run serves every pipeline dataset: backtranslation and scoring run once, rewriting and
distillation once over every instruction any compared dataset needs, and each dataset is a view of
those rows:

* `filter` (Humpback): the pairs the run's keep rule keeps (`curate.threshold`, `threshold_on`,
  `keep_share`: the decision the stage that applies it recorded, `keep`), the cleaned document as the
  response;
* `rewrite`: every pair with a grounded rewrite, scored or not (no filter);
* `filter+rewrite`: the rewritten pairs the keep rule keeps;
* `distill`: the instructions of `filter+rewrite`, answered by the distiller without the document.

At the compared size every dataset takes its pairs in one shared random order (a hash of the seed
and the row id). The datasets drawn from the pairs the keep rule keeps (`filter`, `filter+rewrite`,
`distill`: `SHARED`) take the instructions common to all of them first, so they hold the same
instructions with different responses, as the paper's comparison asks. `rewrite` has no filter: it
samples its own, larger pool in the same order, without preferring the kept pairs (else at equal size
it would be `filter+rewrite` again, and the comparison could not show what filtering adds).
External datasets (chat `messages`, `instruction`/`response` or Alpaca's `instruction`/`input`/
`output`, ShareGPT's `conversations`) are read from a file or the hub and sampled the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import UserError
from ..pipeline.stage import DONE
from ..pipeline.store import RunStore
from .config import ExperimentConfig, ExternalDataset


class DatasetError(UserError):
    """An external dataset that cannot be read as pairs, or a comparison with nothing to compare."""


SHARED = ("filter", "filter+rewrite", "distill")  # the kept pairs, with three kinds of response
DERIVATION = 3  # in the datasets step's fingerprint: a change of the rules above redoes that step


def kept(rows: list[dict]) -> set[str]:
    """Ids the run's keep rule keeps: the decision its deciding stage recorded on each row (`keep`;
    the last such stage's, as Humpback's second round decides over the first)."""
    return {r["id"] for r in rows if r.get("keep")}


def pipeline_datasets(run_dir: Path, chain: list[str], cfg: ExperimentConfig) -> dict[str, list[dict]]:
    """Every pipeline dataset the experiment compares, as (id, instruction, response) rows in input order."""
    rows = [r for r, _last in RunStore(run_dir).final(chain) if r.get("instruction")]
    kept_ids = kept(rows)
    rewritten = [r for r in rows if r.get("_status") == DONE and r.get("response")]
    pair = lambda r, response: {"id": r["id"], "instruction": r["instruction"], "response": response}  # noqa: E731
    made = {
        "filter": [pair(r, r["text"]) for r in rows if r["id"] in kept_ids],
        "rewrite": [pair(r, r["response"]) for r in rewritten],
        "filter+rewrite": [pair(r, r["response"]) for r in rewritten if r["id"] in kept_ids],
        "distill": [pair(r, r["distilled"]) for r in rewritten if r["id"] in kept_ids and r.get("distilled")],
    }
    return {name: made[name] for name in cfg.pipeline_datasets()}


def order_key(seed: int, row_id: str) -> str:
    return hashlib.sha1(f"{seed}:{row_id}".encode()).hexdigest()


def equal_size(datasets: dict[str, list[dict]], shared: Iterable[str], size: int | None, seed: int) -> tuple[dict[str, list[dict]], int]:
    """Each dataset cut to the same size (`size`, or the smallest), in the shared order; the `shared`
    datasets take the instructions they all have first."""
    sizes = {n: len(rows) for n, rows in datasets.items()}
    empty = [n for n, k in sizes.items() if k == 0]
    if empty:
        raise DatasetError(f"dataset(s) {', '.join(empty)} have no pairs: nothing to compare at equal size. Look at "
                           "the pipeline run's report (rejects by reason), or drop them from `datasets`.")
    n = min(sizes.values()) if size is None else min(size, *sizes.values())
    shared = [p for p in shared if p in datasets]
    common = set.intersection(*({r["id"] for r in datasets[p]} for p in shared)) if shared else set()
    out = {}
    for name, rows in datasets.items():
        first = common if name in shared else set()
        ranked = sorted(rows, key=lambda r: (r["id"] not in first, order_key(seed, r["id"])))
        chosen = {r["id"] for r in ranked[:n]}
        out[name] = [r for r in rows if r["id"] in chosen]  # input order
    return out, n


def _pair_of(rec: dict) -> tuple[str | None, str | None]:
    """(instruction, response) of one record in any of the usual SFT formats."""
    if isinstance(rec.get("messages"), list):
        users = [m.get("content") for m in rec["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        bots = [m.get("content") for m in rec["messages"] if isinstance(m, dict) and m.get("role") == "assistant"]
        return (users[0] if users else None), (bots[-1] if bots else None)
    if isinstance(rec.get("conversations"), list):  # ShareGPT
        turns = rec["conversations"]
        human = [t.get("value") for t in turns if isinstance(t, dict) and t.get("from") in ("human", "user")]
        gpt = [t.get("value") for t in turns if isinstance(t, dict) and t.get("from") in ("gpt", "assistant")]
        return (human[0] if human else None), (gpt[0] if gpt else None)
    instruction = rec.get("instruction") or rec.get("prompt")
    if instruction and rec.get("input"):  # Alpaca
        instruction = f"{instruction}\n\n{rec['input']}"
    return instruction, rec.get("response") or rec.get("output") or rec.get("completion")


def external_dataset(spec: ExternalDataset) -> list[dict]:
    """An external dataset's pairs from a file (.jsonl, .json, .parquet) or a hub dataset name."""
    path = Path(spec.path).expanduser()
    if path.exists():
        from ..io import UnreadableFileError, iter_records

        try:
            records = [(w, r) for w, r, _p in iter_records(path) if r is not None]
        except UnreadableFileError as err:
            raise DatasetError(f"dataset {spec.name}: {err}") from None
    else:
        try:
            import datasets

            records = [(f"{spec.path}#{i}", dict(r)) for i, r in enumerate(datasets.load_dataset(spec.path, split=spec.split))]
        except Exception as err:  # noqa: BLE001 - network, name, split: one message
            raise DatasetError(f"dataset {spec.name}: {spec.path} is not a file here, and loading it from the hub "
                               f"failed ({type(err).__name__}: {err}). Give a local copy's path.") from None
    rows = []
    for i, (where, rec) in enumerate(records):
        instruction, response = _pair_of(rec)
        if isinstance(instruction, str) and instruction.strip() and isinstance(response, str) and response.strip():
            rows.append({"id": str(rec.get("id") or f"{spec.name}-{i}"), "instruction": instruction.strip(),
                         "response": response.strip()})
    if not rows:
        raise DatasetError(f"dataset {spec.name} ({spec.path}): no record has an instruction and a response "
                           "(chat `messages`, `instruction`/`response` or `output`, or `conversations`)")
    return rows


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
