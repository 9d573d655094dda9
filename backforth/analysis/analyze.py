"""The paper's analyses (Nguyen et al. 2024, §5) on one run dir: `analysis.json` and `analysis.md`.

Three sets of responses answer the same backtranslated instructions: the web `documents`, their
`rewritten` versions and the `distilled` answers written without the document. The analysis asks
what the paper asks of them:

* how far apart they are: MAUVE (Table 3) with the paper's control (two disjoint halves of the
  distilled set), next to the held-out accuracy of a classifier telling the two sets apart;
* how diverse they are: unique word trigrams at equal sample size (Fig. 3);
* how long they are: average tokens of instructions and responses (Table 6);
* how complex they are: average number of unique open tags per text (Table 4). The paper uses the
  InsTag tagger; we ask an LLM through the engines interface with our own prompt (`tag.jinja`), so
  the numbers compare sets tagged by the same model, not with Table 4;
* the run's funnel, score distribution and reject reasons, from `stats.json`.

`--against` adds other runs (their `sft.jsonl`) or jsonl datasets, for the lengths, diversity and
complexity columns. A metric that cannot be computed on a set this small is null with a note saying
why, never a crash: the demo run keeps only a handful of rows.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import INVALID_UTF8, NOT_AN_OBJECT, UnreadableFileError, iter_records
from . import metrics

MIN_ITEMS = 4  # below this, MAUVE, the classifier and trigram counts say nothing about a set
PAIRS = (("distilled", "rewritten"), ("distilled", "documents"), ("rewritten", "documents"))
RUN_SETS = ("documents", "rewritten", "distilled", "instructions")
TAG_MAX_CHARS = 1500  # long documents are cut before tagging: a small tagger is slow and its context short
WORDS_TOKENIZER = r"words-and-punctuation (\w+|[^\w\s])"


class RunDirError(UserError, ValueError):
    """A run dir or dataset the user named cannot be read; the message says what to do."""


@dataclass
class TextSet:
    """Instruction/response pairs of one set; `responses` may be empty (an instruction-only set)."""

    name: str
    source: str
    instructions: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return max(len(self.instructions), len(self.responses))


# ----------------------------------------------------------------------------------- reading


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Rows of a jsonl file, streamed; a partial last line (a run killed mid-write) is skipped, as
    resume does."""
    try:
        for where, row, problem in iter_records(path, json_array=False, drop_partial_last_line=True):
            if problem is None:
                yield row
                continue
            what = {INVALID_UTF8: f"not UTF-8 text ({problem.detail})",
                    NOT_AN_OBJECT: f"expected a JSON object, got {problem.detail}"}.get(
                        problem.kind, f"not valid JSON ({problem.detail})")
            raise RunDirError(f"{where}: {what}; fix or remove that line")
    except UnreadableFileError as err:
        raise RunDirError(str(err)) from None


def stage_rows(run_dir: Path, stage: str, columns: Sequence[str] | None = None,
               ids: Container[str] | None = None) -> dict[str, dict]:
    """One stage's rows as it saw and left them: its own columns joined with those the earlier stages
    gave each row (`pipeline.store.RunStore.joined`), by id.

    `columns` keeps only those fields and `ids` only those rows, so a big run's shards are streamed
    through instead of held whole in memory.
    """
    from ..pipeline.store import RunStore

    order = stage_order(run_dir)
    if stage not in order:
        return {}
    out: dict[str, dict] = {}
    for row in RunStore(run_dir).joined(order[: order.index(stage) + 1]):
        if ids is not None and row.get("id") not in ids:
            continue
        out[row["id"]] = row if columns is None else {k: row.get(k) for k in ("id", "_status", *columns)}
    return out


def stage_order(run_dir: Path, stats: dict | None = None) -> list[str]:
    """The run's stages with results, in the registry's order (any unknown one last, so a stage added
    later is never skipped)."""
    from ..pipeline import registry
    from ..pipeline.store import RunStore

    on_disk = RunStore(run_dir).on_disk()
    order = [n for n in registry.NAMES if n in on_disk]
    return order + sorted(on_disk - set(order))


