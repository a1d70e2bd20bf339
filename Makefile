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

DEMO_ACCOUNT := 0x70997970C51812dc3A010C7d01b50e0d17dc79C8
OM := $(BIN)/omnimargin

demo: install
	$(OM) devnet down --dir .omnimargin >/dev/null 2>&1 || true
	$(OM) devnet up --dir .omnimargin
	$(OM) snapshot --config .omnimargin/config.toml
	@echo "== unified margin of the demo account: collateral on devnet-eth and devnet-base, USDC in flight over CCTP"
	$(OM) margin $(DEMO_ACCOUNT) --config .omnimargin/config.toml
	@echo "== authorise a 3 ETH perp on devnet-arb (chain 31337002) and open it there with the attestation"
	$(OM) authorize --account $(DEMO_ACCOUNT) --chain-id 31337002 --market ETH --size-delta 3 --config .omnimargin/config.toml --save .omnimargin/authorization.json
	$(OM) devnet submit .omnimargin/authorization.json --dir .omnimargin
	@echo "== margin again, with the position in it (only vault balances back it: wallets are exposure)"
	$(OM) margin $(DEMO_ACCOUNT) --config .omnimargin/config.toml
	@echo "== withdraw 1,000 USDC from the vault on devnet-base: approved by the margin, released by the vault"
	$(OM) withdraw --account $(DEMO_ACCOUNT) --chain-id 31337003 --token USDC --amount 1000 --config .omnimargin/config.toml --save .omnimargin/withdrawal.json
	$(OM) devnet submit .omnimargin/withdrawal.json --dir .omnimargin
	@echo "== lever up, shock ETH -40% on every chain, liquidate round by round (the keeper's path)"
	$(OM) devnet liquidation-demo --dir .omnimargin
	$(OM) margin $(DEMO_ACCOUNT) --config .omnimargin/config.toml
	$(OM) fund --config .omnimargin/config.toml
	$(OM) report $(DEMO_ACCOUNT) --out report.html --config .omnimargin/config.toml
	$(OM) risk --portfolio examples/portfolio.json --scenarios 200000 --alpha 0.99
	@echo
	@echo "The devnet is still running. Start the service and open the dashboard:"
	@echo "  $(OM) serve --config .omnimargin/config.toml    # then open http://127.0.0.1:8000/"
	@echo "  curl http://127.0.0.1:8000/v1/accounts/$(DEMO_ACCOUNT)/margin"
	@echo "report.html has the same pictures for the demo account. Stop the chains with:"
	@echo "  $(OM) devnet down --dir .omnimargin"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint $(CHROMIUM)
	$(BIN)/pytest
	$(BIN)/python -m benchmarks.reliability   # docs/RELIABILITY.md from this run's counts

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
