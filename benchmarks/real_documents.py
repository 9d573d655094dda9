"""Does the filter keep the real web's good pages and reject its junk? The demo's models on labelled real pages.

The pages are `benchmarks/data/real_documents.jsonl`: Python's documentation (pydoc topics and the
HTML pages of Debian's python3-doc, navigation and all for a third of them), installed packages'
descriptions, man pages, licence texts and changelogs, which no one here wrote, and web-style junk
pages written for this benchmark; each labelled `good` or `junk` by reading it (would a good
instruction-response pair come from it?). See benchmarks/data/README.md.

The pages go through the product exactly as `backforth demo --input FILE` runs them (the demo's
config and models, any `--set` overrides), into a run dir that resumes: a changed keep rule re-runs
only curation and what follows. Printed: per page type, the pages, how many reached the scorer, the
mean expected score of good and junk pages, and the shares exported; the AUC (good over junk) of the
page-kind probability `page_kind_p` among the pages stage page_kind read, and of the expected score
among the scored pages (the final line's AUC is the filter's: the page kind's where that stage ran, a page
that prepare rejected counting as 0; else the score's); the same for the pages whose id hashes into the `dev`
third (the ones a rule may be tuned on) and the `held-out` rest; seconds per document; then

    real documents: AUC A, good exported G%, junk exported J%

    python benchmarks/real_documents.py [--out runs/bench-real] [--set curate.rubric=humpback ...]
                                        [--until curate] [--pages FILE] [--limit N] [--split dev|held-out]
                                        [--dump outcomes.jsonl] [--sections]
    python benchmarks/real_documents.py --from-runs RUN_DIR [RUN_DIR ...]

`--from-runs` reads finished runs of the demo's configuration whose input held these pages (e.g. a
`prefilter.enabled` run of benchmarks/data/real_corpus.jsonl and the run of the pages its pre-filter
skipped) instead of running the models; a page the pre-filter skipped in one takes its outcome from
another, and pages no run read are left out (the line says how many were measured).

`--sections` runs the demo's default of cutting long pages into sections (`prepare.split`), as a
user's run does; a page then counts as exported when any of its sections is, with its sections'
highest kind probability and score. Without it each page stays one document.

`--until curate` stops after curation (no rewriting): "exported" then reads "kept by the filter".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path

PAGES = Path(__file__).parent / "data" / "real_documents.jsonl"
DATA_DIR = Path(__file__).parent.parent / "backforth" / "data"


def auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a good page outscores a junk one), ties counting half."""
    if not pos or not neg:
        return None
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


def is_dev(page_id: str) -> bool:
    """The dev third of the pages (a stable hash of the id): what a keep rule may be tuned on."""
    return int(hashlib.sha1(page_id.encode()).hexdigest(), 16) % 3 == 0


def run_pages(pages: Path, out: Path, sets: list[str], until: str | None, limit: int | None,
              sections: bool = False) -> float:
    """The pages through the demo's configuration, as `backforth demo --input` runs them; seconds taken."""
    from backforth import workflows
    from backforth.config import load_config

    # Each page is labelled as a whole, so by default it stays one document; with `sections` prepare.split
    # cuts the long ones as the demo does, and `by_page` reads the page's outcome from its sections.
    cfg = load_config(DATA_DIR / "demo.yaml", [*([] if sections else ["prepare.split.enabled=false"]), *sets])
    cfg.input.path = str(pages)
    cfg.input.limit = limit
    t0 = time.perf_counter()
    workflows.run(cfg, out, until=until)
    return time.perf_counter() - t0


def outcomes(out: Path) -> dict[str, dict]:
    """Per page id: exported or not, its expected score (None when it never reached the scorer), and
    the stage and reason that rejected it."""
    from backforth.pipeline.store import RunStore

    run = RunStore(out)
    stages = [p.name for p in sorted(run.root.iterdir())] if run.root.is_dir() else []
    order = json.loads((out / "fingerprints.json").read_text())
    chain = [s for s in order if s in stages]
    result = {}
    for row, last in run.final(chain):
        value = row.get("score_expected", row.get("score"))
        result[row["id"]] = {"exported": row["_status"] == "done" and last == chain[-1], "score": value,
                             "kind_p": row.get("page_kind_p"), "kind": row.get("page_kind"),
                             "injection_removed": row.get("injection_removed"),
                             "stage": None if row["_status"] == "done" else row.get("stage"),
                             "reason": row.get("reason"), "instruction": row.get("instruction"),
                             "response": row.get("response", row.get("text"))}
    return result


