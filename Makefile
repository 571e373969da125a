# The two commands of the README: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= .initium-data

.PHONY: setup serve test lint typecheck pytest schemas clean

setup: $(STAMP)

$(STAMP): requirements/dev.txt schemas/pyproject.toml client/pyproject.toml service/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: a bare `torch` would pull several GB of CUDA packages.
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet -e schemas -e "client[torch]" -e service
	touch $(STAMP)

serve: setup
	$(BIN)/initium serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy schemas/initium client/initium service/initium

pytest: setup
	$(BIN)/pytest

test: lint typecheck pytest

schemas: setup
	$(BIN)/python -m initium.schemas.export

clean:
	rm -rf $(VENV) $(DATA_DIR) .mypy_cache .ruff_cache .pytest_cache
