"""README's Python section, as written, on the embedded models: examples/notebook.py, which holds the
README's code, runs from a folder laid out like the repository (its bundled corpus at the same path)."""

from __future__ import annotations

import re
import runpy
import shutil
from pathlib import Path

import datasets
import pytest

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLE = REPO / "examples" / "notebook.py"


def readme_python() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_shows_the_examples_code():
    example = EXAMPLE.read_text(encoding="utf-8")
    assert readme_python().strip() in example


# The demo's models at the demo's token budgets on three pages: 5 min on 2 AVX2 cores without native bf16
# (float32), 3 min with AMX; tests/e2e/test_embedded_demo.py runs the same configuration end to end in the
# default suite at smaller budgets.
@pytest.mark.slow
def test_the_notebook_example_runs_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "backforth" / "data").mkdir(parents=True)
    shutil.copy(REPO / "backforth" / "data" / "demo_corpus.jsonl", tmp_path / "backforth" / "data")
    monkeypatch.chdir(tmp_path)
    names = runpy.run_path(str(EXAMPLE), run_name="__main__")
    printed = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + printed)  # the example's output, for the record (pytest -s shows it)
    result, longer = names["result"], names["longer"]
    assert isinstance(result.dataset, datasets.Dataset)
    assert {"instruction", "response"} <= set(result.dataset.column_names)
    assert result.path == Path("runs/nb") and (tmp_path / "runs" / "nb" / "sft.parquet").is_file()
    assert dict(result.funnel)["documents_in"] == 3 and result.stats["outputs"]["sft"] == len(result.dataset)
    assert isinstance(result.rejects, datasets.Dataset)
    assert isinstance(result.distilled, datasets.Dataset)
    funnel = dict(longer.funnel)
    assert "long_enough" in funnel and funnel["exported"] == funnel["long_enough"] <= dict(result.funnel)["exported"]
    assert all(len(r.split()) >= 40 for r in longer.dataset["response"])
