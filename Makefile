# llmtune — two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The exact torch build to install first (CPU wheel here; GPU users: make TORCH_SPEC="torch==2.13.0" ...).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.stamp-install
PYTEST_WORKERS ?= 2
DEMO_DIR ?= runs/demo
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install demo test test-all bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,clean,serve,compress,dpo,track]"
	touch $(STAMP)

# The whole product on the builtin data (`llmtune quickstart`, ~6 min on 2 CPU cores): a tokenizer, a tiny Llama
# pre-trained and instruction-tuned, a tiny BERT pre-trained and fine-tuned into a classifier and a QA model, an
# evaluation of each, generations; one summary table (also in $(DEMO_DIR)/summary.md). The two pre-training budgets
# trade time for quality: make demo DEMO_BUDGET=4m DEMO_MLM_BUDGET=2m (about 13 min) learns more.
DEMO_BUDGET ?= 100s
DEMO_MLM_BUDGET ?= 60s
demo: $(STAMP)
	$(BIN)/llmtune quickstart --output-dir $(DEMO_DIR) --overwrite \
		--lm-budget $(DEMO_BUDGET) --mlm-budget $(DEMO_MLM_BUDGET)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "" tests

# Benchmarks against in-process baselines at small default sizes (~16 min on 2 quiet cores); not part of
# `make test`. BENCH_ARGS=--full for every benchmark's full size (~1.5 h), --quick for a smoke test.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