def by_page(res: dict[str, dict]) -> dict[str, dict]:
    """Section outcomes (ids `<page id>#<n>`) folded into their page's: exported when any section is, the
    highest kind probability and score of its sections, and the stage and reason of its best section."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for section_id, r in res.items():
        groups[section_id.rsplit("#", 1)[0]].append(r)  # an id without "#" is its own page
    pages = {}
    for page_id, rs in groups.items():
        best = max(rs, key=lambda r: (r["exported"], r["score"] or 0.0, r["kind_p"] or 0.0))
        top = lambda k: max((r[k] for r in rs if r[k] is not None), default=None)  # noqa: E731
        pages[page_id] = {**best, "score": top("score"), "kind_p": top("kind_p"), "sections": len(rs),
                          "sections_exported": sum(r["exported"] for r in rs)}
    return pages


def merged_outcomes(runs: list[Path]) -> dict[str, dict]:
    """Outcomes of several runs over overlapping pages: a pre-filter's skip gives way to a real outcome."""
    result: dict[str, dict] = {}
    for out in runs:
        for page_id, r in outcomes(out).items():
            if page_id not in result or result[page_id]["reason"] == "prefilter_unlikely":
                result[page_id] = r
    return result


def report(pages: list[dict], res: dict[str, dict], label: str) -> tuple[float | None, float, float]:
    good = [p for p in pages if p["label"] == "good"]
    junk = [p for p in pages if p["label"] == "junk"]
    scored = lambda ps, k="score": [res[p["id"]][k] for p in ps if res.get(p["id"], {}).get(k) is not None]  # noqa: E731
    exported = lambda ps: sum(1 for p in ps if res.get(p["id"], {}).get("exported"))  # noqa: E731
    a_score, a_kind = auc(scored(good), scored(junk)), auc(scored(good, "kind_p"), scored(junk, "kind_p"))
    # The filter's AUC: a page that prepare rejected before the kind was read counts as P = 0.
    before = lambda ps: [0.0 for p in ps if res.get(p["id"], {}).get("stage") in ("input", "prepare", "dedup_documents")]  # noqa: E731
    a_filter = auc(scored(good, "kind_p") + before(good), scored(junk, "kind_p") + before(junk)) if a_kind is not None else None
    a = a_filter if a_filter is not None else a_score
    g = exported(good) / len(good) if good else 0.0
    j = exported(junk) / len(junk) if junk else 0.0
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    print(f"{label:10s} pages {len(pages):4d} (good {len(good)}, junk {len(junk)}), kind read "
          f"{len(scored(good, 'kind_p'))}+{len(scored(junk, 'kind_p'))}: AUC {fmt(a_kind)} (with the pages prepare "
          f"rejected as 0: {fmt(a_filter)}); scored "
          f"{len(scored(good))}+{len(scored(junk))}: AUC {fmt(a_score)}; good exported {exported(good)}/{len(good)} ({g:.0%}), "
          f"junk exported {exported(junk)}/{len(junk)} ({j:.0%})")
    return a, g, j


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=Path, default=PAGES)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-real"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="a config override, as `backforth --set`")
    ap.add_argument("--until", default=None, help="stop after this stage (e.g. curate: no rewriting)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--split", choices=["dev", "held-out"], default=None,
                    help="only the dev third of the pages (the ones a rule may be tuned on) or the held-out rest")
    ap.add_argument("--no-run", action="store_true", help="only read an existing run dir")
    ap.add_argument("--from-runs", type=Path, nargs="+", default=None,
                    help="only read these finished run dirs, whose input held the pages (see the docstring)")
    ap.add_argument("--sections", action="store_true",
                    help="cut long pages into sections as the demo does (prepare.split); a page counts as exported "
                         "when any of its sections is")
    ap.add_argument("--show", type=int, default=0, help="print this many exported pairs, verbatim")
    ap.add_argument("--dump", type=Path, default=None,
                    help="write each page's outcome (label, split, kind, P, stage, reason, score) to this jsonl, "
                         "so a keep rule can be studied without re-running the models")
    args = ap.parse_args()

    pages = [json.loads(line) for line in args.pages.open(encoding="utf-8") if line.strip()]
    pages = pages[: args.limit] if args.limit else pages
    source = args.pages
    if args.split:
        pages = [p for p in pages if is_dev(p["id"]) == (args.split == "dev")]
        source = args.out.with_name(args.out.name + f".{args.split}.jsonl")
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pages), encoding="utf-8")
    if args.from_runs:
        seconds, res = None, merged_outcomes(args.from_runs)
        missing = [p for p in pages if p["id"] not in res]
        pages = [p for p in pages if p["id"] in res]
        print(f"{len(pages)} pages read by {', '.join(map(str, args.from_runs))}; {len(missing)} not in them, left out")
        args.out = args.from_runs[0]
    else:
        seconds = None if args.no_run else run_pages(source, args.out, args.sets, args.until, args.limit, args.sections)
        res = by_page(outcomes(args.out)) if args.sections else outcomes(args.out)
    word = "kept" if args.until else "exported"

    print(f"\n{args.pages} through the demo's configuration" + (f" with {' '.join(args.sets)}" if args.sets else "")
          + (", long pages cut into sections (a page is exported when any section is)" if args.sections else "")
          + (f", until {args.until}" if args.until else "") + f" ({args.out})")
    by_type: dict[str, list[dict]] = defaultdict(list)
    for p in pages:
        by_type[p["type"]].append(p)
    print(f"\n| type | pages | good | scored | mean expected score, good / junk | good {word} | junk {word} |")
    print("|---|---|---|---|---|---|---|")
    for t, ps in sorted(by_type.items()):
        g = [p for p in ps if p["label"] == "good"]
        j = [p for p in ps if p["label"] == "junk"]
        sc = [p for p in ps if res.get(p["id"], {}).get("score") is not None]
        mean = lambda xs: (f"{sum(res[p['id']]['score'] for p in xs) / len(xs):.2f}" if xs else "-")  # noqa: E731
        ex = lambda xs: f"{sum(1 for p in xs if res.get(p['id'], {}).get('exported'))}/{len(xs)}" if xs else "-"  # noqa: E731
        print(f"| {t} | {len(ps)} | {len(g)} | {len(sc)} | {mean([p for p in g if p in sc])} / "
              f"{mean([p for p in j if p in sc])} | {ex(g)} | {ex(j)} |")
    reasons = defaultdict(lambda: defaultdict(int))
    for p in pages:
        r = res.get(p["id"])
        if r and not r["exported"]:
            reasons[p["label"]][f"{r['stage']}:{r['reason']}" if r["stage"] else "unfinished"] += 1
    for lab in ("good", "junk"):
        print(f"not {word}, {lab}: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons[lab].items(), key=lambda kv: -kv[1])))
    print()
    report([p for p in pages if is_dev(p["id"])], res, "dev")
    report([p for p in pages if not is_dev(p["id"])], res, "held-out")
    a, g, j = report(pages, res, "all")
    runs = args.from_runs or [args.out]
    stats = [json.loads((r / "stats.json").read_text()) for r in runs if (r / "stats.json").is_file()]
    if stats:
        per: dict[str, float] = defaultdict(float)
        for st in stats:
            for s, v in st["stages"].items():
                per[s] += v.get("seconds") or 0.0
        n_docs = sum(st["stages"]["prepare"]["in"] for st in stats) if args.from_runs else len(pages)
        total = sum(per.values())
        print(f"seconds per document: {total / n_docs:.2f} over {n_docs} documents (model time in stages: "
              + ", ".join(f"{s} {v / n_docs:.2f}" for s, v in per.items() if v / n_docs >= 0.05) + ")"
              + (f"; wall {seconds / len(pages):.2f} including model loading" if seconds else ""))
    if args.dump:
        keep = ("exported", "score", "kind", "kind_p", "stage", "reason", "injection_removed", "sections",
                "sections_exported")
        args.dump.write_text("".join(json.dumps({"id": p["id"], "type": p["type"], "label": p["label"],
                                                 "split": "dev" if is_dev(p["id"]) else "held-out",
                                                 **{k: res.get(p["id"], {}).get(k) for k in keep}}) + "\n"
                                     for p in pages), encoding="utf-8")
    shown = 0
    for p in pages:
        r = res.get(p["id"])
        if shown < args.show and r and r["exported"] and p["type"] != "web-junk":
            print(json.dumps({"id": p["id"], "label": p["label"], "instruction": r["instruction"],
                              "response": r["response"], "score_expected": r["score"]}, ensure_ascii=False))
            shown += 1
    a_text = "n/a" if a is None else f"{a:.2f}"
    print(f"\nreal documents: AUC {a_text}, good {word} {g:.0%}, junk {word} {j:.0%}")


if __name__ == "__main__":
    main()
