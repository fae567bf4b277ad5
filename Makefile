# Vallum — every entry point a newcomer or CI needs. Python 3.11+ on Debian.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= deploy/demo/config.yaml

.PHONY: run install test test-unit test-integration test-e2e lint typecheck proto proto-check bench clean

$(STAMP): pyproject.toml
	@# Debian ships venv/ensurepip separately (python3-venv): install it if missing.
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  S=""; [ "$$(id -u)" -eq 0 ] || S=sudo; \
	  $$S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The all-in-one demo: supervisor + authenticate + authorize + proxy.
run: $(STAMP)
	$(VENV)/bin/vallum run --config $(CONFIG)

## Every test tier; installs the system tools the tests need first.
test: $(STAMP)
	bash tests/tools/install.sh
	$(MAKE) proto-check lint typecheck
	$(PY) -m pytest -p no:cacheprovider tests

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy shared services tests

PROTOS := $(wildcard protos/*.proto)
# protos/ is mapped to the import path shared/pb so generated modules import
# each other as `shared.pb.x_pb2`, with no hand edits.
define protoc
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -Ishared/pb=protos \
	  --python_out=$(1) --grpc_python_out=$(1) --mypy_out=$(1) --mypy_grpc_out=$(1) \
	  $(patsubst protos/%,shared/pb/%,$(PROTOS))
endef

proto: $(STAMP)
	rm -f shared/pb/*_pb2*.py shared/pb/*_pb2*.pyi
	$(call protoc,.) >/dev/null
	touch shared/pb/__init__.py

## CI: the committed generated code must be what `make proto` makes now.
proto-check: $(STAMP)
	rm -rf build/proto-check && mkdir -p build/proto-check
	$(call protoc,build/proto-check) >/dev/null
	diff -r -x __init__.py -x __pycache__ build/proto-check/shared/pb shared/pb \
	  || (echo "shared/pb is stale: run 'make proto' and commit" >&2; exit 1)

bench: $(STAMP)
	bash tests/tools/install-bench.sh
	$(PY) -m tests.bench

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
