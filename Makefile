# Two entry points (README): `make demo` runs the demo audit, `make test` runs every test.
# Both create .venv on first use and install what is missing; later calls reuse it.

PYTHON ?= python3
VENV ?= .venv
# torch is installed first and pinned to the CPU build that needs no CUDA wheels.
# GPU users keep their own CUDA build: `make demo TORCH= VENV_FLAGS=--system-site-packages`.
TORCH ?= torch==2.13.0
VENV_FLAGS ?=
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo report test lint format clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH)" ]; then $(BIN)/python -m pip install --quiet "$(TORCH)"; fi
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# `make demo` ends with the answer: it runs the audit and builds the HTML report (`report`),
# then prints the brief that the report's first screen opens with (the full page:
# results/report/summary.md).
demo: report
	@echo
	@cat results/report/brief.md

# Runs whatever of the audit is not done yet (nothing after `make demo`), then the report.
report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/snakefmt .

clean:
	rm -rf results .snakemake
