# The two commands a new developer needs: `make run` to see the portal, `make test` for what CI runs.
# Both work from a fresh clone with only Python 3.11+: PostgreSQL and Redis are found on this
# machine or started from wheels (see scripts/devstack.py).

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Recreated only when the lock or pyproject.toml is newer than the last install.
INSTALL_STAMP := $(VENV)/.install-stamp
# The hashed locks (docs/deploy.md#the-lock-files): every package with its version and hashes.
# development.txt (runtime + the dev and devstack extras) is what `make install` installs;
# production.txt (runtime only) is what the image installs. `make lock` writes both.
DEV_LOCK := requirements/development.txt
PROD_LOCK := requirements/production.txt
UV_COMPILE := $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock"
# Extra pytest arguments for `make test`, e.g. make test PYTEST_ARGS="-k approval -x"
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install lock run test test-fast lint bench fmt clean

help: ## List the targets
	@echo "Usage: make <target>"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(INSTALL_STAMP) ## Create .venv and install the locked dependencies and dev tools (again only when the lock changes)

# Every package from the lock, each file checked against its recorded hash; then the project itself
# without dependencies; then pip check, which fails if pyproject.toml asks for what the lock lacks
# (a pin changed without `make lock`).
$(INSTALL_STAMP): $(DEV_LOCK) pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --require-hashes -r $(DEV_LOCK)
	$(VENV_PYTHON) -m pip install --no-deps --no-build-isolation -e .
	$(VENV_PYTHON) -m pip check || { echo "make install: the lock does not match pyproject.toml; run make lock"; exit 1; }
	touch $@

lock: ## Re-resolve requirements/*.txt (hashed locks) from pyproject.toml: after changing a pin, then commit them
	@# uv comes with the dev tools; installing the current lock brings it even when its pip check fails.
	test -x $(VENV)/bin/uv || $(MAKE) install || test -x $(VENV)/bin/uv
	$(UV_COMPILE) --extra dev --extra devstack -o $(DEV_LOCK) pyproject.toml requirements/build.in
	$(UV_COMPILE) --constraint $(DEV_LOCK) -o $(PROD_LOCK) pyproject.toml

run: install ## Start PostgreSQL, Redis, migrate, demo data, the portal and a worker; Ctrl-C stops all
	$(VENV_PYTHON) scripts/devstack.py run

test: install ## What CI runs: linters, static checks, the whole test suite on real services, the benchmarks once (small)
	$(VENV_PYTHON) scripts/devstack.py test $(PYTEST_ARGS)

test-fast: install ## Developer lane: the tests that are not slow, browser, worker, fault or bench (no lint)
	FAST=1 $(VENV_PYTHON) scripts/devstack.py test $(PYTEST_ARGS)

lint: install ## The linters and static checks only (ruff, mypy, import contracts, bandit, Django checks, API schema, hadolint, compose schemas, Kubernetes schemas)
	$(VENV_PYTHON) scripts/devstack.py lint

bench: install ## Benchmarks (bench/): ratios against floors measured in the same run
	$(VENV_PYTHON) scripts/devstack.py bench

fmt: install ## Format the code and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: ## Remove .devstack (embedded database and demo data) and caches; keeps .venv
	rm -rf .devstack .pytest_cache .mypy_cache .ruff_cache staticfiles test-artifacts
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
