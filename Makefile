# Two commands set up everything on a fresh machine: `make run` (the demo: installs only what running needs)
# and `make test` (what CI runs: installs the test, docs and dev tools as well). `make help` lists the rest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Two stamps: `make run` installs the runtime only, `make test` (and every target that needs the tools) the
# rest; each is redone when a dependency list changes, and neither reinstalls when nothing did.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
DEPENDENCY_LISTS := pyproject.toml emulator/pyproject.toml constraints.txt
# --constraint: the versions the image installs (constraints.txt); -qq: only errors, the steps say the rest.
PIP_INSTALL := $(BIN)/python -m pip install -qq --disable-pip-version-check --constraint constraints.txt
# What lint and format cover: every Python package here (docs_gen generates the manual's reference pages).
PY_PATHS := agent emulator testing tests bench $(wildcard docs_gen)

.DEFAULT_GOAL := help
.PHONY: help run test test-quick lint format imports typecheck pytest docs docs-build docs-reference \
  bench soak constraints clean

help: ## this list
	@echo 'make TARGET, where TARGET is one of:'
	@awk -F ':.*## ' '/^[a-z][a-z-]*:.*## / { printf "  %-15s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# Then a current pip: it resolves and installs faster than the one ensurepip bundles (19 s against 25 s here).
$(BIN)/python:
	@echo "make: creating $(VENV) with $$($(PYTHON) --version 2>&1) ($(PYTHON))"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -qq --disable-pip-version-check --upgrade pip

# The agent and the emulator are two distributions of this repository (the image carries only the agent).
# The demo uses neither Pub/Sub events nor database rotation, so no extra is needed to run it.
$(RUN_STAMP): $(DEPENDENCY_LISTS) | $(BIN)/python
	@echo "make: installing the agent and the emulator into $(VENV) (runtime only, ~105 MB, about 20 s)..."
	@started=$$(date +%s); $(PIP_INSTALL) -e . -e ./emulator \
	  && echo "make: installed in $$(( $$(date +%s) - started )) s; $(VENV) is $$(du -sm $(VENV) | cut -f1) MB"
	@touch $@

# Everything at once (one resolution); it includes the runtime, so the run stamp is refreshed too.
$(TEST_STAMP): $(DEPENDENCY_LISTS) | $(BIN)/python
	@echo "make: installing the agent, the emulator and the test, docs and dev tools into $(VENV)" \
	  "(~570 MB, a minute or two)..."
	@started=$$(date +%s); $(PIP_INSTALL) -e '.[pubsub,postgres,test,docs,dev]' -e ./emulator \
	  && echo "make: installed in $$(( $$(date +%s) - started )) s; $(VENV) is $$(du -sm $(VENV) | cut -f1) MB"
	@touch $@ $(RUN_STAMP)

EMULATOR_GRPC_PORT ?= 8780
EMULATOR_HTTP_PORT ?= 8781
AGENT_PORT ?= 8730
PROBES_PORT ?= 8731
# Other ports: make run EMULATOR_GRPC_PORT=9780 EMULATOR_HTTP_PORT=9781 AGENT_PORT=9730 PROBES_PORT=9731
# (0 = any free port).
run: $(RUN_STAMP) ## the demo: the emulator, and the agent against it writing ./demo-secrets
	@EMULATOR_GRPC_PORT='$(EMULATOR_GRPC_PORT)' EMULATOR_HTTP_PORT='$(EMULATOR_HTTP_PORT)' \
	  AGENT_PORT='$(AGENT_PORT)' PROBES_PORT='$(PROBES_PORT)' bash examples/demo.sh

test: lint imports typecheck docs-build pytest ## what CI runs: lint, imports, typecheck, docs-build, every test

test-quick: lint imports typecheck docs-build ## make test without the Java (Pub/Sub) and PostgreSQL tests
	$(BIN)/pytest -q -m 'not pubsub and not postgres' $(PYTEST_ARGS)

lint: $(TEST_STAMP) ## ruff (check and format --check) and hadolint, as .pre-commit-config.yaml does
	$(BIN)/ruff check $(PY_PATHS)
	$(BIN)/ruff format --check $(PY_PATHS)
	$(BIN)/hadolint Dockerfile

format: $(TEST_STAMP) ## fix what ruff can (ruff check --fix), then reformat (ruff format)
	$(BIN)/ruff check --fix $(PY_PATHS)
	$(BIN)/ruff format $(PY_PATHS)

imports: $(TEST_STAMP) ## the layering of the packages, as import-linter contracts (.importlinter)
	$(BIN)/lint-imports --no-cache

typecheck: $(TEST_STAMP) ## mypy --strict (the files: [tool.mypy] in pyproject.toml)
	$(BIN)/mypy

# Every test on PYTEST_WORKERS processes (pytest-xdist; pyproject.toml's --dist loadfile keeps each test module
# on one worker, so a module fixture such as the 30 s soak is built once). With PYTEST_ARGS it is one process
# (quicker to start for a few tests; -x, -s and --pdb as usual): add `-n 2` to PYTEST_ARGS to spread those too.
PYTEST_WORKERS ?= 2
pytest: $(TEST_STAMP) ## every test (2 workers); some: make pytest PYTEST_ARGS='tests/render -x' (1 process)
	$(BIN)/pytest -q $(if $(PYTEST_ARGS),,-n $(PYTEST_WORKERS)) $(PYTEST_ARGS)

DOCS_ADDR ?= 127.0.0.1:8000
docs: $(TEST_STAMP) ## serve the manual on http://127.0.0.1:8000 (DOCS_ADDR=...), rebuilt on every save
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr '$(DOCS_ADDR)'

docs-build: $(TEST_STAMP) ## build the manual into site/, every warning an error
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-reference: $(TEST_STAMP) ## regenerate the pages of docs/reference/ from the code (python -m docs_gen)
	$(BIN)/python -m docs_gen

bench: $(TEST_STAMP) ## the benchmarks (about 7.5 min; BENCH_QUICK=1 make bench is shorter)
	$(BIN)/python -m bench

SOAK_DURATION ?= 10m
# One table at the end; non-zero when an invariant broke.
soak: $(TEST_STAMP) ## the agent under faults, rotations, kills and outages for SOAK_DURATION (default 10m)
	$(BIN)/python -m bench.soak --duration $(SOAK_DURATION)

constraints: ## re-resolve the runtime dependencies (what the image installs) into constraints.txt
	rm -rf .constraints-venv && $(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/python -m pip install -qq '.[pubsub,postgres]'
	{ sed -n '1,2p' constraints.txt; .constraints-venv/bin/python -m pip freeze --exclude-editable \
	    | grep -v -i '^secrets[-_]agent'; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	rm -rf .constraints-venv

clean: ## remove the venv, the caches and the built manual (site/)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info site
