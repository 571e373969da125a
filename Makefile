# The two commands of the README: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= .initium-data

DEBS := $(VENV)/.debs

.PHONY: setup serve test lint typecheck pytest schemas debs dist clean

setup: $(STAMP)

# Debian packages the tests use: chromium (the HTML report in a real browser) and redis-server (the
# scaled-out topology: broker, API, two workers) and nginx (deploy/nginx.conf.template in front of the
# API). One apt-get update, only for what is missing.
debs: $(DEBS)

$(DEBS): $(STAMP)
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "error: the tests need$$missing; as root: apt-get install$$missing"; exit 1; fi
	touch $(DEBS)

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

pytest: setup debs
	INITIUM_REQUIRE_REDIS=1 INITIUM_REQUIRE_NGINX=1 $(BIN)/pytest

test: lint typecheck pytest

schemas: setup
	$(BIN)/python -m initium.schemas.export

# The three distributions from this checkout: a wheel and an sdist of each, into dist/ (gitignored).
# `pip install dist/initium_schemas-*.whl dist/initium_client-*.whl` installs the client alone.
dist: setup
	rm -rf dist
	for pkg in schemas client service; do $(BIN)/python -m build --outdir dist $$pkg || exit 1; done

clean:
	rm -rf $(VENV) $(DATA_DIR) dist .mypy_cache .ruff_cache .pytest_cache
