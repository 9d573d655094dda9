"""Languages: detection in prepare, the `language` reject, prompts in the document's language, and
the `language_mismatch` checks of instructions, rewrites and distilled answers."""

from __future__ import annotations

import json

import pytest
from fake_engine import FakeEngine, section, stage_of

from run_files import read_sft
from backforth.config import PrepareConfig, build_config
from backforth.engines.base import Result
from backforth.language import Policy, detect, name, prose
from backforth.pipeline.method import run_method
from backforth.pipeline.stages.backtranslate import Backtranslate
from backforth.pipeline.stages.prepare import Prepare
from backforth.prompts import load_template

# Written for these tests: the same short explanation of a software update, in five languages.
TEXTS = {
    "en": "To update the packages on your system, first refresh the list of available versions, then install the "
          "newer ones. The package manager downloads each file, checks its signature and replaces the old version. "
          "Restart the services that use a library which was updated, or simply reboot the computer afterwards.",
    "de": "Um die Pakete auf Ihrem System zu aktualisieren, laden Sie zuerst die Liste der verfügbaren Versionen neu "
          "und installieren dann die neueren. Die Paketverwaltung lädt jede Datei herunter, prüft ihre Signatur und "
          "ersetzt die alte Version. Starten Sie danach die Dienste neu, die eine aktualisierte Bibliothek benutzen.",
    "fr": "Pour mettre à jour les paquets de votre système, actualisez d'abord la liste des versions disponibles, puis "
          "installez les plus récentes. Le gestionnaire de paquets télécharge chaque fichier, vérifie sa signature et "
          "remplace l'ancienne version. Redémarrez ensuite les services qui utilisent une bibliothèque mise à jour.",
    "ru": "Чтобы обновить пакеты в системе, сначала обновите список доступных версий, а затем установите новые. "
          "Менеджер пакетов загружает каждый файл, проверяет его подпись и заменяет старую версию. После этого "
          "перезапустите службы, которые используют обновлённую библиотеку, или просто перезагрузите компьютер.",
    "ja": "システムのパッケージを更新するには、まず利用可能なバージョンの一覧を更新し、次に新しいバージョンを"
          "インストールします。パッケージマネージャーは各ファイルをダウンロードし、署名を確認して古いバージョンを"
          "置き換えます。その後、更新されたライブラリを使うサービスを再起動してください。",
}
QUESTIONS = {"en": "How do I update the packages on my system?",
             "de": "Wie aktualisiere ich die Pakete auf meinem System?",
             "fr": "Comment mettre à jour les paquets de mon système ?"}


@pytest.mark.parametrize("code", sorted(TEXTS))
def test_detect_names_the_language_of_a_paragraph(code):
    got, confidence = detect(TEXTS[code])
    assert got == code and confidence > 0.8


@pytest.mark.parametrize("code", sorted(QUESTIONS))
def test_detect_a_short_question(code):
    assert detect(QUESTIONS[code])[0] == code


def test_code_urls_and_identifiers_do_not_count():
    german = TEXTS["de"] + "\n\n```\nsudo apt-get update && sudo apt-get upgrade --yes\n```\nSiehe `man apt-get` und https://www.debian.org/doc/ ."
    assert "apt-get" not in prose(german) and "https" not in prose(german)
    assert detect(german)[0] == "de"
    assert detect("12345 67.89 -- ()") == ("und", 0.0)
    assert detect("x86_64 v1.2 fact3x7")[0] != "und"  # nothing else left: judged as it is


def test_names_for_prompts():
    assert (name("de"), name("ja"), name("zh")) == ("German", "Japanese", "Chinese")
    assert name("xx") == "xx"


def test_languages_field_takes_codes_or_any():
    assert build_config({"prepare": {"languages": ["EN", "de-DE", "pt_BR"]}}).prepare.languages == ["en", "de", "pt"]
    assert build_config({"prepare": {"languages": "fr"}}).prepare.languages == ["fr"]
    assert build_config({"prepare": {"languages": "ANY"}}).prepare.languages == "any"
    assert build_config({}).prepare.languages == ["en"]  # the paper's setting


# ---- prepare ------------------------------------------------------------------------------------------

def prepare(**cfg) -> Prepare:
    return Prepare(PrepareConfig(**cfg), lambda text: len(text.split()), None)


def test_prepare_records_the_language_and_rejects_others_by_default():
    st = prepare(min_words=10)
    en, de = {"id": "en", "text": TEXTS["en"]}, {"id": "de", "text": TEXTS["de"]}
    assert st.apply(en, []) is None and en["language"] == "en" and en["language_confidence"] > 0.8
    assert st.apply(de, []) == "language" and de["language"] == "de"
    assert prepare(min_words=10, languages=["en", "de"]).apply({"id": "de", "text": TEXTS["de"]}, []) is None
    assert prepare(min_words=10, languages="any").apply({"id": "ja", "text": TEXTS["ja"] * 3}, []) is None


# ---- prompts -------------------------------------------------------------------------------------------

def test_english_runs_keep_the_english_prompts_exactly():
    """`prepare.languages: [en]` renders the prompts this project always had (same hashes, same runs)."""
    assert load_template("backtranslate").tag == "backtranslate@1#8b71b62ec0dc"
    assert load_template("rewrite").tag == "rewrite@1#ffc28cf1ff34"
    assert load_template("distill").tag == "distill@1#0719e20976ee"
    assert "German" not in json.dumps(load_template("rewrite").render(document="d", instruction="q", language="German").messages)


