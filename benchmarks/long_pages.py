"""Long pages: what each stage does with pages of 2,000 to 20,000 characters, and which way of keeping
them whole exports more grounded pairs, per page and per token.

The pages: 12 real pages of Python's documentation (Debian's `python3-doc`, read through backforth's
HTML reader), 4 each of 2-5k, 5-10k and 10-20k characters of main text, drawn with a fixed seed,
in each length bin 2 from the how-tos, tutorial and FAQ (prose) and 2 from the library reference. They are copied into `<out>/pages/` and every
option reads that folder, with the config given (default: the demo's, backforth/data/demo.yaml:
the 1.5B backtranslates and scores, the 0.5B rewrites at `rewrite.max_tokens` 512); distillation
is off (it does not read the page).

Options, each a run dir under `--out` (re-running resumes; each stage's chunks are 4 rows, so a
stopped run loses little):

* `whole`: each page as one document;
* `budget`: the same instructions and scores as `whole` (its run dir up to `curate` is copied, so
  the two differ only in the rewrite), with `rewrite.page_budget` 1.2: a page of N tokens may be
  rewritten in up to 1.2 N tokens;
* `split`: `prepare.split` at its defaults (sections of 600-3,000 characters cut at headings), the
  default since this benchmark chose it;
* `split2k`: `prepare.split` with `max_chars` 2,000 (sections that fit a 512-token rewrite).

Printed per option: pages, documents, pairs exported, pages with at least one pair, truncated
rewrites (`truncated_rewrite`), rewrites rejected as ungrounded, tokens read and written by each model
stage, pairs per page and per 10k tokens, and the seconds its stages took (summed over resumed holds;
`budget` counts the stages it shares with `whole` too, as a run of its own would pay them); then, for `whole` and `split`, a row
per page (its length, its pairs or what stopped them).

    python benchmarks/long_pages.py --out runs/long_pages [--options whole,budget,split,split2k]

Run it under the CPU lock; split long measurements into holds with --options (a stopped run resumes).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
from collections import Counter
from pathlib import Path

from backforth.config import load_config
from backforth.pipeline import registry
from backforth.pipeline.store import RunStore
from backforth.web import extract
from backforth.workflows import run as run_pipeline

DOCS = Path("/usr/share/doc/python3-doc/html")
DEMO = Path(__file__).resolve().parent.parent / "backforth" / "data" / "demo.yaml"
BINS = [(2000, 5000), (5000, 10000), (10000, 20001)]
OPTIONS = {
    "whole": ["prepare.split.enabled=false"],
    "budget": ["prepare.split.enabled=false", "rewrite.page_budget=1.2"],
    "split": ["prepare.split.enabled=true"],
    "split2k": ["prepare.split.enabled=true", "prepare.split.max_chars=2000"],
}


def pick_pages(folder: Path, per_bin: int = 4, seed: int = 23) -> list[Path]:
    """Copy the chosen pages into `folder` (once) and return them."""
    if folder.is_dir() and any(folder.glob("*.html")):  # chosen once: every option reads the same pages
        return sorted(folder.glob("*.html"))
    candidates: list[tuple[int, Path]] = []
    for sub in ("howto", "tutorial", "faq", "library"):
        for path in sorted((DOCS / sub).glob("*.html")):
            page = extract(path.read_bytes())
            if page is not None and BINS[0][0] <= len(page.text) < BINS[-1][1]:
                candidates.append((len(page.text), path))
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for lo, hi in BINS:  # half prose (how-tos, tutorial, FAQ), half reference (library), per length bin
        in_bin = [p for n, p in candidates if lo <= n < hi]
        prose = [p for p in in_bin if p.parent.name != "library"]
        chosen = rng.sample(prose, min(len(prose), per_bin // 2))
        chosen += rng.sample([p for p in in_bin if p not in chosen], per_bin - len(chosen))
        for path in chosen:
            shutil.copy(path, folder / f"{path.parent.name}-{path.name}")
    return sorted(folder.glob("*.html"))


def run_option(name: str, out: Path, pages: Path, config: Path) -> dict:
    sets = [f"input.path={pages}", "distill.enabled=false", "runner.progress=false", "runner.chunk_size=4"]
    cfg = load_config(config, sets + OPTIONS[name])
    run_dir = out / name
    force = False
    if name == "budget" and not (run_dir / "stages").is_dir():
        whole = out / "whole"
        base = load_config(config, sets + OPTIONS["whole"])
        run_pipeline(base, whole, until="curate")  # the instructions and scores both share
        run_dir.mkdir(parents=True)
        shutil.copytree(whole / "stages", run_dir / "stages",
                        ignore=lambda d, names: [n for n in names if n in ("rewrite", "grounding", "distill")])
        shutil.copy(whole / "fingerprints.json", run_dir / "fingerprints.json")
        force = True  # whole's fingerprints name its rewrite settings: redo rewrite (not yet run here)
    return run_pipeline(cfg, run_dir, force=force)


def summary(name: str, out: Path, stats: dict) -> dict:
    run = RunStore(out / name)
    stages = [s for s in registry.NAMES if run.stage(s).exists()]
    rows = [r for r, _last in run.final(stages)]
    pages = {r.get("source_id") or r["id"] for r in rows}
    sft = [json.loads(line) for line in open(out / name / "sft.jsonl", encoding="utf-8")]
    with_pair = {next(r.get("source_id") or r["id"] for r in rows if r["id"] == p["id"]) for p in sft}
    reasons = Counter((r["stage"], r["reason"]) for r in map(json.loads, open(out / name / "rejects.jsonl", encoding="utf-8")))
    tokens = {s: (st["prompt_tokens"], st["completion_tokens"]) for s, st in stats["stages"].items()
              if st["prompt_tokens"] or st["completion_tokens"]}
    total = sum(p + c for p, c in tokens.values())
    return {"option": name, "pages": len(pages), "documents": stats["funnel"].get("documents_in"),
            "pairs": len(sft), "pages_with_pair": len(with_pair),
            "truncated": reasons.get(("rewrite", "truncated_rewrite"), 0),
            "ungrounded": sum(n for (s, r), n in reasons.items() if s == "grounding"),
            "tokens": tokens, "total_tokens": total,
            "pairs_per_page": round(len(sft) / max(1, len(pages)), 2),
            "pairs_per_10k_tokens": round(len(sft) / total * 1e4, 2) if total else None,
            "seconds": {s: st["seconds"] for s, st in stats["stages"].items() if st["seconds"] >= 1},
            "stage_s": round(sum(st["seconds"] for st in stats["stages"].values())),
            "rejected_by": {f"{s}:{r}": n for (s, r), n in reasons.items()}}


def per_page(name: str, out: Path) -> list[str]:
    run = RunStore(out / name)
    stages = [s for s in registry.NAMES if run.stage(s).exists()]
    by_page: dict[str, list[str]] = {}
    chars: Counter = Counter()
    for r, last in run.final(stages):
        page = r.get("source_id") or r["id"]
        chars[page] += len(r.get("text") or "")
        if r["_status"] == "done" and last == stages[-1]:
            resp = r.get("response") or ""
            by_page.setdefault(page, []).append(f"pair (score {r.get('score')}, response {len(resp)} of {len(r['text'])} chars)")
        else:
            by_page.setdefault(page, []).append(f"{r.get('stage', last)}: {r.get('reason')}")
    lines = [f"| page | chars | {name}: what became of it |", "|---|---|---|"]
    for page in sorted(by_page, key=lambda p: chars[p]):
        outcome = Counter(by_page[page])
        lines.append(f"| {page} | {chars[page]:,} | " + "; ".join(f"{n} x {o}" if n > 1 else o for o, n in outcome.items()) + " |")
    return lines


def table(rows: list[dict]) -> list[str]:
    head = ["option", "pages", "documents", "pairs", "pages with a pair", "truncated rewrites", "ungrounded",
            "tokens (prompt+completion)", "pairs/page", "pairs/10k tokens", "stage seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in (
            r["option"], r["pages"], r["documents"], r["pairs"], r["pages_with_pair"], r["truncated"], r["ungrounded"],
            f"{r['total_tokens']:,}", r["pairs_per_page"], r["pairs_per_10k_tokens"], r["stage_s"])) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/long_pages"))
    ap.add_argument("--options", default=",".join(OPTIONS))
    ap.add_argument("--config", type=Path, default=DEMO)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # the runs' own messages
    pages = pick_pages(args.out / "pages")
    print(f"{len(pages)} pages in {args.out / 'pages'}")
    results = []
    for name in args.options.split(","):
        stats = run_option(name, args.out, args.out / "pages", args.config)
        results.append(summary(name, args.out, stats))
        (args.out / f"{name}.summary.json").write_text(json.dumps(results[-1], indent=2))
    everything = [json.loads((args.out / f"{n}.summary.json").read_text()) for n in OPTIONS
                  if (args.out / f"{n}.summary.json").is_file()]
    print("\n" + "\n".join(table(everything)))
    for r in everything:
        print(f"\n{r['option']}: tokens by stage {r['tokens']}; seconds {r['seconds']}; rejects {r['rejected_by']}")
    for name in ("whole", "split"):
        if (args.out / f"{name}.summary.json").is_file():
            print("\n" + "\n".join(per_page(name, args.out)))


if __name__ == "__main__":
    main()
