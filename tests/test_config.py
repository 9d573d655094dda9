"""Config loading and errors a user can make, and the fingerprint: which fields change which stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_engine import FakeEngine

from backforth.config import SEED_TAG, WEB_TAG, ConfigError, RunConfig, build_config, load_config, parse_overrides
from backforth.pipeline import registry
from backforth.pipeline.method import build_stages, stage_fingerprints


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_follow_the_paper():
    cfg = build_config()
    for stage in (cfg.backtranslate, cfg.curate, cfg.rewrite):
        assert (stage.temperature, stage.top_p) == (1.0, 0.9)
    assert cfg.curate.threshold == 5 and cfg.export.tag == WEB_TAG == "Answer with knowledge from web search."
    assert SEED_TAG == "Answer in the style of an AI Assistant."
    assert cfg.variant == "filter+rewrite"
    assert registry.names(cfg) == ["prepare", "dedup_documents", "page_kind", "backtranslate", "dedup_instructions", "decontaminate",
                               "curate", "best_response", "rewrite", "rewrite_redraw", "grounding", "distill"]
    assert registry.names(build_config({"variant": "filter", "distill": {"enabled": False}})) == [
        "prepare", "dedup_documents", "page_kind", "backtranslate", "dedup_instructions", "decontaminate", "curate", "best_response"]  # no rewrite: no grounding
    assert registry.names(build_config({"variant": "rewrite"})) == [
        "prepare", "dedup_documents", "backtranslate", "dedup_instructions", "decontaminate", "rewrite", "rewrite_redraw", "grounding", "distill"]
    # without the hygiene stages and the page kinds: the paper's pipeline
    hygiene_off = {**{name: {"enabled": False} for name in ("dedup_documents", "dedup_instructions", "decontaminate",
                                                              "grounding", "page_kind")}, "rewrite": {"redraw": False}}
    assert registry.names(build_config(hygiene_off)) == ["prepare", "backtranslate", "curate", "best_response", "rewrite",
                                                         "distill"]
    assert registry.names(build_config({**hygiene_off, "variant": "filter", "distill": {"enabled": False}})) == [
        "prepare", "backtranslate", "curate", "best_response"]
    assert registry.names(build_config({**hygiene_off, "variant": "rewrite"})) == ["prepare", "backtranslate", "rewrite", "distill"]


def test_load_yaml_with_overrides(tmp_path):
    p = write(tmp_path, "input:\n  path: docs.jsonl\ncurate:\n  threshold: 4\nmodels:\n  scorer: {engine: openai, model: big}\n")
    cfg = load_config(p, ["curate.threshold=3", "models.scorer.max_retries=2", "export.tag=null",
                          'backtranslate.stop=["\\n", "###"]', "runner.progress=false"])
    assert cfg.input.path == "docs.jsonl" and cfg.curate.threshold == 3
    assert cfg.models.scorer.engine == "openai" and cfg.models.scorer.model == "big" and cfg.models.scorer.max_retries == 2
    assert cfg.models.backward.engine == "transformers"  # untouched roles keep their defaults
    assert cfg.export.tag is None and cfg.backtranslate.stop == ["\n", "###"] and cfg.runner.progress is False
    assert load_config(write(tmp_path, "", "empty.yaml")) == RunConfig()
    assert load_config(None, ["variant=filter"]).variant == "filter"


def test_unknown_field_is_named(tmp_path):
    p = write(tmp_path, "curate:\n  treshold: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert str(p) in msg and "curate.treshold" in msg and "unknown field" in msg and "config-doc" in msg
    with pytest.raises(ConfigError, match=r"models\.scorer\.temperature: unknown field"):
        build_config({}, ["models.scorer.temperature=0.5"])
    with pytest.raises(ConfigError, match=r"stages: unknown field"):
        build_config({"stages": {}})


@pytest.mark.parametrize("override, where", [
    ("curate.threshold=high", "curate.threshold"),
    ("curate.threshold=9", "curate.threshold"),
    ("runner.chunk_size=0", "runner.chunk_size"),
    ("variant=distill", "variant"),
    ("models.backward.engine=llamacpp", "models.backward.engine"),
    ("backtranslate.top_p=1.5", "backtranslate.top_p"),
    ("input.limit=[1, 2]", "input.limit"),
])
def test_wrong_values_name_the_field(override, where):
    with pytest.raises(ConfigError) as info:
        build_config({}, [override])
    assert f"  --set {where}: " in str(info.value) and "unknown field" not in str(info.value)  # blamed on the --set
    assert str(info.value).startswith("invalid --set override")


def test_wrong_section_type(tmp_path):
    with pytest.raises(ConfigError, match=r"curate: "):
        load_config(write(tmp_path, "curate: 5\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize("pairs, needle", [
    (["curate.threshold"], "expected KEY=VALUE"),
    (["curate.threshold 4"], "expected KEY=VALUE"),
    (["variant=filter", "variant.x=1"], "'variant' is not a section"),
])
def test_bad_set_syntax(pairs, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        parse_overrides(pairs)
    assert "--set" in str(info.value)


def test_set_values_are_parsed_as_yaml():
    assert parse_overrides(["a.b=4", "a.c=true", "d=x=y", "e=", "f= 'q'"]) == {
        "a": {"b": 4, "c": True}, "d": "x=y", "e": None, "f": "q"}


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = write(tmp_path, "input:\n  path: a.jsonl\ncurate:\n  threshold: [4\nvariant: filter\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert str(p) in msg and "not valid YAML" in msg and "line 5" in msg
    p = write(tmp_path, "input:\n  path: a\n    limit: 3\n", "indent.yaml")
    with pytest.raises(ConfigError, match="line 3"):
        load_config(p)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path)  # a folder is not a config file
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("variant: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_trained_mode_needs_a_trained_model():
    with pytest.raises(ConfigError, match="trained"):
        build_config({"backtranslate": {"mode": "trained"}})
    assert build_config({"backtranslate": {"mode": "trained"}, "models": {"backward": {"adapter": "lora/"}}})


# ---- fingerprint -------------------------------------------------------------------------------

def hashes(overrides: list[str]) -> dict[str, str]:
    cfg = build_config({"runner": {"progress": False}}, overrides)
    fake = FakeEngine(lambda req: "", context_length=4096)
    fps = stage_fingerprints(cfg, build_stages(cfg, lambda m: fake))
    return {name: fp["hash"] for name, fp in fps.items()}


BASE = hashes([])


def changed(overrides: list[str]) -> set[str]:
    new = hashes(overrides)
    assert set(new) == set(BASE)
    return {name for name in BASE if new[name] != BASE[name]}


def test_fingerprint_is_stable():
    assert hashes([]) == BASE and len(set(BASE.values())) == len(BASE)


AFTER_BT = {"dedup_instructions", "decontaminate", "curate", "best_response", "rewrite", "rewrite_redraw", "grounding", "distill"}


@pytest.mark.parametrize("overrides, stages", [
    (["curate.threshold=4"], {"curate", "best_response", "rewrite", "rewrite_redraw", "grounding", "distill"}),
    (["curate.method=logprobs"], {"curate", "best_response", "rewrite", "rewrite_redraw", "grounding", "distill"}),
    (["models.scorer.model=other"], {"page_kind", "backtranslate"} | AFTER_BT | {"curate", "best_response", "rewrite", "rewrite_redraw", "grounding", "distill"}),
    (["rewrite.temperature=0.5"], {"rewrite", "rewrite_redraw", "grounding", "distill"}),
    (["distill.max_tokens=100"], {"distill"}),
    (["models.distiller.model=other"], {"distill"}),
    (["backtranslate.top_p=0.5"], {"backtranslate"} | AFTER_BT),
    (["models.backward.model=other"], {"backtranslate"} | AFTER_BT),
    (["prepare.min_words=10"], {"prepare", "dedup_documents", "page_kind", "backtranslate"} | AFTER_BT),
    (["input.text_field=body"], {"prepare", "dedup_documents", "page_kind", "backtranslate"} | AFTER_BT),
    # the hygiene stages' own settings
    (["dedup_documents.threshold=0.7"], {"dedup_documents", "page_kind", "backtranslate"} | AFTER_BT),
    (["dedup_instructions.ngram=2"], AFTER_BT),
    (["decontaminate.ngram=10"], AFTER_BT - {"dedup_instructions"}),
    (["grounding.max_unsupported_numbers=2"], {"grounding", "distill"}),
    (["grounding.judge=true"], {"grounding", "distill"}),
    # not data-relevant
    (["runner.chunk_size=3"], set()),
    (["runner.progress=true"], set()),
    (["models.backward.batch_size=2", "models.scorer.batch_size=2", "models.rewriter.batch_size=2",
      "models.distiller.batch_size=2", "models.judge.batch_size=2"], set()),
    (["input.limit=5"], set()),
    (["export.tag=null"], set()),
    (["models.judge.model=other", "grounding.judge_max_tokens=8"], set()),  # the judge is off by default
])
def test_fingerprint_changes_only_where_the_data_changes(overrides, stages):
    assert changed(overrides) == stages


def test_turning_the_redraw_off_keeps_the_first_draws():
    new = hashes(["rewrite.redraw=false"])
    assert "rewrite_redraw" not in new and new["rewrite"] == BASE["rewrite"]
    assert {n for n in new if new[n] != BASE[n]} == {"grounding", "distill"}  # their input comes from another stage


def test_a_servers_client_settings_are_not_data():
    served = ["models.scorer.engine=openai", "models.scorer.model=m"]
    base = hashes(served)
    assert hashes(served + ["models.scorer.max_in_flight=2", "models.scorer.timeout_s=5",
                            "models.scorer.max_retries=1", "models.scorer.prefix_opener=true"]) == base
    assert hashes(served + ["models.scorer.model=other"])["curate"] != base["curate"]


def test_curate_threshold_does_not_touch_backtranslate():
    new = hashes(["curate.threshold=3"])
    assert new["backtranslate"] == BASE["backtranslate"] and new["prepare"] == BASE["prepare"]
    assert new["curate"] != BASE["curate"] and new["rewrite"] != BASE["rewrite"]


def test_fingerprint_sees_the_prompt_text():
    cfg = build_config({"runner": {"progress": False}})
    fake = FakeEngine(lambda req: "")
    stages = build_stages(cfg, lambda m: fake)
    fps = stage_fingerprints(cfg, stages)
    by_name = {st.name: st for st in stages}
    assert fps["curate"]["fields"]["prompt"] == f"curate_answer@1#{by_name['curate'].template.sha}"
    from backforth.prompts import template_from_text
    bt = by_name["backtranslate"]
    bt.template = template_from_text("backtranslate", bt.template.source + " Be brief.")
    edited = stage_fingerprints(cfg, stages)
    assert edited["backtranslate"]["hash"] != fps["backtranslate"]["hash"]
    assert edited["prepare"]["hash"] == fps["prepare"]["hash"]
