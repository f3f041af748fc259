# cosmos_models — every target makes its own .venv first; nothing installed by hand is needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(BIN)/python -m pytest

.DEFAULT_GOAL := help
.PHONY: help install test coverage lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv with the package (editable) and the dev tools

test: $(STAMP) ## run the test suite (server backends that are down are skipped, and listed)
	$(PYTEST)

coverage: $(STAMP) ## run the tests with branch coverage; fails under 95%
	$(PYTEST) --cov=cosmos_models --cov-branch --cov-report=term-missing --cov-fail-under=95

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check cosmos_models tests
	$(BIN)/ruff format --check cosmos_models tests
	$(BIN)/mypy --strict cosmos_models

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format cosmos_models tests
	$(BIN)/ruff check --fix cosmos_models tests

clean: ## remove the virtualenv and caches (not your databases)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov dist build
