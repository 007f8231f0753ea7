# cityops: the two commands are `make demo` and `make test`; both set up what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DURATION ?= 0

# Local development defaults (override in the environment).
export CITYOPS_DATABASE_URL ?= postgresql://cityops:cityops@127.0.0.1:5432/cityops
export CITYOPS_TEST_PG ?= postgresql://cityops:cityops@127.0.0.1:5432/postgres
export CITYOPS_MQTT_URL ?= mqtt://127.0.0.1:1883
# The demo, the tests and the benchmarks run the bundled demo city (docs/city.md); a real
# city sets CITYOPS_CITY_PROFILE to its own profile, which needs no ALLOW.
export CITYOPS_CITY_PROFILE ?= demo
export CITYOPS_ALLOW_DEMO_CITY ?= 1

.PHONY: help setup services venv migrate demo test test-at lint bench bench-ingest bench-soak bench-routing bench-forecast bench-replan bench-traffic bench-savings bench-api clean

help:
	@echo "make demo     set up everything and run the city: simulators, ingest, API (DURATION=s to stop)"
	@echo "make test     set up everything and run the test suite against PostgreSQL and Mosquitto"
	@echo "make test-at AT=+400d   the test suite as if the clock read another time (docs/testing.md)"
	@echo "make lint     ruff and mypy (strict)"
	@echo "make bench    all benchmarks (bench-ingest, bench-routing, bench-forecast, bench-replan, bench-savings, bench-api, ...)"

services:
	@bash deploy/local/setup-services.sh

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

setup: services venv

migrate: setup
	$(BIN)/cityops db migrate

demo: migrate
	$(BIN)/cityops demo --duration $(DURATION)

test: setup
	$(BIN)/pytest

# The suite at another date and time: AT=+45d, AT=-3h or AT=2027-03-28T02:30:00+01:00.
# Python and a throwaway PostgreSQL cluster run shifted together (tests/support/run-at.sh).
test-at: setup
	@test -n "$(AT)" || { echo "usage: make test-at AT=+400d (or an ISO time with offset)"; exit 2; }
	bash tests/support/run-at.sh "$(AT)" -- $(BIN)/pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/python .ci/typecheck.py

# Benchmarks print their figures and a final JSON line; see docs/performance.md.
bench: bench-ingest bench-routing bench-forecast bench-replan bench-traffic bench-savings bench-api

bench-ingest: migrate
	$(BIN)/python bench/ingest/run.py

# a million messages through a broker restart, a PostgreSQL restart and a killed ingest:
# it RESTARTS the local cluster (--pg-cluster); BENCH_SOAK_ARGS=--no-pg-restart leaves that out
bench-soak: migrate
	$(BIN)/python bench/ingest/soak.py $(BENCH_SOAK_ARGS)

bench-routing: venv
	$(BIN)/python bench/routing/quality.py --instances ../shared/benchmarks/cvrplib --time-limit 5

bench-forecast: venv
	$(BIN)/python bench/routing/forecast.py

bench-replan: migrate
	$(BIN)/python bench/routing/replan.py

bench-savings: venv
	$(BIN)/python bench/routing/savings.py --no-weekly --seeds 42 7 1 2 3 4 5 6

bench-traffic: migrate
	$(BIN)/python bench/traffic/run.py $(BENCH_TRAFFIC_ARGS)

# the API under load from a second process: public roadworks endpoints and the truck route
bench-api: setup
	$(BIN)/python bench/api/load.py $(BENCH_API_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
