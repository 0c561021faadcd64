# orderflow: `make run` to run it, `make test` to test it. `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The interpreter that creates .venv; everything else runs inside .venv.
BASE_PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help venv dev run test test-fast test-postgres lint tools check topics \
        kafka-up kafka-down kafka-reset kafka-status kafka-logs postgres-up postgres-down clean bench \
        connect-jars connect-up connect-down connect-status connect-logs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# A stamp per requirements file, named after it: editing the file reinstalls it. The dev file
# includes the runtime one, so editing requirements.txt reinstalls both.
RUNTIME_INSTALLED := $(VENV)/.installed-requirements.txt
DEV_INSTALLED := $(VENV)/.installed-requirements-dev.txt

$(RUNTIME_INSTALLED): requirements.txt
	@test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

$(DEV_INSTALLED): requirements-dev.txt $(RUNTIME_INSTALLED)
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@

venv: $(RUNTIME_INSTALLED) ## create .venv and install requirements.txt (what the service needs)

dev: $(DEV_INSTALLED) ## venv, plus requirements-dev.txt (tests, honcho, ruff)

# The development settings: written when there is no .env, never overwritten, git-ignored. Every
# manage.py command run in this folder reads them (config/env.py); the tests and
# docs/production.env never do (DJANGO_READ_DOT_ENV_FILE=false).
.env:
	@umask 077 && printf '%s\n' \
	  '# Development settings, written by `make` because there was no .env; edit freely (.env.example' \
	  '# lists every variable), but never deploy them: DEBUG on. The tests never read this file.' \
	  'DJANGO_DEBUG=true' \
	  "DJANGO_SECRET_KEY=$$($(BASE_PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" >$@
	@echo "Wrote $@: development settings (DJANGO_DEBUG=true, a secret key of its own)"

# honcho on Procfile.dev, whose lines say `python` (this virtualenv's, first on the PATH). No env
# file for honcho: Django reads .env itself, where the environment wins; honcho's would win over it.
HONCHO := $(PY) -m honcho --procfile Procfile.dev --env /dev/null

# Procfile.dev's release (migrations, topics), the development superuser and its API token, then
# web, consumer and relay under honcho, which prefixes their lines and stops them all when one
# exits (and `make run` fails). scripts/foreground.py hands honcho the terminal, so that Ctrl-C
# stops them all and `make run` exits 0.
run: export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
run: export PYTHONUNBUFFERED := 1
run: export WEB_ADDRESS ?= 127.0.0.1:8000
# With OUTBOX_PUBLISHER=debezium in the environment (and DATABASE_URL on PostgreSQL), the
# Connect worker and the outbox connector take the relay's place, once the migrations and
# topics are there.
ifeq ($(OUTBOX_PUBLISHER),debezium)
RUN_PROCESSES := web consumer
else
RUN_PROCESSES := web consumer relay
endif
run: dev kafka-up .env ## run everything: broker, migrations, topics, web server, consumer, relay (or Debezium)
	$(HONCHO) start release
	$(if $(filter debezium,$(OUTBOX_PUBLISHER)),@$(MAKE) --no-print-directory connect-up)
	@$(PY) manage.py ensure_dev_superuser --web-address $(WEB_ADDRESS)
	@echo "Starting $(RUN_PROCESSES); Ctrl-C stops them all."
	@$(PY) scripts/foreground.py $(HONCHO) start $(RUN_PROCESSES)

# `make test` runs on SQLite (or on DATABASE_URL when set); `make test DB=postgres` starts the
# project's PostgreSQL and runs on it.
ifeq ($(DB),postgres)
TEST_SERVICES := postgres-up
TEST_ENV := DATABASE_URL=$$(scripts/postgres.sh url)
endif

# The tests marked `serial` (they restart what all tests share) run first and alone; then the
# rest on TEST_WORKERS processes (pytest-xdist; an idle worker takes over tests queued for a busy
# one, so the long fault tests do not leave it waiting at the end), each with its own test database. Every test
# isolates itself on the broker with names of its own, so they can share it. TEST_WORKERS=0 runs
# everything in this one process. A run that selects no serial test is not a failure (exit 5).
TEST_WORKERS ?= 2

