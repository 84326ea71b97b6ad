# telemetryd: `make demo` runs the daemon against a simulated city; `make test` runs every test.
# Both set up what they need: Debian packages (when root), uv, a virtualenv with the locked deps.

SHELL := /bin/bash
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
# Compiled once at install: the daemon's ~1 s of imports would otherwise be compiled again at
# every start (PYTHONDONTWRITEBYTECODE, or a read-only venv under ProtectSystem=strict).
export UV_COMPILE_BYTECODE := 1
# Trust the system's CA store (a proxy's CA installed there), also when SSL_CERT_FILE is not set.
export UV_SYSTEM_CERTS := 1

# What the tests and benchmarks run against (Debian names).
DEBIAN_PACKAGES := iproute2 iputils-ping fping prometheus prometheus-blackbox-exporter prometheus-alertmanager systemd python3-venv snmpd snmp iperf3 curl postgresql-15 libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core fonts-dejavu-extra fonts-noto-core poppler-utils chromium chromium-driver

.PHONY: all demo test lint typecheck pytest system-deps venv messages bench bench-daemon clean

all: test

$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS) || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv $(TOOLS); }
	$(TOOLS)/bin/pip install -q "uv==$(UV_VERSION)"

system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping Debian packages ($(DEBIAN_PACKAGES)); tests that need them will skip with a reason"; fi

venv: $(UV)
	$(UV) sync --frozen --quiet
	$(PY) -m compileall -q src
	$(VENV)/bin/pybabel -q compile -d src/telemetryd/locale -D telemetryd

# After changing a translatable string: re-extract the template and merge it into ru and kk, then translate.
messages: venv
	$(VENV)/bin/pybabel -q extract -F babel.cfg --no-wrap --sort-by-file --project telemetryd \
	  --copyright-holder "telemetryd authors" -o src/telemetryd/locale/telemetryd.pot .
	$(VENV)/bin/pybabel -q update --no-wrap --no-fuzzy-matching -i src/telemetryd/locale/telemetryd.pot -d src/telemetryd/locale -D telemetryd

lint: venv
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench

typecheck: venv
	$(UV) run --frozen mypy

pytest: venv system-deps
	$(UV) run --frozen pytest -q

test: lint typecheck pytest

demo: venv system-deps
	$(UV) run --frozen telemetryd demo

bench: venv system-deps
	$(UV) run --frozen python bench/reachability.py
	$(UV) run --frozen python bench/speedtest.py

# The running daemon against 10k/30k/100k simulated devices (root); e.g. BENCH_ARGS="--devices 10000 --minutes 4".
BENCH_ARGS ?= --json bench/results/daemon.json
bench-daemon: venv system-deps
	mkdir -p bench/results
	$(UV) run --frozen python bench/daemon.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .demo .pytest_cache .mypy_cache .ruff_cache