def load_stats(run_dir: Path) -> dict:
    """stats.json, with errors that say what to do."""
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory (make one with `backforth run` or `backforth demo`)")
    path = run_dir / "stats.json"
    if not path.is_file():
        raise RunDirError(f"{path} is missing: the run has not finished exporting; run the same "
                          "`backforth run`/`backforth demo` command again to complete it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path}: not valid JSON ({err.msg})") from None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _pairs(rows: Iterable[dict], response_key: str) -> tuple[list[str], list[str]]:
    """(instructions, responses) of rows that have both as non-empty strings."""
    kept = [(r["instruction"], r[response_key]) for r in rows
            if _text(r.get("instruction")) and _text(r.get(response_key))]
    return [i for i, _ in kept], [t for _, t in kept]


def run_sets(run_dir: Path) -> dict[str, TextSet]:
    """The run's documents, rewritten, distilled and instruction sets (see the module docstring)."""
    rewrite = stage_rows(run_dir, "rewrite", ("instruction", "text", "response"))
    distill = stage_rows(run_dir, "distill", ("instruction", "distilled"))
    sets = {name: TextSet(name, "") for name in RUN_SETS}
    if rewrite:
        sets["documents"] = TextSet("documents", "text of the rows that reached rewrite", *_pairs(rewrite.values(), "text"))
        done = [r for r in rewrite.values() if r.get("_status") == "done"]
        sets["rewritten"] = TextSet("rewritten", "response of every rewritten row (later checks such as grounding "
                                    "may reject some)", *_pairs(done, "response"))
    elif (run_dir / "sft.jsonl").is_file():
        sft = {r["id"]: r for r in iter_jsonl(run_dir / "sft.jsonl")}
        texts = _latest_texts(run_dir, set(sft))
        docs = [dict(r, text=texts.get(i)) for i, r in sft.items()]
        sets["documents"] = TextSet("documents", "text of the exported rows", *_pairs(docs, "text"))
    if distill:
        sets["distilled"] = TextSet("distilled", "distilled answers to the same instructions",
                                    *_pairs(distill.values(), "distilled"))
    elif (run_dir / "distilled.parquet").is_file():
        sets["distilled"] = TextSet("distilled", "distilled.parquet",
                                    *_pairs(iter_jsonl(run_dir / "distilled.parquet"), "response"))
    bt = stage_rows(run_dir, "backtranslate", ("instruction",)).values()
    sets["instructions"] = TextSet("instructions", "every backtranslated instruction (before curation)",
                                   [r["instruction"] for r in bt if r["_status"] == "done" and _text(r["instruction"])])
    return sets


def _latest_texts(run_dir: Path, ids: set[str]) -> dict[str, str]:
    """The cleaned document text of `ids`, from the furthest stage each reached."""
    texts: dict[str, str] = {}
    for stage in stage_order(run_dir):
        texts.update({i: r["text"] for i, r in stage_rows(run_dir, stage, ("text",), ids).items() if r["text"]})
    return texts


def _pair_of(row: dict) -> tuple[str | None, str | None]:
    """(instruction, response) of a dataset row: `instruction`/`response` or chat `messages`."""
    if _text(row.get("instruction")) and _text(row.get("response")):
        return row["instruction"], row["response"]
    messages = row.get("messages")
    if isinstance(messages, list):
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        bots = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
        if users and bots:
            return _text(users[0]), _text(bots[-1])
    return None, None


def load_against(spec: str, taken: set[str]) -> TextSet:
    """Another run (its sft.jsonl) or a jsonl dataset, named after the folder or file."""
    path = Path(spec)
    file = path / "sft.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise RunDirError(f"--against {spec}: expected a run dir with sft.jsonl or a .jsonl file, found neither")
    pairs = [p for p in map(_pair_of, iter_jsonl(file)) if p[0] and p[1]]
    if not pairs:
        raise RunDirError(f"--against {file}: no row has `instruction` and `response` strings, nor `messages` "
                          "with a user and an assistant turn")
    name = path.name if path.is_dir() else path.stem
    while name in taken or name in RUN_SETS:
        name += "'"
    return TextSet(name, str(file), [p[0] for p in pairs], [p[1] for p in pairs])


