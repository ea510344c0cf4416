# poolsvc: every target creates .venv on first use, so `make run` and `make test`
# work on a fresh machine with nothing but python3 (>= 3.11).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check lint typecheck fmt clean venv toolchain bench bench-tools chaos soak report-demo

# The accelerated path is a C extension (workers/lane/_lane.c), built by the install below;
# without a compiler or Python's headers the install goes on with the pure-Python path.
HAVE_HEADERS = $(PYTHON) -c "import os, sysconfig; \
	raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"

$(STAMP): pyproject.toml setup.py workers/lane/_lane.c
	@$(MAKE) --no-print-directory toolchain
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## A C compiler and Python's headers for the accelerated path: installed where missing
## (Debian's packages, as root); otherwise the pure-Python path is used, and said so.
toolchain:
	@if ! command -v cc >/dev/null 2>&1 || ! $(HAVE_HEADERS) 2>/dev/null; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
	    echo "installing a C compiler and Python's headers (gcc, python3-dev)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev >/dev/null; \
	  fi; \
	fi
	@command -v cc >/dev/null 2>&1 && $(HAVE_HEADERS) 2>/dev/null || \
	  echo "poolsvc: no C compiler or Python headers: the pure-Python path will run"

## The main job: a 5-second run against the embedded target server, then the report.
run: $(STAMP)
	$(BIN)/poolsvc run --duration 5

## The whole suite: unit tests (pure logic) and integration tests over loopback. Three
## test workers side by side (each its own temporary directory; namespace users one at a
## time), then the tests that measure rates or shares of a core, alone. Under CI=true the
## whole suite runs in one process, one test at a time.
PARALLEL := -n 3 --dist loadgroup
test: $(STAMP)
ifeq ($(CI),)
	$(BIN)/python -m pytest $(PARALLEL) -m "not soak and not timing"
	$(BIN)/python -m pytest -m "timing and not soak"
else
	$(BIN)/python -m pytest
endif

## Benchmarks: poolsvc against wrk, hey and Locust on one pinned nginx (under 10 minutes);
## writes docs/benchmarks.md. Installs nginx, wrk and hey (Debian) and Locust (its own venv).
BENCH_VENV := .venv-bench

$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet locust
	touch $@

bench-tools:
	@command -v nginx >/dev/null && command -v wrk >/dev/null && command -v hey >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq nginx-light wrk hey >/dev/null; }

bench: $(STAMP) $(BENCH_VENV)/.installed bench-tools
	$(BIN)/python -m tools.bench --rounds 5 --seconds 5 --write docs/benchmarks.md

## Chaos: every fault scenario at full size, then the table (scenario, faults, requests,
## errors, recovery, leaked fds, lost counts, pass/fail). A fast subset runs in `make test`.
chaos: $(STAMP)
	$(BIN)/python -m tools.chaos

## The HTML report of a 10 s open-loop run with injected faults (build/report-demo.html),
## and its screenshot in headless Chromium (docs/report.png, shown in the README).
report-demo: $(STAMP)
	mkdir -p build
	$(BIN)/poolsvc run --duration 10s --rate 1500 --inject-failures \
	  --report build/report-demo.html --hlog build/report-demo.hlog --json > build/report-demo.json
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,3000 \
	  --proxy-server=127.0.0.1:9 --user-data-dir=build/chromium \
	  --screenshot=docs/report.png file://$(CURDIR)/build/report-demo.html

## Soak: steady load for 3 minutes; RSS and fd counts per worker must stay flat.
soak: $(STAMP)
	$(BIN)/python -m tools.chaos --soak 180

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy poolsvc workers tools

check: lint typecheck test

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(BENCH_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -f workers/lane/_lane*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
