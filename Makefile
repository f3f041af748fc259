# cosmos_models — every target makes its own .venv first; nothing installed by hand is needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(BIN)/python -m pytest

.DEFAULT_GOAL := help
.PHONY: help install browser demo bench bench-check reliability migrate downgrade current migrations-check revision test coverage lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv with the package (editable) and the dev tools

# The dashboard's browser tests drive Debian's chromium (never a browser Playwright downloads);
# without it `make test` skips them and lists them like a down server.
browser: ## install Debian's chromium for the dashboard's browser tests (needs root; once)
	@command -v chromium >/dev/null 2>&1 && echo "chromium: $$(command -v chromium)" || \
	  { apt-get update -qq && apt-get install -y --no-install-recommends chromium; }

migrate: $(STAMP) ## bring COSMOS_DATABASE_URL (default outputs/cosmos_workflow.db) to the newest schema
	$(BIN)/cosmos-models db upgrade

downgrade: $(STAMP) ## go one revision down (or: make downgrade rev=0001 / rev=base)
	$(BIN)/cosmos-models db downgrade -- $(or $(rev),-1)

demo: $(STAMP) ## add sample prompts/runs and simulate workers for a minute (then: cosmos-models watch)
	$(BIN)/cosmos-models demo

current: $(STAMP) ## print the database's revision
	$(BIN)/cosmos-models db current

migrations-check: $(STAMP) ## fail if migrations and models disagree (checked on a fresh SQLite db)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  $(BIN)/cosmos-models db upgrade --no-backup --database "$$tmp/check.db" >/dev/null && \
	  $(BIN)/cosmos-models db check --database "$$tmp/check.db"

revision: $(STAMP) ## autogenerate a revision for review: make revision m="add x to runs"
	@test -n "$(m)" || { echo 'usage: make revision m="message"'; exit 2; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  COSMOS_DATABASE_URL="$$tmp/rev.db" $(BIN)/cosmos-models db upgrade --no-backup >/dev/null && \
	  COSMOS_DATABASE_URL="$$tmp/rev.db" $(BIN)/alembic -c alembic.ini revision --autogenerate -m "$(m)"

COV := --cov=cosmos_models --cov-branch --cov-report=term-missing:skip-covered
# The 95% branch-coverage gate holds when every backend ran; with a server down (laptop), the
# tests of that backend are skipped and listed, and the gate is reported as not applied.
GATE = if [ -f .skipped-backends ]; then \
	  echo "coverage gate (95%) not applied: skipped backends: $$(tr '\n' ' ' < .skipped-backends)"; \
	else $(BIN)/coverage report --fail-under=95 > /dev/null && echo "branch coverage gate (95%): passed"; fi

test: $(STAMP) ## run the tests with branch coverage (gate 95%); down servers are skipped and listed
	$(PYTEST) $(COV)
	@$(GATE)

coverage: $(STAMP) ## the same, plus an HTML report in htmlcov/
	$(PYTEST) $(COV) --cov-report=html
	@$(GATE)

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check cosmos_models tests migrations bench examples
	$(BIN)/ruff format --check cosmos_models tests migrations bench examples
	$(BIN)/mypy --strict cosmos_models

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format cosmos_models tests migrations bench examples
	$(BIN)/ruff check --fix cosmos_models tests migrations bench examples

reliability: $(STAMP) ## the reliability suite at full strength (1,000 connection cycles, 1,000 examples per property, full-size contention, 20 race rounds)
	COSMOS_RELIABILITY_CYCLES=1000 COSMOS_RELIABILITY_SCALE=1 COSMOS_RELIABILITY_ROUNDS=20 HYPOTHESIS_PROFILE=thorough $(PYTEST) -m reliability -p no:cacheprovider

bench: $(STAMP) ## run the benchmarks (not tests); prints ratios, writes bench/results/*.json
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python "$$script" || exit 1; done

bench-check: $(STAMP) ## re-measure the ratios `make bench` stored (--quick sizes); fail if one drops >30%
	$(BIN)/python bench/check.py

clean: ## remove the virtualenv and caches (not your databases)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov dist build
