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
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job on the builtin data: look at the data, then pre-train a tiny Llama (tokenizer included)
# within a 2-minute budget. DEMO_BUDGET=4m learns more.
DEMO_BUDGET ?= 2m
demo: $(STAMP)
	$(BIN)/llmtune data inspect --dataset builtin:text --task lm --examples 2
	$(BIN)/llmtune pretrain --recipe pretrain/llama-tiny --time-budget $(DEMO_BUDGET) \
		--output-dir $(DEMO_DIR)/llama-tiny --overwrite
	@echo "demo done: model, tokenizer, metrics.json and logs/ are in $(DEMO_DIR)/llama-tiny"

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "" tests

# Benchmarks against in-process baselines (~15 min on 2 cores); not part of `make test`. See bench/run_all.py.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
