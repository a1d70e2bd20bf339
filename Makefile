# omnimargin: `make demo` runs the main job, `make test` runs the checks and tests.
# Both set up everything they need on a fresh machine (a virtual environment in .venv).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Debian's Chromium for the dashboard's browser test (Playwright drives it; nothing is downloaded)
CHROMIUM := /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

node_modules/.bin/anvil: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make: the browser test needs Chromium at $(CHROMIUM) (Debian package chromium)"; exit 1; }
	$(SUDO) apt-get install -y -q chromium || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

install: $(STAMP) node_modules/.bin/anvil

demo: install
	$(BIN)/omnimargin devnet down --dir .omnimargin >/dev/null 2>&1 || true
	$(BIN)/omnimargin devnet up --dir .omnimargin
	$(BIN)/omnimargin snapshot --config .omnimargin/config.toml
	$(BIN)/omnimargin margin 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --config .omnimargin/config.toml
	$(BIN)/omnimargin authorize --account 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --chain-id 31337002 --market ETH --size-delta 3 --config .omnimargin/config.toml
	$(BIN)/omnimargin risk --portfolio examples/portfolio.json --scenarios 200000 --alpha 0.99
	$(BIN)/omnimargin risk --portfolio examples/portfolio.json --scenarios 200000 --alpha 0.99 --model student_t --dof 4 --json
	$(BIN)/omnimargin devnet down --dir .omnimargin

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint $(CHROMIUM)
	$(BIN)/pytest

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