def test_other_languages_ask_for_the_documents_language():
    bt = load_template("backtranslate", True).render(document="Text", language="German")
    assert bt.messages[-1]["content"].endswith("Reply with the request only, written in German, the language of the text.")
    rw = load_template("rewrite", True).render(document="d", instruction="q", language="French")
    assert "- Write the answer in French, the language of the draft." in rw.messages[0]["content"]
    ds = load_template("distill", True).render(instruction="Wie?", language="German")
    assert ds.messages == [{"role": "system", "content": "Answer in German."}, {"role": "user", "content": "Wie?"}]


# ---- mismatches ----------------------------------------------------------------------------------------

def bt_result(text: str) -> Result:
    return Result(text=text, finish_reason="stop", prompt_tokens=10, completion_tokens=5)


def test_an_english_instruction_for_a_german_document_is_a_mismatch():
    cfg = build_config({"prepare": {"languages": "any"}})
    st = Backtranslate(cfg.backtranslate, None, Policy.of(cfg))
    row = {"id": "de", "text": TEXTS["de"], "language": "de"}
    assert "written in German" in st.requests(row)[0].messages[-1]["content"]
    assert st.apply(row, [bt_result("How do I update the packages on my system?")]) == "language_mismatch"
    assert row["instruction_language"] == "en" and row["instruction_language_confidence"] > 0.5
    ok = {"id": "de2", "text": TEXTS["de"], "language": "de"}
    assert st.apply(ok, [bt_result(QUESTIONS["de"])]) is None


def test_the_english_request_patterns_only_judge_english_documents():
    cfg = build_config({"prepare": {"languages": "any"}})
    st = Backtranslate(cfg.backtranslate, None, Policy.of(cfg))
    statement = "Die Paketverwaltung der Distribution und ihre Signaturen im Überblick."
    assert st.apply({"id": "de", "text": TEXTS["de"], "language": "de"}, [bt_result(statement)]) is None
    assert st.apply({"id": "en", "text": TEXTS["en"], "language": "en"},
                    [bt_result("The package manager of the distribution and its signatures.")]) == "not_a_request"


def test_an_unsure_detection_is_no_mismatch():
    policy = Policy(["en"], mismatch_ratio=5)
    row = {"language": "en"}
    assert policy.check("Sort a list with sorted()", row, "instruction_language") is None
    assert policy.check(QUESTIONS["de"], row, "instruction_language") == "language_mismatch"
    assert policy.check(QUESTIONS["de"], {}, "instruction_language") is None  # no detected language: no check


def multilingual_responder(req):
    stage = stage_of(req)
    text = "\n".join(m["content"] for m in req.messages or [])
    if stage == "backtranslate":  # the right language for every page but the French one
        return QUESTIONS["de"] if "Pakete" in text else QUESTIONS["en"]
    if stage == "curate":
        return Result(text="", finish_reason="stop", choice_logprobs={str(s): (0.0 if s == 5 else -5.0) for s in range(1, 6)})
    if stage == "rewrite":
        draft = section(req.messages[0]["content"], "<draft>", "</draft>")
        return TEXTS["en"] if "Pakete" in draft else draft  # the German page's rewrite comes back in English
    return "Answer."


def test_a_multilingual_run_exports_no_mixed_pair_and_the_card_lists_languages(tmp_path):
    path = tmp_path / "docs.jsonl"
    with open(path, "w") as fh:
        for code in ("en", "de", "fr", "ru"):
            fh.write(json.dumps({"id": code, "text": TEXTS[code]}) + "\n")
    cfg = build_config({"input": {"path": str(path)}, "runner": {"progress": False}, "curate": {"method": "logprobs"},
                        "prepare": {"languages": ["en", "de", "fr"], "min_words": 10}, "grounding": {"enabled": False},
                        "dedup_instructions": {"enabled": False}, "distill": {"enabled": False}})
    stats = run_method(cfg, tmp_path / "run", engine_factory=lambda _m: FakeEngine(multilingual_responder))
    rejects = {r["id"]: (r["stage"], r["reason"]) for r in map(json.loads, open(tmp_path / "run" / "rejects.jsonl"))}
    assert rejects == {"ru": ("prepare", "language"), "fr": ("backtranslate", "language_mismatch"),
                       "de": ("rewrite", "language_mismatch")}
    assert [(r["id"], r["language"]) for r in read_sft(tmp_path / "run")] == [("en", "en")]
    assert stats["languages"] == {"en": 1}
    assert "English (`en`): 1" in (tmp_path / "run" / "README.md").read_text()


# ---- scripts written without spaces -------------------------------------------------------------------

def test_words_and_counts_in_scripts_without_spaces():
    from backforth.language import count_words
    from backforth.pipeline.stages.parsing import is_repetitive, words

    assert words("Don't パッケージ 中文") == ["don", "t", "パ", "ッ", "ケ", "ー", "ジ", "中", "文"]
    assert count_words(TEXTS["en"]) == len(TEXTS["en"].split())  # English counts as it always did
    assert 60 <= count_words(TEXTS["ja"]) <= 90  # about two characters a word, not one "word" per sentence
    assert not is_repetitive("パッケージを更新します。パッケージの一覧を読み、パッケージを入れます。")
    assert is_repetitive("パッケージを更新します。" * 6)


def test_grounding_judges_japanese_by_character_pairs():
    from backforth.pipeline.stages.grounding import check

    faithful = TEXTS["ja"][:60]
    invented = "東京の天気は晴れで、気温は二十度です。"
    assert check(faithful, TEXTS["ja"])["unsupported_share"] == 0.0
    assert check(invented, TEXTS["ja"])["unsupported_share"] > 0.9
