"""How complex the texts are (paper Table 4): unique open tags per text, written by an LLM.

The paper uses the InsTag tagger; we ask an LLM through the engines interface with our own prompt
(`tag.jinja`), so the numbers compare sets tagged by the same model, not with Table 4. Greedy
decoding: tags should depend on the text, not on the sampling seed.

Tagging is a stage (`Tag`, one request per distinct text) run by the pipeline's `Runner`, with its
resume, chunking, fingerprints and executors. Its store is `RUN_DIR/analysis_work/` (a run of its
own, so the run's stages, config and fingerprints stay as the pipeline left them), and a row's id
is a hash of its text: tagging resumes after a crash, and `analyze` run again pays only for texts
it has not tagged yet (when every sampled text is stored, no model is even loaded). A request the
engine failed is not stored, so it is asked again next time; until then its text counts as
failed, not as untagged. Another tagger, prompt or max_tokens makes the stored tags stale: they
are tagged again, in place, rather than stopping the analysis as a pipeline run would.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engines import Request, Result
from ..pipeline.stage import DONE, Stage
from ..prompts import load_template
from .sets import TextSet, subsample

ROLE = "tagger"
WORK_DIR = "analysis_work"  # inside the run dir: the analysis's own run (tags)
TAG_MAX_CHARS = 1500  # long documents are cut before tagging: a small tagger is slow and its context short
CHUNK_SIZE = 32  # texts per stored shard: a crash loses at most this many answers

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


class Tag(Stage):
    """One text -> its tags (`tags`), and the tagger's answer as it wrote it (`tag_answer`)."""

    name = "tag"
    role = ROLE
    rejects: dict[str, str] = {}  # never rejects: an answer with no usable tag keeps `tags: []` (counted as untagged)
    failed_stay_unfinished = True

    def __init__(self, max_tokens: int = 48, max_chars: int = TAG_MAX_CHARS):
        self.max_tokens, self.max_chars = max_tokens, max_chars
        self.template = load_template("tag")

    def settings(self) -> dict:
        return {"max_tokens": self.max_tokens, "max_chars": self.max_chars, "temperature": 0.0}

    def requests(self, row: dict) -> list[Request]:
        r = self.template.render(document=row["text"][:self.max_chars])
        return [Request(messages=r.messages, assistant_prefix=r.assistant_prefix, max_tokens=self.max_tokens,
                        temperature=0.0, key=row["id"])]

    def apply(self, row: dict, results: list[Result]) -> str | None:
        res = results[0]
        self.record_call(row, res)
        row.update(tag_answer=res.text, tags=_tags_of(res.text, res.finish_reason, row["text"]))
        return None


def text_id(text: str) -> str:
    """A text's row id in the tag store: the same text is the same row in every analysis."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _rows(texts: Sequence[str]) -> list[dict]:
    """The tag stage's input: each distinct text once, in first-seen order."""
    return [{"id": text_id(t), "_index": i, "text": t} for i, t in enumerate(dict.fromkeys(texts))]


def tag_texts(texts: Sequence[str], engine: Any, max_tokens: int = 48) -> list[list[str] | None]:
    """Tags per text (None where the engine returned an error), each distinct text asked once; one
    chunk through the `Tag` stage, stored nowhere (`tag_stored` keeps them)."""
    from ..pipeline.chunks import process_chunk

    stage = Tag(max_tokens)
    stage.model_name = getattr(engine, "name", "")
    done = {r["id"]: r["tags"] for r in process_chunk(stage, engine, _rows(texts), first=True).rows}
    return [done.get(text_id(t)) for t in texts]


@dataclass(frozen=True)
class _GivenModel:
    """What the runner needs of a model config, for a caller's own engine that came without one:
    its name is its identity in the fingerprint."""

    name: str

    def identity(self) -> dict:
        return {"engine": "given", "model": self.name}

    def model_dump(self, **_kw: Any) -> dict:
        return self.identity()


class _Borrowed:
    """The caller's engine, handed to the runner, which closes what it builds: this one stays open."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def close(self) -> None:
        pass


def tag_stored(texts: Sequence[str], work: Path, *, tagger_cfg: Any = None, engine: Any = None,
               max_tokens: int = 48) -> tuple[dict[str, list[str] | None], str]:
    """({text: its tags, None where the request failed}, the tagger's name), asking the tagger only
    for the texts the store under `work` lacks. `engine` (kept open) or one built from `tagger_cfg`
    (closed by the runner) tags them; `tagger_cfg`, when given, is the tagger's identity."""
    from ..config import RunnerConfig
    from ..engines import build_engine
    from ..pipeline import Engines, Runner
    from ..pipeline.store import RunStore

    stage, rows = Tag(max_tokens), _rows(texts)
    if not rows:
        return {}, getattr(engine, "name", None) or getattr(tagger_cfg, "model", "?")
    model = tagger_cfg if tagger_cfg is not None else _GivenModel(getattr(engine, "name", "?"))
    wanted = {r["id"] for r in rows}
    if not _up_to_date(work, stage, model, wanted):
        factory: Callable = build_engine if engine is None else (lambda _cfg: _Borrowed(engine))
        Runner([stage], lambda: iter(rows), work, engines=Engines({ROLE: model}, factory), force=True,
               settings=RunnerConfig(chunk_size=CHUNK_SIZE, progress=False)).run()
    found = {r["id"]: r for r in RunStore(work).joined([stage.name], status=DONE) if r["id"] in wanted}
    names = [r["tag_model"] for r in found.values() if r.get("tag_model")]
    name = names[0] if names else getattr(engine, "name", None) or getattr(tagger_cfg, "model", "?")
    return {r["text"]: found[r["id"]]["tags"] if r["id"] in found else None for r in rows}, name


def _up_to_date(work: Path, stage: Tag, model: Any, ids: set[str]) -> bool:
    """Whether the store already holds every one of `ids`, tagged with these settings: then the
    runner is not started, so no model is loaded only to find nothing to do."""
    from ..pipeline import fingerprints
    from ..pipeline.store import RunStore

    path = work / fingerprints.FILE
    if not path.is_file():
        return False
    current = fingerprints.stage_fingerprints([stage], lambda _role: model)[stage.name]["hash"]
    if json.loads(path.read_text()).get(stage.name, {}).get("hash") != current:
        return False
    return ids <= set(RunStore(work).stage(stage.name).ids(DONE))


def _mean_tags(tagged: list[list[str] | None]) -> dict:
    ok = [t for t in tagged if t is not None]
    return {"mean": float(np.mean([len(t) for t in ok])) if ok else None, "n": len(ok),
            "failed": len(tagged) - len(ok), "untagged": sum(1 for t in ok if not t),
            "examples": ok[:3]}


def complexity(sets: dict[str, TextSet], samples: int, seed: int, work: Path, *, tagger_cfg: Any = None,
               engine: Any = None) -> dict:
    """Table 4: average unique tags per instruction and per response, on `samples` pairs per set."""
    picked = {n: subsample(s, samples, seed) for n, s in sets.items()}
    texts = [t for s in picked.values() for t in s.instructions + s.responses]
    tags, name = tag_stored(texts, work, tagger_cfg=tagger_cfg, engine=engine)
    out = {}
    for n, s in picked.items():
        out[n] = {col: (_mean_tags([tags[t] for t in getattr(s, col)]) if getattr(s, col) else None)
                  for col in ("instructions", "responses")}
    return {"model": name, "samples_per_set": samples, "max_chars": TAG_MAX_CHARS, "sets": out}
