# Two commands do everything on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install the pinned dependencies (constraints.txt) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,search]'
	touch $(STAMP)

install: $(STAMP)

# The main job: a short rule search on the embedded defaults (a local Ray instance, the SQLite
# store runs/digits.sqlite); a second run reuses the store's results as cache hits.
demo: $(STAMP)
	$(VENV)/bin/optdsl search --strategy random --task digits --budget 60 --workers 2

# A test that hangs past 10 min stops the run with every thread's stack (pytest-timeout; its
# thread method, since search.evaluate uses SIGALRM itself) instead of stalling CI.
HANG_LIMIT := --timeout 600 --timeout-method thread

# The default suite, on every core (pytest-xdist); `$(PY) -m pytest -q` runs it in one process.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadgroup $(HANG_LIMIT)

# The multi-process tests, one at a time: the 2-node Ray cluster recipe of docs/cluster.md, Ray
# fault injection (killed workers, SIGKILLed searches) and gloo ranks. CI runs it after `make test`.
test-system: $(STAMP)
	$(PY) -m pytest -q -m 'system or cluster' $(HANG_LIMIT)

bench: $(STAMP)
	$(PY) benchmarks/step_bench.py

.PHONY: install demo test test-system bench
