# One entry point for users, developers and CI. `make test` installs if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/hub serve --demo

test: $(STAMP)
	$(BIN)/ruff check hub tests bench schemas
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check hub tests bench schemas

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
