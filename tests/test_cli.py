"""The command line: documentation, and user errors that exit 2 with a message and no traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backforth.cli import app
from backforth.config import RunConfig

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def leaf_fields() -> list[str]:
    """Every leaf field's dotted name; sibling sections of one type (the model roles, the Ray pools of
    the roles) are documented once, as `<role>`."""
    from backforth.config import ENGINES, Models

    def walk(model, prefix: str) -> list[str]:
        if model is Models:  # each role takes the fields of its engine's section
            return sorted({f for section in ENGINES.values() for f in walk(section, f"{prefix}<role>.")})
        names, shown = [], set()
        for name, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                if sum(f.annotation is sub for f in model.model_fields.values()) > 1:
                    if sub not in shown:
                        shown.add(sub)
                        names += walk(sub, f"{prefix}<role>.")
                    continue
                names += walk(sub, f"{prefix}{name}.")
            else:
                names.append(prefix + name)
        return names

    return walk(RunConfig, "")


def assert_clean_failure(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.output


def test_config_doc_lists_every_field():
    result = invoke("config-doc")
    assert result.exit_code == 0
    documented = re.findall(r"^\| `([^`]+)` \|", result.output, re.MULTILINE)
    assert set(documented) == set(leaf_fields())
    assert "curate.threshold" in documented and "models.<role>.base_url" in documented
    assert "runner.ray.address" in documented and "runner.ray.<role>.num_gpus" in documented
    for line in result.output.splitlines():
        if line.startswith("| `"):
            assert line.rstrip().endswith("|") and line.split("|")[3].strip(), f"undocumented: {line}"


def test_show_config_prints_the_resolved_config(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("curate:\n  threshold: 4\n")
    result = invoke("show-config", str(p), "--set", "variant=filter")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["curate"]["threshold"] == 4 and data["variant"] == "filter"
    assert data["backtranslate"]["temperature"] == 1.0


def test_show_config_with_a_bad_field(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("curate:\n  treshold: 4\n")
    out = assert_clean_failure(invoke("show-config", str(p)))
    assert "curate.treshold: unknown field" in out and str(p) in out


def test_show_config_with_a_bad_override():
    out = assert_clean_failure(invoke("show-config", "--set", "curate.threshold"))
    assert "expected KEY=VALUE" in out
    out = assert_clean_failure(invoke("show-config", "--set", "curate.threshold=nine"))
    assert "curate.threshold" in out


def test_run_with_a_missing_config_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    out = assert_clean_failure(invoke("run", str(missing), "--out", str(tmp_path / "out")))
    assert "missing.yaml: config file not found" in out
    assert not (tmp_path / "out").exists()


def test_run_with_bad_yaml(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("input:\n  path: [x\n")
    out = assert_clean_failure(invoke("run", str(p), "--out", str(tmp_path / "out")))
    assert "not valid YAML" in out and "line" in out


def test_run_with_an_unknown_section(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("input:\n  path: docs.jsonl\nruntime: {}\n")
    out = assert_clean_failure(invoke("run", str(p), "--out", str(tmp_path / "out")))
    assert "runtime: unknown field" in out


# Models on the openai engine: constructing them loads nothing and contacts no server.
SERVED = "".join(f"  {role}: {{engine: openai, model: m, base_url: 'http://127.0.0.1:9/v1'}}\n"
                 for role in ("backward", "scorer", "rewriter", "distiller"))


def test_run_with_a_missing_input_file(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(f"input:\n  path: {tmp_path / 'nowhere.jsonl'}\nmodels:\n{SERVED}runner: {{progress: false}}\n")
    out = assert_clean_failure(invoke("run", str(p), "--out", str(tmp_path / "out")))
    assert "nowhere.jsonl: no such file" in out


def test_run_resolves_the_input_next_to_the_config_and_reports_an_unreachable_server(tmp_path):
    (tmp_path / "docs.jsonl").write_text(json.dumps({"id": "a", "text": " ".join(["word"] * 50)}) + "\n")
    p = tmp_path / "run.yaml"
    p.write_text(f"input:\n  path: docs.jsonl\nmodels:\n{SERVED.replace('model: m,', 'model: m, max_retries: 0,')}"
                 "runner: {progress: false}\n")
    out = assert_clean_failure(invoke("run", str(p), "--out", str(tmp_path / "out")), code=3)
    # the input was found next to the config (else "no such file"), then the preflight found the
    # server down before any work: nothing written, not even an empty run dir
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in out and "run the same command again" in out
    assert not (tmp_path / "out").exists()


def test_demo_with_a_missing_input(tmp_path):
    out = assert_clean_failure(invoke("demo", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")))
    assert "missing.jsonl: no such file" in out and "--input" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [[], ["--help"]])
def test_help(args):
    result = invoke(*args)
    assert "run" in result.output and "demo" in result.output and "config-doc" in result.output


def _experiment_fields() -> set[str]:
    from backforth.experiment.config import (EvalSection, ExperimentConfig, JudgeSection, ReferenceSection,
                                             ResponseTableSection)

    sections = (("eval", EvalSection), ("reference", ReferenceSection), ("judge", JudgeSection),
                ("response_table", ResponseTableSection))
    fields = {n for n in ExperimentConfig.model_fields if n not in dict(sections)}
    for prefix, section in sections:
        fields |= {f"{prefix}.{n}" for n in section.model_fields}
    return fields


def _train_fields() -> set[str]:
    from backforth.train.config import TrainConfig

    return set(TrainConfig.model_fields)


@pytest.mark.parametrize("flag, doc, fields", [("--experiment", "experiment.md", _experiment_fields),
                                               ("--train", "train.md", _train_fields)])
def test_experiment_and_train_docs_are_generated_and_complete(flag, doc, fields):
    result = invoke("config-doc", flag)
    assert result.exit_code == 0
    path = Path(__file__).parents[1] / "docs" / doc
    assert path.read_text(encoding="utf-8") == result.output, f"regenerate: backforth config-doc {flag} > docs/{doc}"
    assert set(re.findall(r"^\| `([^`]+)` \|", result.output, re.MULTILINE)) == fields()
