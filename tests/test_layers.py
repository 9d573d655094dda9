"""The package's shape, checked on its source: imports point down the layers of shared/DESIGN.md, no
import circle, a generic runner, no module outside the stages and the registry spelling a stage's name,
and one error path (console.guarded)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from backforth.pipeline import registry

ROOT = Path(__file__).resolve().parent.parent / "backforth"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in ROOT.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every backforth module `name` imports, at the top, in a function or for type checking only."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {m: imports(m) for m in MODULES}


def reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in GRAPH[m]:
            if n == goal:
                return True
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return False


@pytest.mark.parametrize("a, b", [
    ("backforth.pipeline.registry", "backforth.pipeline.stage"),
    ("backforth.pipeline.runner", "backforth.pipeline.executors.local"),
    ("backforth.pipeline.runner", "backforth.pipeline.executors.ray"),
    ("backforth.train.card", "backforth.train.trainer"),
])
def test_no_import_circle(a, b):
    assert not (reaches(a, b) and reaches(b, a)), f"{a} and {b} import each other"


def test_no_import_circle_anywhere_but_the_engine_factory():
    # engines/__init__.py's build_engine imports each engine lazily, and tokenized.py calls build_engine
    allowed = {"backforth.engines", "backforth.engines.tokenized", "backforth.engines.transformers",
               "backforth.engines.vllm"}
    circles = {m for m in MODULES if reaches(m, m)} - allowed
    assert not circles, sorted(circles)


ABOVE_THE_PIPELINE = ("backforth.cli", "backforth.api", "backforth.console", "backforth.workflows",
                      "backforth.experiment", "backforth.evaluate", "backforth.analysis", "backforth.train",
                      "backforth.push")


def test_the_pipeline_never_imports_what_composes_it():
    for m in MODULES:
        if m.startswith("backforth.pipeline"):
            up = {n for n in GRAPH[m] if n.startswith(ABOVE_THE_PIPELINE)}
            assert not up, f"{m} imports {sorted(up)}"


def test_the_runner_knows_no_run_config_and_no_registry():
    generic = ["backforth.pipeline.runner", "backforth.pipeline.job", "backforth.pipeline.chunks",
               "backforth.pipeline.executors", "backforth.pipeline.executors.local",
               "backforth.pipeline.executors.ray", "backforth.pipeline.fingerprints"]
    for m in generic:
        assert not GRAPH[m] & {"backforth.pipeline.registry", "backforth.pipeline.method", "backforth.corpus"}, m
        assert "RunConfig" not in MODULES[m].read_text(encoding="utf-8"), m


# Strings that are stage names elsewhere but mean something else where they appear: the variants and
# the experiment's datasets ("rewrite", "distill"), a config section ("curate" in config.yaml).
NOT_STAGE_NAMES = {
    "backforth.config": {"rewrite"}, "backforth.pipeline.card": {"rewrite"},
    "backforth.experiment.config": {"rewrite", "distill"}, "backforth.experiment.datasets": {"rewrite", "distill"},
    "backforth.experiment.run": {"rewrite", "distill"}, "backforth.analysis.report_data": {"curate"},
}


def test_only_the_stages_and_the_registry_spell_a_stage_name():
    names = set(registry.NAMES)
    for m, path in MODULES.items():
        if m.startswith("backforth.pipeline.stages") or m == "backforth.pipeline.registry":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr)}
        spelled = {n.value for n in ast.walk(tree)
                   if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings}
        found = (spelled & names) - NOT_STAGE_NAMES.get(m, set())
        assert not found, f"{m} spells stage names {sorted(found)}: read them from the stages' declarations"


# ---- one error path ---------------------------------------------------------------------------------

BROAD = {"ValueError", "Exception", "BaseException"}


def _caught(handler: ast.ExceptHandler) -> set[str]:
    """The exception names an `except` clause catches (a bare `except:` catches everything)."""
    if handler.type is None:
        return {"BaseException"}
    nodes = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {n.id if isinstance(n, ast.Name) else n.attr for n in nodes if isinstance(n, (ast.Name, ast.Attribute))}


def test_errors_become_messages_only_in_console_guarded():
    """A user's mistake raises a UserError, which `console.guarded` turns into a message and an exit code.
    No other module keeps a `_fail` of its own, and no command module catches ValueError (or anything
    broader): that would turn a bug into a "user mistake" message instead of an internal error."""
    for m, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if m != "backforth.console":
            own = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and n.name == "_fail"]
            assert not own, f"{m} defines _fail: raise a UserError and let console.guarded say it"
        if m == "backforth.cli" or m.endswith(".cli"):
            broad = [(h.lineno, sorted(_caught(h) & BROAD)) for h in ast.walk(tree)
                     if isinstance(h, ast.ExceptHandler) and _caught(h) & BROAD]
            assert not broad, f"{m} catches {broad}: a user's mistake raises a UserError (console.guarded says it)"
