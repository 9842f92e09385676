# evloop: every target sets itself up (virtual environment, install, C build).
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
CSRC    := $(wildcard csrc/*.c csrc/*.h csrc/*.py)
PYTEST  := $(VPY) -m pytest


.PHONY: test-tools bench-daemons
.PHONY: all build test test-c test-pure bench bench-quick microbench lint sanitize dist clean

all: build

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

# EVLOOP_REQUIRE_C=1: a development build without C fails here, with the
# reason, instead of falling back to the pure-Python twins as a user's install
# would. The lint extra too: tests/test_typing.py runs mypy --strict.
$(STAMP): $(VPY) pyproject.toml setup.py $(CSRC)
	EVLOOP_REQUIRE_C=1 $(VPY) -m pip install -q -e '.[test,lint]'
	$(VPY) -c 'import evloop.codec as c; assert c.IMPLEMENTATION == "c", c.IMPLEMENTATION'
	$(VPY) -c 'import evloop.launch as s; assert s.IMPLEMENTATION == "c", s.IMPLEMENTATION'
	touch $@

build: $(STAMP)

# The real clients the daemon tests drive (redis-cli, redis-benchmark,
# redis-server, wrk, curl, openssl). Installed with apt-get when they are
# missing and we are root; otherwise nothing happens here and those tests
# skip, saying which program is missing.
TEST_TOOLS := redis-cli redis-benchmark redis-server wrk curl openssl
test-tools:
	@missing=""; for t in $(TEST_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing the daemon tests' clients (missing:$$missing)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      redis-tools redis-server wrk curl openssl >/dev/null) \
	      || echo "warning: apt-get failed; the tests needing$$missing will skip"; \
	  else echo "note:$$missing not installed (not root or no apt-get): those tests will skip"; fi; \
	fi

# The whole suite with the C extensions (a failed C import is fatal), then
# the suites that depend on them again on the pure-Python twins (codec, the
# RESP parser without its C scanner, and the Popen-based spawn fallback).
test: build test-tools
	EVLOOP_REQUIRE_C=1 $(PYTEST) tests
	EVLOOP_PURE_PYTHON=1 $(PYTEST) tests/test_codec.py tests/test_pipe.py tests/test_spawn.py tests/test_implementation.py \
	    tests/test_resp.py tests/test_resp_scan.py

test-c: build test-tools
	EVLOOP_REQUIRE_C=1 $(PYTEST) tests

test-pure: build
	EVLOOP_PURE_PYTHON=1 $(PYTEST) tests

$(VENV)/.bench-installed: $(STAMP) pyproject.toml
	$(VPY) -m pip install -q -e '.[test,bench]' || echo "warning: bench extras (uvloop, matplotlib) failed to install; the benchmark runs without them"
	touch $@

# The main job: evloop against its peers, every workload (bench/evlbench,
# which is not part of the installed package: it runs from the source tree).
BENCH   := PYTHONPATH=bench$(if $(PYTHONPATH),:$(PYTHONPATH)) $(VPY) -m evlbench

# Then the second ring's benchmarks (coroutines, patterns vs pyzmq,
# sessions), each a script printing one JSON line (bench/second_ring.py).
SECOND  := $(VPY) bench/second_ring.py
bench: $(VENV)/.bench-installed
	$(BENCH) $(BENCH_ARGS)
	$(SECOND) $(if $(findstring --quick,$(BENCH_ARGS)),--quick,)

bench-quick: $(VENV)/.bench-installed
	$(BENCH) --quick $(BENCH_ARGS)
	$(SECOND) --quick

# The daemons of issue 12 under redis-benchmark and wrk, against Debian's
# redis-server and uvloop (+ httptools) peers (bench/daemons/run.py).
bench-daemons: $(VENV)/.bench-installed test-tools
	$(VPY) bench/daemons/run.py $(BENCH_ARGS)

microbench: $(VENV)/.bench-installed
	$(PYTEST) bench/micro --benchmark-only -p no:cacheprovider

lint: build
	$(VPY) -m pip install -q -e '.[test,lint]'
	$(VPY) -m ruff check evloop tests bench examples setup.py csrc
	$(VPY) -m ruff format --check evloop tests bench examples setup.py csrc
	$(VPY) -m mypy

sanitize: build
	$(MAKE) -C csrc sanitize PY=$(abspath $(VPY))

# The sdist and the wheel, in dist/ (python -m build, in an isolated env).
dist: $(VPY)
	$(VPY) -m pip install -q build
	$(VPY) -m build --outdir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info evloop/_codec*.so evloop/_spawn*.so evloop/_codec.c evloop/_spawn.c \
	    evloop/_buildinfo.py .hypothesis bench-results .mypy_cache
	$(MAKE) -C csrc clean
