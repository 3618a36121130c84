# statestore — developer entry points.
#
#   make run     local broker + registry, demo topics, a bootstrapped view served on 127.0.0.1:8000
#   make test    the whole suite (lint, types, unit and integration tests against the real broker,
#                then the benchmark smoke check)
#
# Everything is installed and started by the project's own files: .venv/ for Python,
# var/ for the broker's, the registry's and the S3 server's jars, data and logs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= statestore.example.toml
PYTEST_ARGS ?=

.PHONY: install tools broker registry s3 services stop-services demo run test lint fmt unit bench soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

# wrk (the benchmark's REST rows) and prometheus + promtool (the alert rules), from the
# Debian archive when missing.
tools:
	@scripts/install-tools

broker: install
	scripts/local-kafka start

registry: install
	scripts/local-registry start

# s3proxy on 127.0.0.1:9100: the S3-compatible home of snapshots in the tests
s3: install
	scripts/local-s3 start

services: broker registry s3

stop-services:
	-scripts/local-s3 stop
	-scripts/local-registry stop
	-scripts/local-kafka stop

demo: services
	scripts/seed-demo

run: demo
	@echo
	@echo "Serving the demo views on http://127.0.0.1:8000 (Ctrl-C stops). Try:"
	@echo "  curl -s localhost:8000/views | python3 -m json.tool"
	@echo "  curl -s localhost:8000/views/deliveries/entities/d-0001"
	@echo "  curl -s 'localhost:8000/views/deliveries/entities?prefix=d-00&limit=5'"
	@echo "  curl -s localhost:8000/views/deliveries/by/status/in_transit?limit=5"
	@echo "  curl -s localhost:8000/views/shipments/by/status/IN_TRANSIT?limit=3"
	@echo "  curl -s -X POST localhost:8000/views/patients/lookup -H 'content-type: application/json' -d '{\"keys\": [\"p-0001\", \"p-9999\"]}'"
	@echo "  curl -s localhost:8000/readyz"
	@echo
	$(BIN)/statestore -c $(CONFIG) serve

lint: install
	$(BIN)/ruff check statestore api tests scripts
	$(BIN)/ruff format --check statestore api
	$(BIN)/mypy
	$(BIN)/hadolint deploy/Dockerfile

fmt: install
	$(BIN)/ruff format statestore api tests
	$(BIN)/ruff check --fix statestore api tests scripts

unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: lint services tools
	$(BIN)/pytest $(PYTEST_ARGS)
	@# The benchmark harness end to end on 100k-record topics: a smoke check (every
	@# system must run and agree on the view's keys), never a timing assertion.
	$(MAKE) --no-print-directory bench QUICK=1

bench: services tools
	$(BIN)/python scripts/bench $(if $(QUICK),--quick,)

soak: services
	$(BIN)/pytest tests/reliability --soak $(PYTEST_ARGS)

clean: stop-services
	rm -rf var/statestore .pytest_cache .mypy_cache .ruff_cache .hypothesis
