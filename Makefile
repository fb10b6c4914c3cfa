# Two commands matter: `make run` and `make test`. Everything else is for contributors.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE := .devstack
# Tests touching the database run a second time on PostgreSQL.
DB_TESTS := tests/chaos tests/dashboard

.PHONY: run test stop lint format bench soak rehearse setup clean image

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

## run: start the local real stack and the app on http://127.0.0.1:8000/infra (Ctrl-C stops the app)
run: setup
	devstack/up
	$(BIN)/honcho -e $(STATE)/env run $(BIN)/python manage.py migrate --noinput
	@echo "==> http://127.0.0.1:8000/infra   (Ctrl-C stops the app; 'make stop' stops the stack too)"
	echo $$$$ > $(STATE)/pids/app.pid; PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/honcho -e $(STATE)/env start

## test: the whole suite against the real stack (started if needed), on SQLite then PostgreSQL
test: setup
	devstack/up
	devstack/install-axe
	$(BIN)/python -m pytest
	set -a; . $(STATE)/env; set +a; \
	  DATABASE_URL=$$DEVSTACK_POSTGRES_URL $(BIN)/python -m pytest -p no:cacheprovider $(DB_TESTS)

## stop: stop the app (if `make run` is running) and the whole local stack
stop:
	-@[ -f $(STATE)/pids/app.pid ] && kill -TERM $$(cat $(STATE)/pids/app.pid) 2>/dev/null; rm -f $(STATE)/pids/app.pid
	devstack/down

## rehearse: k8s/app/ on a real kubelet node, the production rehearsal (docs/rehearsal.md)
rehearse: setup
	devstack/up
	devstack/node up
	$(BIN)/python -m pytest -p no:cacheprovider tests/integration/test_rehearsal.py

## image: build the container image from the Dockerfile with podman (localhost/infra-chaos:devstack)
image:
	devstack/up image

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: websocket fan-out and chaos latency numbers (needs the stack: devstack/up)
bench: setup
	devstack/up
	$(BIN)/python bench/ws_fanout.py
	$(BIN)/python bench/chaos_latency.py

## soak: ten minutes of viewers, presses, outages and a reconnect storm on two web processes
soak: setup
	devstack/up
	$(BIN)/python bench/soak.py

clean: stop
	rm -rf $(VENV) $(STATE)
