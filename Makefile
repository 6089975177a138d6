# One entry point for users, developers and CI. `make test` installs if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

# setup.py builds hub/validation/_clean.pyx in place: editing it needs a rebuild, as pyproject.toml does.
$(STAMP): pyproject.toml setup.py hub/validation/_clean.pyx
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/hub serve --demo

test: $(STAMP)
	$(BIN)/ruff check hub tests bench schemas setup.py
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check hub tests bench schemas setup.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
