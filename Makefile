# `make run` and `make test` are all a new user needs: each creates .venv when it is
# missing and installs the project into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: the whole loop on the embedded digits with a known mix of dirt.
run: $(STAMP)
	$(BIN)/assay run --data digits --inject mixed-mild

## Lint and the test suite (slow tests included), one test file per worker process
## (pytest-xdist; at most 4 workers, one per core).
test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

## Headless Chromium for the report's screenshot test (Debian's package, root only).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report test"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true; \
	  fi; \
	  command -v chromium >/dev/null 2>&1 || \
	    echo "chromium is not available: the report screenshot test will be skipped"; }

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
