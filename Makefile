# Two commands on a fresh clone: `make run` (demo lake -> Airflow DAG -> server) and `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
VAR := var
LAKE ?= $(VAR)/demo-lake
USERS ?= 2000
ITEMS ?= 1000
DAYS ?= 14
SEED ?= 7
PORT ?= 8080
export OPENBLAS_NUM_THREADS := 1
export SPARK_LOCAL_IP := 127.0.0.1
export GX_ANALYTICS_ENABLED := false
export AIRFLOW_HOME := $(CURDIR)/$(VAR)/airflow
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv run pipeline demo-lake serve test test-unit test-spark test-dags test-e2e test-slow lint bench lock clean

# uv from PATH if present, else from a private bootstrap venv (a clean machine has only python)
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(VAR)/bootstrap/bin/uv
endif

$(VAR)/bootstrap/bin/uv:
	$(PY) -m venv $(VAR)/bootstrap
	$(VAR)/bootstrap/bin/pip install --quiet uv

$(VENV)/.synced: requirements.lock pyproject.toml | $(UV)
	test -x $(VENV)/bin/python || $(UV) venv --quiet --python $(PY) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --quiet --compile-bytecode requirements.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps -e .
	@touch $@

venv: $(VENV)/.synced ## create the environment from the lock file

lock: ## re-resolve requirements.lock from pyproject.toml
	uv pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11

$(LAKE)/items: | $(VENV)/.synced
	$(BIN)/homepage generate --lake $(LAKE) --users $(USERS) --items $(ITEMS) --days $(DAYS) --seed $(SEED)

demo-lake: venv $(LAKE)/items ## generate the demo lake (once)

pipeline: demo-lake ## run the daily DAG through Airflow on the demo lake (no serving)
	$(BIN)/homepage airflow-test --lake $(LAKE)

serve: venv ## serve the published export (prints example URLs)
	$(BIN)/homepage serve --lake $(LAKE) --port $(PORT)

run: pipeline serve ## the whole thing: demo lake -> DAG -> HTTP server

TEST_WORKERS ?= 2
test: venv ## the test suite (what CI runs): TEST_WORKERS pytest processes, one test module each at a time
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

test-unit: venv ## one tier alone: pure numpy/pandas tests and the architecture checks (about a minute)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile tests/unit

test-spark: venv ## one tier alone: the Spark feature, ingest and trainer tests (one local[2] session per process)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile tests/spark

test-dags: venv ## one tier alone: DAG integrity and the Airflow backfill tests
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile tests/dags

test-e2e: venv ## one tier alone: whole runs on generated lakes (pipeline, gate, refresh, experiments, faults)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile tests/e2e

test-slow: venv ## the slow tests, not in make test: the 7-day Airflow backfill against seven single runs (~25 min)
	$(BIN)/pytest -q -m slow

lint: venv ## ruff and the import-linter contracts (make test runs the contracts too)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

BENCH_USERS ?= 10000 100000 1000000
BENCH_REFRESH_USERS ?= 1000000
BENCH_SET ?= spark.driver_memory=12g spark.shuffle_partitions=16
bench: venv ## scale benchmarks (not part of make test): the daily run at 10k, 100k and 1M users, an intra-day refresh on the 1M export, the lookup server
	$(BIN)/homepage bench pipeline --users $(BENCH_USERS) $(foreach s,$(BENCH_SET),--set $(s))
	$(BIN)/homepage bench refresh --users $(BENCH_REFRESH_USERS) $(foreach s,$(BENCH_SET),--set $(s))
	$(BIN)/homepage bench serve --users 100000 --workers 2

clean:
	rm -rf $(VAR)
