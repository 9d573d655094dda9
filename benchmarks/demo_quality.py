"""Is the demo's data worth reading? The targets of the embedded default, checked on a finished run dir.

Reads `RUN_DIR` (after `make demo`: runs/demo) and the bundled corpus, whose `source` field labels
each page: the pages written for the demo (howto, explainer, recipe, product, news, forum,
boilerplate) and the real ones no one here wrote (`real-*`: python-docs, man-page, package-readme
are worth a pair; licence, changelog, navigation are not). Prints, with PASS/FAIL:

* the share of documents exported (target >= 25%);
* the share of exported pairs that are degenerate (target <= 10%): a phrase looping, the
  instruction echoed as the answer, left-over scaffolding (`[RES]`, `[Question]`, `Answer:` at the
  top, the prompt's own tags), or an answer under five words. The looping and echo checks are the
  ones the rewrite stage applies (`parsing.degenerate_reason`), so read the pairs too;
* the share of junk pages rejected (target >= 90%: boilerplate, product and forum pages, and the
  real licence, changelog and navigation pages) and of good pages exported (target >= 40%: how-to,
  explainer and recipe pages, and the real documentation pages, man pages and READMEs), for the
  written pages and the real ones apart;
* the number of distilled answers (the analysis's distilled-halves ceiling needs 8) and whether
  every analysis in analysis.json has numbers;
* three exported pairs, verbatim.

    python benchmarks/demo_quality.py runs/demo [--corpus backforth/data/demo_corpus.jsonl]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from backforth.pipeline.stages.parsing import degenerate_reason, words

BAD_SOURCES = {"boilerplate", "product", "forum", "licence", "changelog", "navigation"}
GOOD_SOURCES = {"howto", "explainer", "recipe", "python-docs", "man-page", "package-readme"}
_SCAFFOLD = re.compile(r"\[/?RES\]|\[/?(?:question|answer)\]|</?(?:draft|question|answer)>|^\s*(?:question|answer|response)\s*:",
                       re.IGNORECASE | re.MULTILINE)


def degenerate(pair: dict) -> str | None:
    response, instruction = pair["response"] or "", pair["instruction"]
    if len(words(response)) < 5:
        return "too_short"
    if _SCAFFOLD.search(response):
        return "scaffolding"
    if words(response)[: len(words(instruction))] == words(instruction):
        return "instruction_echoed"
    return degenerate_reason(response, instruction)


def _status(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--corpus", type=Path, default=Path(__file__).parent.parent / "backforth" / "data" / "demo_corpus.jsonl")
    args = ap.parse_args()
    source = {json.loads(line)["id"]: json.loads(line).get("source") for line in args.corpus.open()}
    sft = [json.loads(line) for line in (args.run_dir / "sft.jsonl").open()]
    path = args.run_dir / "distilled.parquet"
    distilled = pq.read_metadata(path).num_rows if path.is_file() else 0
    exported = {r["id"] for r in sft}
    n = len(source)
    share = len(exported) / n
    bad = [i for i, s in source.items() if s in BAD_SOURCES]
    good = [i for i, s in source.items() if s in GOOD_SOURCES]
    bad_rejected = sum(i not in exported for i in bad) / len(bad)
    good_exported = sum(i in exported for i in good) / len(good)
    real = {i for i in source if i.startswith("real-")}
    degen = {r["id"]: d for r in sft if (d := degenerate(r))}
    degen_share = len(degen) / len(sft) if sft else 0.0
    print(f"exported: {len(exported)} of {n} documents ({share:.0%})  [target >= 25%: {_status(share >= 0.25)}]")
    print(f"degenerate exported pairs: {len(degen)} of {len(sft)} ({degen_share:.0%}) {degen or ''}  "
          f"[target <= 10%: {_status(degen_share <= 0.10)}]")
    print(f"junk pages rejected: {bad_rejected:.0%} of {len(bad)}  [target >= 90%: {_status(bad_rejected >= 0.9)}]")
    print(f"good pages exported: {good_exported:.0%} of {len(good)}  [target >= 40%: {_status(good_exported >= 0.4)}]")
    for name, ids in (("written for the demo", set(source) - real), ("real (no one here wrote them)", real)):
        g, b = [i for i in good if i in ids], [i for i in bad if i in ids]
        if ids:
            print(f"  {name}: exported {sum(i in exported for i in ids)} of {len(ids)}; good exported "
                  f"{sum(i in exported for i in g)}/{len(g)}, junk rejected {sum(i not in exported for i in b)}/{len(b)}")
    by_source = {}
    for i, s in source.items():
        by_source.setdefault(s, [0, 0])[i in exported] += 1
    print("exported by source: " + ", ".join(f"{s} {k}/{r + k}" for s, (r, k) in sorted(by_source.items())))
    analysis = args.run_dir / "analysis.json"
    if analysis.is_file():
        text = analysis.read_text()
        missing = text.count("needs at least")
        print(f"distilled answers: {distilled} [the ceiling needs 8: {_status(distilled >= 8)}]; analyses without numbers: "
              f"{missing} [{_status(missing == 0)}]")
    else:
        print(f"distilled answers: {distilled}; no analysis.json (run `backforth analyze {args.run_dir}`)")
    print()
    for r in sft[:3]:
        print(json.dumps({k: r[k] for k in ("id", "instruction", "response", "score")}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
