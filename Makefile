# The two commands of the README: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= .initium-data

BROWSER := $(VENV)/.browser

.PHONY: setup serve test lint typecheck pytest schemas browser clean

setup: $(STAMP)

# Debian's Chromium, for the test that renders the HTML report in a real browser (needs root).
browser: $(BROWSER)

$(BROWSER): $(STAMP)
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: chromium is not installed and cannot be without root; the browser test will skip"; fi
	touch $(BROWSER)

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

pytest: setup browser
	$(BIN)/pytest

test: lint typecheck pytest

schemas: setup
	$(BIN)/python -m initium.schemas.export

clean:
	rm -rf $(VENV) $(DATA_DIR) .mypy_cache .ruff_cache .pytest_cache
