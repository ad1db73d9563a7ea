# Two commands matter: `make demo` and `make test`. Both build the virtual environment first.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv demo test lint typecheck export export-check pytest stack-up stack-down clean

# uv lives in a venv of its own so that nothing outside the project is touched.
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

venv: $(VENV)/.synced

demo: venv
	$(BIN)/ingest demo

## The README's test command: lint, types, notebooks ↔ package sync, then every test and notebook.
test: lint typecheck export-check pytest

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: venv
	$(BIN)/mypy

export: venv
	$(BIN)/ingest export

export-check: venv
	$(BIN)/ingest export --check

pytest: venv
	$(BIN)/python -m pytest tests notebooks --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg $(PYTEST_ARGS)

stack-up: venv
	$(BIN)/ingest stack up

stack-down: venv
	$(BIN)/ingest stack down

clean:
	-$(BIN)/ingest stack down
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache artifacts
