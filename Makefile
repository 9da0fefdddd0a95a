# Two commands: `make run` (embedded: SQLite + filesystem broker, no servers) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev bench lint services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Start the API on $(HOST):$(PORT) and one worker; nothing else needed (SQLite under var/, filesystem broker).
run: install
	@mkdir -p var
	@$(BIN)/embedtrain-admin migrate 2>&1 | grep -v "^INFO" || true
	@$(BIN)/embedtrain-admin bootstrap
	@echo "API docs: http://$(HOST):$(PORT)/docs    (Ctrl-C stops the API and the worker)"
	@bash -c 'stop() { trap - INT TERM EXIT; kill $$(jobs -p) 2>/dev/null; wait; }; trap stop INT TERM EXIT; \
	  $(BIN)/celery -A worker.celery_app worker --pool solo --concurrency 1 \
	    -Q "$${EMBEDTRAIN_QUEUE_PREFIX}cpu,$${EMBEDTRAIN_QUEUE_PREFIX}gpu" --loglevel WARNING & \
	  $(BIN)/uvicorn --factory api.main:create_app --host $(HOST) --port $(PORT) --log-level warning & \
	  wait -n'

services:
	@bash .ci/services.sh

test: install-dev services
	bash .ci/browser.sh
	bash .ci/wrk.sh
	$(BIN)/python -m pytest -q --timeout 900 $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m pip download -q --no-deps -d bench/.cache lightly==1.6.0
	bash .ci/wrk.sh
	$(BIN)/python bench/loss.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/text_lr.py
	$(BIN)/python bench/photos.py
	$(BIN)/python bench/report.py

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf var .pytest_cache