test: dev tools kafka-up $(TEST_SERVICES) ## run the suite against the real broker; DB=postgres for PostgreSQL
	$(TEST_ENV) $(PY) -m pytest -m serial $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(TEST_ENV) $(PY) -m pytest -m "not serial" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The unit tests alone (tests/unit/, marked `unit` by folder): no broker to start, no tools to
# install, no process started.
test-fast: dev ## the unit tests alone: no broker, no processes (under 30 s)
	$(PY) -m pytest tests/unit -m unit $(PYTEST_ARGS)

tools: ## install the Debian tools the tests use (kcat) when missing
	@scripts/ensure_tools.sh

test-postgres: ## same as `make test DB=postgres`
	@$(MAKE) --no-print-directory test DB=postgres

lint: dev ## ruff: the lint rules and the formatting pyproject.toml sets (no changes made)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: venv .env ## Django's system checks
	$(PY) manage.py check

topics: venv kafka-up .env ## create or grow the event topic and its dead-letter topic
	$(PY) manage.py ensure_topics

kafka-up: venv ## start the local broker (or reuse one that answers); returns when it answers
	@kafka/broker.sh up

kafka-down: ## stop the local broker; its data stays
	@kafka/broker.sh down

kafka-reset: ## stop the local broker and wipe its data
	@kafka/broker.sh reset

kafka-status: ## is the local broker running?
	@kafka/broker.sh status

kafka-logs: ## follow the local broker's log
	@kafka/broker.sh logs

postgres-up: ## install (if missing) and start the project's PostgreSQL on 127.0.0.1:5433
	@scripts/postgres.sh up

postgres-down: ## stop the project's PostgreSQL
	@scripts/postgres.sh down

# Debezium's outbox EventRouter on a Kafka Connect worker (connect/worker.sh) as the relay: the
# worker reads the outbox table's inserts from PostgreSQL's logical decoding and publishes them.
# `make connect-down` stops the worker and keeps the replication slot, so that the next
# `connect-up` resumes where it stopped; `make connect-down DROP_SLOT=1` first deletes the
# connector and drops its slot (PostgreSQL keeps WAL for an unread slot forever).
connect-jars: ## resolve the Connect worker's and Debezium's jars, build the project's transformation
	@connect/worker.sh jars

connect-up: venv kafka-up postgres-up .env ## start the Connect worker and register the outbox connector (Debezium)
	@connect/worker.sh up
	$(PY) manage.py debezium_connector register

connect-down: $(if $(DROP_SLOT),venv .env) ## stop the Connect worker; DROP_SLOT=1 deletes the connector and its replication slot first
	$(if $(DROP_SLOT),$(PY) manage.py debezium_connector delete --drop-slot)
	@connect/worker.sh down

connect-status: venv .env ## is the Connect worker running; the connector's state and slot lag
	@connect/worker.sh status
	$(PY) manage.py debezium_connector status

connect-logs: ## follow the Connect worker's log
	@connect/worker.sh logs

# `make bench` measures the pipeline on the local broker, on SQLite and PostgreSQL, and writes
# bench/results/<timestamp>.{json,md} and PNG plots. BENCH_ARGS=--quick for a short smoke run;
# `.venv/bin/python -m bench --help` lists the options (--db, --only, --repeats, --profile).
BENCH_ARGS ?=

BENCH_INSTALLED := $(VENV)/.installed-requirements-bench.txt

$(BENCH_INSTALLED): requirements-bench.txt $(RUNTIME_INSTALLED)
	$(PY) -m pip install -q -r requirements-bench.txt
	@touch $@

bench: venv kafka-up postgres-up $(BENCH_INSTALLED) ## benchmarks (bench/results/); BENCH_ARGS=--quick for a short run, "--baseline REF" to run REF's beside
	BENCH_POSTGRES_URL=$$(scripts/postgres.sh url) $(PY) -m bench $(BENCH_ARGS)

clean: connect-down kafka-down postgres-down ## stop services and remove .venv, broker and worker jars and data
	rm -rf $(VENV) kafka/lib kafka/.lib.stamp kafka/data .pgdata db.sqlite3
	rm -rf connect/lib connect/plugins connect/transforms/target connect/.jars.stamp connect/.mvn.log connect/data
