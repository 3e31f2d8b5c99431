# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test lint bench clean

# Install a Debian package quietly when apt-get is there (tests that need it skip without it).
apt_install = { command -v apt-get >/dev/null && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1) >/dev/null; }; }

$(BIN)/evergreen: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/evergreen
	$(BIN)/evergreen demo .demo

test: $(BIN)/evergreen
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null \
	  && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "note: /usr/bin/chromium is missing and could not be installed; the report's browser test will skip (in CI it fails)"; }
	@command -v docker-compose >/dev/null || $(call apt_install,docker-compose) || echo "note: docker-compose is missing; the compose checks skip (in CI they fail)"
	@command -v promtool >/dev/null || $(call apt_install,prometheus) || echo "note: promtool is missing; the Prometheus checks skip (in CI they fail)"
	$(BIN)/python -m pytest -q

lint: $(BIN)/evergreen
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(BIN)/evergreen
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_dedupe.py --sizes 1000000
	$(BIN)/python bench/bench_loop.py
	$(BIN)/python bench/bench_serving.py

clean:
	rm -rf $(VENV) .demo .pytest_cache
