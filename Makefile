# The two commands a new user needs:  make demo   and   make test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ATHAR_HOME ?= $(CURDIR)/.athar-demo
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup system-deps test-deps demo test lint bench clean

# Debian packages: zbar for pyzbar (the scanner, at run time). Installed only when missing.
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q libzbar.so.0; then \
	  echo "installing libzbar0 (Debian)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libzbar0 >/dev/null; \
	fi

# Headless Chromium renders the dashboard and the patient page in the test suite. Installed only when missing.
test-deps: system-deps
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing chromium (Debian) for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

$(BIN)/athar: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(BIN)/athar

setup: system-deps $(BIN)/athar

# Builds the demo ledger (idempotent) in $(ATHAR_HOME) on embedded SQLite, verifies it, then serves it.
demo: setup
	$(BIN)/athar demo --data-dir $(ATHAR_HOME) --serve --host $(HOST) --port $(PORT)

# All tests. PostgreSQL tests use ATHAR_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
# and are skipped when it is not reachable (CI sets ATHAR_REQUIRE_POSTGRES=1: they then fail instead). The serial
# tests (-m serial) run last, alone: one stops and restarts the local PostgreSQL cluster.
test: setup test-deps
	$(BIN)/python -m pytest -q -n 2 -m "not serial" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -m serial $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: no serial test selected

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# wrk (Debian) drives the cross-check with an independent load generator; the benchmark skips it without.
bench: setup
	@if ! command -v wrk >/dev/null 2>&1; then \
	  echo "installing wrk (Debian) for the load-generator cross-check"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk >/dev/null) || echo "wrk not installed: skipped"; \
	fi
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .athar-demo .pytest_cache .mypy_cache .ruff_cache
