"""Prompt templates as Jinja2 files, each with a version line and a content hash.

A template is split into chat turns by marker lines `[[system]]`, `[[user]]`, `[[assistant]]`.
A final `[[assistant]]` turn is not a message but the forced start of the model's answer
(`assistant_prefix`), e.g. `Score:` for scoring by logprobs.

Documents are untrusted web text: the turns are split on the template's own markers before the
variables are substituted, so a document that contains `[[user]]` stays data inside its section.

`multilingual` is decided when a template is loaded, not per row: with it, the templates that write
text (backtranslate, rewrite, distill) ask for the document's language, the row's `language` slot
(its English name, "German"). Without it (`prepare.languages: [en]`, the paper's setting) they
expand to exactly the English-only text they always had, hash included.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).parent
# A trained backward model ships the template it was trained with, under this name, so that
# backtranslation uses exactly that template (`backtranslate.mode: trained`).
TRAINED_TEMPLATE_FILE = "backforth_backward.jinja"
_MARKER = re.compile(r"^\[\[(system|user|assistant)\]\]\s*$", re.MULTILINE)
_VERSION = re.compile(r"\{#-?\s*version:\s*(\S+)\s*-?#\}")
_VARS = ("document", "instruction", "answer", "answer_a", "answer_b", "instruction_a", "instruction_b", "language")


@dataclass(frozen=True)
class Rendered:
    messages: list[dict]
    assistant_prefix: str | None


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    source: str  # the template file's text
    version: str
    sha: str  # hash of the fully expanded template (parents and includes too)
    turns: tuple[tuple[str, str], ...]  # expanded once, a sentinel standing for each variable

    @property
    def tag(self) -> str:
        """`name@version#sha`: what rows record as their prompt's provenance."""
        return f"{self.name}@{self.version}#{self.sha}"

    def render(self, **values: str) -> Rendered:
        def fill(m: re.Match) -> str:
            if m.group(1) not in values:
                raise KeyError(f"prompt '{self.name}' needs `{m.group(1)}`")
            return values[m.group(1)]

        # One pass over the template text: a value that happens to contain a slot stays as it is.
        messages = [{"role": role, "content": _SLOT.sub(fill, text)} for role, text in self.turns]
        prefix = None
        if messages and messages[-1]["role"] == "assistant":
            prefix = messages.pop()["content"]
        return Rendered(messages, prefix)


_SENTINELS = {k: f"\x00{k}\x00" for k in _VARS}
_SLOT = re.compile("\x00(" + "|".join(_VARS) + ")\x00")


def _split_turns(text: str) -> list[tuple[str, str]]:
    parts = _MARKER.split(text)
    if parts[0].strip():
        raise ValueError("a prompt template must start with a [[system]] or [[user]] marker line")
    return [(parts[i], parts[i + 1].strip("\n")) for i in range(1, len(parts), 2)]


def template_from_text(name: str, source: str, search_dir: Path = TEMPLATE_DIR, *,
                       multilingual: bool = False) -> PromptTemplate:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(search_dir)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=False, autoescape=False)
    m = _VERSION.search(source)
    version = m.group(1) if m else "unversioned"
    expanded = env.from_string(source).render(multilingual=multilingual, **{k: "{{" + k + "}}" for k in _VARS})
    sha = hashlib.sha256(expanded.encode()).hexdigest()[:12]
    turns = tuple(_split_turns(env.from_string(source).render(multilingual=multilingual, **_SENTINELS)))
    return PromptTemplate(name, source, version, sha, turns)


@lru_cache(maxsize=None)
def load_template(name: str, multilingual: bool = False) -> PromptTemplate:
    path = TEMPLATE_DIR / f"{name}.jinja"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template '{name}' in {TEMPLATE_DIR}")
    return template_from_text(name, path.read_text(encoding="utf-8"), multilingual=multilingual)
