# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint imports typecheck pytest bench soak constraints clean

# The agent and the emulator are two distributions of this repository (the image carries only the agent).
$(STAMP): pyproject.toml emulator/pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq --constraint constraints.txt -e '.[pubsub,postgres,test,docs,dev]' -e ./emulator
	touch $(STAMP)

## run: the emulator seeded from examples/ and the agent in `run` mode against it, writing ./demo-secrets;
##      other ports: make run EMULATOR_GRPC_PORT=9780 EMULATOR_HTTP_PORT=9781 AGENT_PORT=9730 PROBES_PORT=9731 (0 = any free)
EMULATOR_GRPC_PORT ?= 8780
EMULATOR_HTTP_PORT ?= 8781
AGENT_PORT ?= 8730
PROBES_PORT ?= 8731
run: $(STAMP)
	EMULATOR_GRPC_PORT='$(EMULATOR_GRPC_PORT)' EMULATOR_HTTP_PORT='$(EMULATOR_HTTP_PORT)' \
	  AGENT_PORT='$(AGENT_PORT)' PROBES_PORT='$(PROBES_PORT)' bash examples/demo.sh

## test: lint + import contracts + type-check + every test
test: lint imports typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check agent emulator testing tests bench
	$(BIN)/ruff format --check agent emulator testing tests bench
	$(BIN)/hadolint Dockerfile

## imports: the layering of DESIGN.md, as import-linter contracts (.importlinter)
imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

## soak: the agent under faults, rotations, kills and outages for SOAK_DURATION (default 10m); one table, non-zero on a broken invariant
SOAK_DURATION ?= 10m
soak: $(STAMP)
	$(BIN)/python -m bench.soak --duration $(SOAK_DURATION)

## constraints: re-resolve the runtime dependencies (what the image installs) into constraints.txt
constraints:
	rm -rf .constraints-venv && $(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/python -m pip install -qq '.[pubsub,postgres]'
	{ sed -n '1,2p' constraints.txt; .constraints-venv/bin/python -m pip freeze --exclude-editable \
	    | grep -v -i '^secrets[-_]agent'; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	rm -rf .constraints-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