def subsample(ts: TextSet, n: int, seed: int) -> TextSet:
    """At most `n` pairs, the same random rows for instructions and responses."""
    size = ts.n
    if size <= n:
        return ts
    idx = sorted(random.Random(seed).sample(range(size), n))
    pick = lambda xs: [xs[i] for i in idx] if xs else []  # noqa: E731
    return TextSet(ts.name, ts.source, pick(ts.instructions), pick(ts.responses))


# ----------------------------------------------------------------------------------- set comparisons


def _too_small(sizes: dict[str, int], names: Sequence[str], minimum: int = MIN_ITEMS) -> str | None:
    """A note naming the sets too small for a metric, or None when all are big enough."""
    small = [f"{n} has {sizes.get(n, 0)}" for n in names if sizes.get(n, 0) < minimum]
    return f"{', '.join(small)} text(s); needs at least {minimum} per set" if small else None


def _halves(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves (the paper's distilled-vs-distilled control), one split shared by
    MAUVE and the classifier so both read the same pair of samples."""
    order = np.random.default_rng(seed).permutation(len(x))
    half = len(x) // 2
    return x[order[:half]], x[order[half:2 * half]]


def _classify(a: np.ndarray, b: np.ndarray, seed: int) -> dict:
    out = metrics.classifier_accuracy(a, b, seed=seed)
    return {"accuracy": out["accuracy"], "classifier": out}


def _compare(a: np.ndarray, b: np.ndarray, buckets: int | str, seed: int) -> dict:
    """MAUVE and classifier accuracy of one pair of feature sets, each replaced by a note when the
    sets are too degenerate for it (e.g. every text the same): a note, not a crash."""
    out: dict[str, Any] = {}
    notes = []
    try:
        res = metrics.mauve_score(a, b, seed=seed, num_buckets=buckets)
        out.update(mauve=res["mauve"], num_buckets=res["num_buckets"], n_a=res["n_p"], n_b=res["n_q"])
    except (ValueError, RuntimeError) as err:
        notes.append(f"MAUVE not computed: {err}")
    try:
        out.update(_classify(a, b, seed))
    except (ValueError, RuntimeError) as err:
        notes.append(f"classifier not computed: {err}")
    if "mauve" in out and _same_rows(a, b):
        notes.append(f"identical sets: MAUVE is 1 by definition (the library gave {out['mauve']:.3f})")
        out["mauve"] = 1.0
    if notes:
        out["note"] = "; ".join(notes)
    return out


def compare_sets(feats: dict[str, np.ndarray], sizes: dict[str, int], seed: int) -> list[dict]:
    """Table 3: the distilled control, then the three pairs, each with MAUVE and classifier accuracy.

    One bucket count (the library's n/10 rule on the control's halves, as `mauve_with_control`
    picks it) serves every row, because MAUVE falls with more buckets on finite samples and the
    rows must share a scale to be read against the control.
    """
    buckets: int | str = "auto"
    control = {"comparison": "distilled vs distilled (disjoint halves: the ceiling)", "a": "distilled",
               "b": "distilled", "mauve": None, "accuracy": None,
               "note": _too_small(sizes, ["distilled"], 2 * MIN_ITEMS)}
    if control["note"] is None:
        h1, h2 = _halves(feats["distilled"], seed)
        buckets = metrics.auto_num_buckets(len(h1), len(h2))
        control.update(_compare(h1, h2, buckets, seed))
    else:
        control["note"] += " (two halves of at least 4)"
    rows = [control]
    for a, b in PAIRS:
        row = {"comparison": f"{a} vs {b}", "a": a, "b": b, "mauve": None, "accuracy": None,
               "note": _too_small(sizes, [a, b])}
        if row["note"] is None:
            row.update(_compare(feats[a], feats[b], buckets, seed))
        rows.append(row)
    return rows


def _same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two feature sets hold the same rows in any order.

    The mauve library returns 0.75 instead of 1 for some identical sets: when the two histograms
    are exactly equal, its curve has ties that it sorts in an order that loses half the area.
    """
    return a.shape == b.shape and np.array_equal(a[np.lexsort(a.T)], b[np.lexsort(b.T)])


def embed_sets(sets: dict[str, TextSet], embedder: Any) -> dict[str, np.ndarray]:
    """Features of the responses of the run's three response sets (only those big enough to compare)."""
    names = {n for pair in PAIRS for n in pair}
    return {n: embedder.embed(sets[n].responses) for n in names if len(sets[n].responses) >= MIN_ITEMS}


def diversity(sets: dict[str, TextSet], column: str, seed: int) -> dict:
    """Fig. 3: unique trigrams of one column at the size of the smallest set that is big enough.

    Sets below MIN_ITEMS are left out (null, with a note) rather than dragging every other set's
    sample down to one or two texts.
    """
    texts = {n: getattr(s, column) for n, s in sets.items()}
    ok = {n: t for n, t in texts.items() if len(t) >= MIN_ITEMS}
    counts = metrics.compare_diversity(ok, seed=seed)
    size = min((len(t) for t in ok.values()), default=None)
    notes = {n: (f"{len(t)} text(s); needs at least {MIN_ITEMS}" if t else
                 "an instruction-only set" if sets[n].instructions else "no texts")
             for n, t in texts.items() if n not in ok}
    return {"sample_size": size, "sets": {n: counts.get(n) for n in texts}, "notes": notes}


def lengths(sets: dict[str, TextSet], tokenizer: Any) -> dict[str, dict]:
    """Table 6: average tokens of instructions and responses per set (null for an empty column)."""
    avg = lambda xs: metrics.average_tokens(xs, tokenizer) if xs else None  # noqa: E731
    return {n: {"instruction": avg(s.instructions), "response": avg(s.responses)} for n, s in sets.items()}


def load_tokenizer(spec: str | None) -> tuple[Any | None, str]:
    """(tokenizer, its name). "embedded[:name]": the embedded model's tokenizer read straight from its GGUF
    (a few seconds, no model load); None or any failure: the metrics' word-and-punctuation count."""
    if spec is None:
        return None, WORDS_TOKENIZER
    try:
        from transformers import AutoTokenizer

        from .. import embedded

        if embedded.is_embedded(spec):
            gguf = embedded.gguf_path(spec)
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name), embedded.lookup(spec).title
        return AutoTokenizer.from_pretrained(spec), spec
    except Exception as err:  # noqa: BLE001 - any failure falls back to a documented default
        return None, f"{WORDS_TOKENIZER}; tokenizer '{spec}' unavailable: {err}"


# ----------------------------------------------------------------------------------- complexity (tags)

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_SPLIT = re.compile(r"[\n,;|•]+")
_BULLET = re.compile(r"^\s*(?:[-*+>#]+|\(?\d+[.):]|\(?[a-z][.)])\s+", re.IGNORECASE)
_LABEL = re.compile(r"^\s*(?:tags?|labels?|keywords?)\s*\d*\s*[:=\-]\s*", re.IGNORECASE)
_FILLER = re.compile(r"^(?:sure|certainly|of course|okay|here (?:are|is)|i hope|note|let me|these tags|the text)\b",
                     re.IGNORECASE)
_MARKUP = re.compile(r"</?[\w-]+\s*/?>")
_EDGE = "\"'`“”‘’*_[]{}()<>.:!?\t "
ECHO_SHARE = 0.5  # share of the answer's word trigrams found in the text that makes it an echo
MAX_TAG_WORDS = 5
MAX_TAG_CHARS = 48


def _clean_tag(piece: str) -> str | None:
    """One candidate tag, normalised, or None when it is chat filler, a heading or a sentence."""
    if piece.rstrip().endswith(":") or _MARKUP.fullmatch(piece.strip()):
        return None  # "Here are the tags:" / "Topics:" headings, an echoed "<text>" delimiter
    piece = _LABEL.sub("", _BULLET.sub("", piece))
    piece = re.sub(r"\s+", " ", piece.replace("**", "").replace("__", "")).strip(_EDGE).lower()
    piece = piece.lstrip("#").strip()
    if not re.search(r"[^\W\d_]", piece) or _FILLER.match(piece):
        return None
    if len(piece) > MAX_TAG_CHARS or len(piece.split()) > MAX_TAG_WORDS:
        return None
    return piece


def parse_tags(text: str | None) -> list[str]:
    """Unique tags from whatever a tagger wrote: lines, commas, numbered or bulleted lists, a JSON
    array, "Tags:" labels, markdown, chat preambles, <think> blocks. Sentences are not tags."""
    if not text:
        return []
    text = _THINK.sub("", text)
    try:
        parsed = json.loads(text.strip())
        if isinstance(parsed, list):
            text = "\n".join(str(x) for x in parsed)
    except (json.JSONDecodeError, ValueError):
        pass
    tags: list[str] = []
    for piece in _SPLIT.split(text):
        tag = _clean_tag(piece)
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _complete_lines(text: str, finish_reason: str | None) -> str:
    """Drop the last line of an answer cut by max_tokens: it is a half-written tag."""
    return text.rsplit("\n", 1)[0] if finish_reason == "length" and "\n" in text.strip() else text


def _tags_of(answer: str, finish_reason: str | None, text: str) -> list[str]:
    """Tags of one answer; none when the answer mostly copies the text (small models echo it)."""
    from ..pipeline.stages.parsing import copied_share

    answer = _complete_lines(answer, finish_reason)
    if len(answer.split()) >= 6 and copied_share(answer, text) >= ECHO_SHARE:
        return []
    return parse_tags(answer)


def tag_texts(texts: Sequence[str], engine: Any, max_tokens: int = 48) -> list[list[str] | None]:
    """Tags per text (None where the engine returned an error), each distinct text asked once.

    Greedy decoding: tags should depend on the text, not on the sampling seed.
    """
    from ..engines import Request
    from ..prompts import load_template

    template = load_template("tag")
    unique = list(dict.fromkeys(texts))
    requests = []
    for i, text in enumerate(unique):
        r = template.render(document=text[:TAG_MAX_CHARS])
        requests.append(Request(messages=r.messages, assistant_prefix=r.assistant_prefix, max_tokens=max_tokens,
                                temperature=0.0, key=f"tag-{i}"))
    results = engine.generate(requests)
    by_text = {t: (_tags_of(res.text, res.finish_reason, t) if res.ok else None) for t, res in zip(unique, results)}
    return [by_text[t] for t in texts]


def _mean_tags(tagged: list[list[str] | None]) -> dict:
    ok = [t for t in tagged if t is not None]
    return {"mean": float(np.mean([len(t) for t in ok])) if ok else None, "n": len(ok),
            "failed": len(tagged) - len(ok), "untagged": sum(1 for t in ok if not t),
            "examples": ok[:3]}


def complexity(sets: dict[str, TextSet], engine: Any, samples: int, seed: int) -> dict:
    """Table 4: average unique tags per instruction and per response, on `samples` pairs per set."""
    picked = {n: subsample(s, samples, seed) for n, s in sets.items()}
    texts = [t for s in picked.values() for t in s.instructions + s.responses]
    tags = dict(zip(texts, tag_texts(texts, engine))) if texts else {}
    out = {}
    for n, s in picked.items():
        out[n] = {col: (_mean_tags([tags[t] for t in getattr(s, col)]) if getattr(s, col) else None)
                  for col in ("instructions", "responses")}
    return {"model": getattr(engine, "name", "?"), "samples_per_set": samples, "max_chars": TAG_MAX_CHARS,
            "sets": out}


# ----------------------------------------------------------------------------------- the whole analysis


def run_summary(stats: dict) -> dict:
    """The funnel, the score distribution and reject reasons, copied from stats.json."""
    stages = stats.get("stages", {})
    curate = stages.get("curate", {})
    reasons = [{"stage": s, "reason": r, "rows": n} for s, st in stages.items()
               for r, n in (st.get("rejected_by_reason") or {}).items()]
    return {"variant": stats.get("variant"), "funnel": stats.get("funnel", {}),
            "scores": curate.get("score_distribution"), "parse_rate": curate.get("parse_rate"),
            "rejected": reasons, "outputs": stats.get("outputs", {})}


def _finite(x: Any) -> Any:
    """JSON without NaN/inf (they are not JSON): non-finite floats become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        return _finite(x.item())
    return x


def _resolve_embedder(embedder: Any) -> Any:
    return metrics.load_embedder(embedder) if embedder is None or isinstance(embedder, str) else embedder


def _tagging(sets: dict[str, TextSet], tagger_cfg: Any, tagger_engine: Any, samples: int, seed: int) -> dict:
    """Complexity with the given engine, or one built from `tagger_cfg` (closed afterwards)."""
    if tagger_engine is None and tagger_cfg is None:
        return {"skipped": "no tagger (--no-tags)"}
    if tagger_engine is not None:
        return complexity(sets, tagger_engine, samples, seed)
    from ..engines import build_engine

    engine = build_engine(tagger_cfg)
    try:
        return complexity(sets, engine, samples, seed)
    finally:
        engine.close()


def analyze(run_dir: str | Path, against: Sequence[str] = (), embedder: Any = None, tagger_cfg: Any = None,
            max_samples: int = 2000, *, tagger_engine: Any = None, tag_samples: int = 16,
            tokenizer: str | None = "embedded", seed: int = 0, log: Callable[[str], None] = lambda _: None) -> dict:
    """Run every analysis on `run_dir`, write `analysis.json` and `analysis.md` there, return the result.

    `embedder`: an `metrics.Embedder`, a sentence-transformers name, or None (bundled MiniLM).
    `tagger_cfg` (a `config.ModelConfig`) or `tagger_engine` (any engine) turns the complexity
    analysis on. `tokenizer`: "embedded", a Hugging Face tokenizer name, or None (word count).
    """
    run_dir = Path(run_dir)
    stats = load_stats(run_dir)
    full = run_sets(run_dir)
    full_sizes = {n: s.n for n, s in full.items()}
    sets = {n: subsample(s, max_samples, seed) for n, s in full.items()}
    for spec in against:
        extra = load_against(spec, set(sets))
        sets[extra.name] = subsample(extra, max_samples, seed)
        full_sizes[extra.name] = extra.n
    response_sizes = {n: len(s.responses) for n, s in sets.items()}
    needs_features = any(_too_small(response_sizes, p) is None for p in PAIRS)
    emb = _resolve_embedder(embedder) if needs_features else None
    if emb is not None:
        log(f"embedding responses with {emb.name}; MAUVE and classifier")
    comparisons = compare_sets(embed_sets(sets, emb) if emb is not None else {}, response_sizes, seed)
    tok, tok_name = load_tokenizer(tokenizer)
    if tagger_cfg is not None or tagger_engine is not None:
        log(f"tagging up to {tag_samples} pairs per set (complexity)")
    result = {
        "run_dir": str(run_dir), "embedder": getattr(emb, "name", None), "tokenizer": tok_name,
        "max_samples": max_samples, "seed": seed, "min_items": MIN_ITEMS,
        "run": run_summary(stats),
        "sets": {n: {"n": s.n, "n_total": full_sizes[n], "source": s.source} for n, s in sets.items()},
        "comparisons": comparisons,
        "diversity": {"instructions": diversity(sets, "instructions", seed),
                      "responses": diversity(sets, "responses", seed)},
        "lengths": lengths(sets, tok),
        "complexity": _tagging(sets, tagger_cfg, tagger_engine, tag_samples, seed),
    }
    result = _finite(result)
    (run_dir / "analysis.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (run_dir / "analysis.md").write_text(to_markdown(result), encoding="utf-8")
    return result


# ----------------------------------------------------------------------------------- tables


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def comparison_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Table 3 rows as strings (shared by analysis.md and the HTML report)."""
    head = ["comparison", "MAUVE", "classifier accuracy", "n", "buckets", "note"]
    rows = [[c["comparison"], _num(c["mauve"]), _num(c["accuracy"]),
             f"{c['n_a']} / {c['n_b']}" if "n_a" in c else "—", _num(c.get("num_buckets")), c.get("note") or ""]
            for c in result["comparisons"]]
    return head, rows


def _tags_cell(cx: dict, name: str, col: str) -> str:
    if "sets" not in cx:
        return "—"
    cell = cx["sets"].get(name, {}).get(col)
    return _num(cell["mean"], 1) if cell else "—"


def _trigram_cell(div: dict, name: str) -> str:
    cell = div["sets"].get(name)
    return _num(cell["unique_trigrams"]) if cell else "—"


def set_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Per set: size, Table 6 lengths, Fig. 3 trigrams at equal size, Table 4 tags."""
    di, dr = result["diversity"]["instructions"], result["diversity"]["responses"]
    head = ["set", "n", "instruction tokens", "response tokens",
            f"instruction trigrams (n={_num(di['sample_size'])})", f"response trigrams (n={_num(dr['sample_size'])})",
            "tags / instruction", "tags / response"]
    rows = []
    for name, info in result["sets"].items():
        ln = result["lengths"][name]
        rows.append([name, str(info["n"]), _num(ln["instruction"], 1), _num(ln["response"], 1),
                     _trigram_cell(di, name), _trigram_cell(dr, name),
                     _tags_cell(result["complexity"], name, "instructions"),
                     _tags_cell(result["complexity"], name, "responses")])
    return head, rows


def analysis_notes(result: dict) -> list[str]:
    """Why cells are empty, and what the numbers are measured with."""
    if result["embedder"]:
        first = (f"MAUVE and the classifier use {result['embedder']} embeddings of the responses; compare rows with "
                 "each other, not with the paper's GPT-2 numbers (Table 3). Classifier accuracy 0.5 = indistinguishable.")
    else:
        first = f"MAUVE and the classifier were not computed: no two response sets have {MIN_ITEMS} texts or more."
    notes = [first, f"Tokens: {result['tokenizer']}."]
    for col, div in result["diversity"].items():
        notes += [f"{col} trigrams, {n}: {why}" for n, why in div["notes"].items()]
    cx = result["complexity"]
    if "skipped" in cx:
        notes.append(f"Tags: skipped ({cx['skipped']}).")
    else:
        cells = [c for s in cx["sets"].values() for c in s.values() if c]
        failed, untagged = sum(c["failed"] for c in cells), sum(c["untagged"] for c in cells)
        notes.append(f"Tags by {cx['model']} with prompt tag.jinja on up to {cx['samples_per_set']} pairs per set "
                     f"(texts cut at {cx['max_chars']} characters); not comparable with InsTag's numbers (Table 4). "
                     f"{untagged} of {sum(c['n'] for c in cells)} tagged texts got no usable tag (an echo of the "
                     f"text, or only sentences) and count as 0; {failed} failed requests are left out.")
    return notes


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def to_markdown(result: dict) -> str:
    """analysis.md: the run summary, the comparison table, the per-set table and the notes."""
    run = result["run"]
    funnel = " → ".join(f"{k} {v}" for k, v in run["funnel"].items())
    scores = ", ".join(f"{k}: {v}" for k, v in (run["scores"] or {}).items()) or "—"
    rejected = ", ".join(f"{r['stage']}/{r['reason']} {r['rows']}" for r in run["rejected"]) or "none"
    parts = [f"# Analysis of {result['run_dir']}", "",
             f"Variant: {run['variant']}. Funnel: {funnel}.", f"Scores: {scores}. Rejected: {rejected}.", "",
             "## How far apart the sets are (paper Table 3)", "", _md_table(*comparison_table(result)), "",
             "## Lengths, diversity, complexity per set (Table 6, Fig. 3, Table 4)", "",
             _md_table(*set_table(result)), "", "## Notes", ""]
    parts += [f"- {n}" for n in analysis_notes(result)]
    return "\n".join(parts) + "\n"
