# allocd: `make run` serves the demo, `make test` runs every test. Both set up
# everything they need (virtualenv, dependencies, generated protobuf code) first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
GEN := service/_generated
PROTOS := $(wildcard protos/allocd/v1/*.proto)
INSTALLED := $(VENV)/.installed
GENERATED := $(GEN)/.generated
BUF := node_modules/.bin/buf
# The order path's modules compiled to C by mypyc (scripts/compile_core.py): the core's, and
# the service's wire encoder (its manifest is service/_compiled.json).
COMPILED := core/_compiled.json

export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: setup run test lint bench gen compile clean

setup: $(INSTALLED) $(GENERATED) $(COMPILED)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Code generation needs only grpcio-tools; the project install needs the generated package.
$(GENERATED): $(PROTOS) $(PY) scripts/gen_protos.py
	$(BIN)/pip install --quiet 'grpcio-tools>=1.66' 'mypy-protobuf>=3.6'
	$(PY) scripts/gen_protos.py
	@touch $@

$(INSTALLED): pyproject.toml $(GENERATED)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# Built again whenever a core module or the encoder changes (the types of one inform the others).
$(COMPILED): $(INSTALLED) scripts/compile_core.py $(wildcard core/*.py) service/allocation_wire.py service/order_wire.py
	$(PY) scripts/compile_core.py

gen: $(GENERATED)

compile: $(COMPILED)

run: setup $(BUF)
	$(BIN)/allocd serve --demo --metrics-port 9464

# The dashboard test drives Debian's Chromium (and its driver); installed when missing.
CHROMEDRIVER := /usr/bin/chromedriver

test: setup $(BUF) $(CHROMEDRIVER)
	$(BUF) lint
	$(PY) -m pytest -q -p no:cacheprovider tests

$(CHROMEDRIVER):
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver

$(BUF): package.json
	npm install --silent --no-audit --no-fund --no-package-lock
	@touch $@

lint: setup $(BUF)
	$(BIN)/ruff check core service bench tests scripts
	$(BIN)/mypy core service
	$(BUF) lint

bench: setup
	$(PY) -m pytest -q -p no:cacheprovider bench --benchmark-only --benchmark-min-rounds=30 \
		--benchmark-columns=min,median,mean,ops,rounds
	$(PY) -m bench.ledger_memory
	$(PY) -m bench.recovery
	$(PY) -m bench.durability_cost
	$(PY) -m bench.grpc_ratio
	$(PY) -m bench.instructions

clean:
	rm -rf $(VENV) $(GEN) .numba_cache node_modules *.egg-info build core/*.so service/*.so $(COMPILED) service/_compiled.json
