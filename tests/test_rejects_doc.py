"""docs/rejects.md is generated from the code, and the code cannot gain a reject reason it does not document.

The reasons a stage can give are read from its source: the string constants its module's functions
`return` (directly, or as a branch of `x if c else "reason"`), in the module of the stage class and
of every stage class it inherits from (curate_m1 rejects through curate's `apply`), and, when `apply`
returns a variable, in the parsers of `stages/parsing.py` it calls (rewrite's reasons come from
`extract_response` and `degenerate_reason`). Each stage's `rejects` must name exactly those.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backforth import corpus, io, web
from backforth.cli import app
from backforth.corpus import INPUT_REJECTS
from backforth.docs import rejects_markdown
from backforth.pipeline.registry import STAGES
from backforth.pipeline.stage import Stage
from backforth.pipeline.stages import parsing

DOC = Path(__file__).resolve().parents[1] / "docs" / "rejects.md"
REASON = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")  # a reason is a short snake_case word


def _strings(expr: ast.expr | None) -> set[str]:
    """The string constants an expression can evaluate to (constants, branches of if/else and or, tuples)."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        return _strings(expr.body) | _strings(expr.orelse)
    if isinstance(expr, ast.BoolOp):
        return set().union(*(_strings(v) for v in expr.values))
    if isinstance(expr, ast.Tuple):  # parsers return (value, reason)
        return set().union(*(_strings(e) for e in expr.elts))
    return set()


def returned_reasons(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Return):
            found |= {s for s in _strings(node.value) if REASON.match(s)}
    return found


def _module_tree(module_name: str) -> ast.Module:
    return ast.parse(inspect.getsource(sys.modules[module_name]))


def _parsing_helpers_returned_through_a_variable(tree: ast.Module) -> set[str]:
    """Reasons of the `parsing` functions an `apply` calls when it returns a variable, not a constant."""
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "parsing"
                for alias in node.names}
    parsing_tree = ast.parse(inspect.getsource(parsing))
    defs = {n.name: n for n in parsing_tree.body if isinstance(n, ast.FunctionDef)}
    found = set()
    for fn in ast.walk(tree):
        if not (isinstance(fn, ast.FunctionDef) and fn.name == "apply"):
            continue
        if not any(isinstance(n, ast.Return) and isinstance(n.value, ast.Name) for n in ast.walk(fn)):
            continue
        called = {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        for name in called & imported:
            if name in defs:
                found |= returned_reasons(defs[name])
    return found


def reasons_in_source(stage: type[Stage]) -> set[str]:
    modules = {c.__module__ for c in stage.__mro__ if issubclass(c, Stage) and c is not Stage}
    found = set()
    for name in modules:
        tree = _module_tree(name)
        found |= returned_reasons(tree) | _parsing_helpers_returned_through_a_variable(tree)
    return found


def test_docs_rejects_md_is_the_generated_page():
    assert DOC.read_text(encoding="utf-8") == rejects_markdown(), (
        "docs/rejects.md is out of date: run `backforth rejects-doc > docs/rejects.md`")


def test_the_cli_prints_the_page():
    result = CliRunner().invoke(app, ["rejects-doc"])
    assert result.exit_code == 0, result.output
    assert result.output == rejects_markdown()


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_every_reason_a_stage_returns_is_documented(stage):
    in_source = reasons_in_source(stage)
    documented = set(stage.rejects)
    assert in_source <= documented, f"{stage.name}: undocumented reject reasons {sorted(in_source - documented)}"
    assert documented <= in_source, f"{stage.name}: documented reasons it cannot return {sorted(documented - in_source)}"
    assert "rejects" in stage.__dict__, f"{stage.name}: declares no `rejects` of its own"


def test_the_source_scan_finds_the_known_reasons():
    """The scan itself: reasons returned directly, through if/else, by an inherited apply and by parsers."""
    by_name = {s.name: reasons_in_source(s) for s in STAGES}
    assert {"empty", "duplicate", "too_short", "language", "too_long", "addressed_to_ai"} == by_name["prepare"]
    assert "low_score" in by_name["curate"] and by_name["curate_m1"] == by_name["curate"]
    assert by_name["top_share"] == {"below_top_share"}
    assert {"truncated_rewrite", "missing_delimiters", "echoed_prompt", "repetitive_response"} <= by_name["rewrite"]
    assert by_name["distill"] == set()  # it never rejects: its failures are `distill_reason`, not returned


def test_input_reasons_are_documented():
    corpus_src = inspect.getsource(corpus)
    in_source = {io.INVALID_UTF8, io.MALFORMED_JSON, io.NOT_AN_OBJECT}
    in_source |= set(re.findall(r'problem = f?"([a-z_]+)[ "]', corpus_src))
    in_source |= set(re.findall(r'_reject="([a-z_]+)"', corpus_src))
    in_source |= set(re.findall(r'f"([a-z_]+) \(', inspect.getsource(web)))  # the web readers' problems
    assert {"missing_text_field", "text_not_a_string", "duplicate_id"} <= in_source
    assert {"no_main_text", "not_html", "http_status", "broken_record"} <= in_source
    assert set(INPUT_REJECTS) == in_source


@pytest.mark.parametrize("stage", ["input", *[s.name for s in STAGES]])
def test_each_reason_says_what_it_means_and_what_to_try(stage):
    rejects = INPUT_REJECTS if stage == "input" else next(s for s in STAGES if s.name == stage).rejects
    for reason, text in rejects.items():
        meaning, sep, try_ = text.partition("Try:")
        assert sep and meaning.strip() and try_.strip(), f"{stage}.{reason}: write 'meaning. Try: ...'"
        assert f"`{reason}`" in rejects_markdown()
