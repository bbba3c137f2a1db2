# sipim set-up in two commands on Debian 12 (root, or a user with sudo):
#   make run    create .venv, install sipim, start `sipim serve $(ARGS)`
#   make test   install the test tools (sipp, sipsak, baresip, Kamailio, PostgreSQL when
#               absent), install sipim with its test extra, run pytest $(PYTEST_ARGS)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
ARGS ?=
PYTEST_ARGS ?=

# pip reinstalls only when pyproject.toml is newer than the stamp of the last install.
RUN_STAMP := $(VENV)/.sipim-installed
TEST_STAMP := $(VENV)/.sipim-test-installed

.PHONY: run test venv test-deps postgres clean-venv

run: $(RUN_STAMP)
	exec $(VENV)/bin/sipim serve $(ARGS)

test: test-deps $(TEST_STAMP) postgres
	@status=0; $(VENV)/bin/pytest -q $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then \
	    echo "make test: FAILED - pytest collected no tests (exit 5)" >&2; \
	fi; \
	exit $$status

venv: $(VENV)/bin/python

$(VENV)/bin/python:
	PYTHON=$(PYTHON) VENV_DIR=$(VENV) scripts/ensure-venv.sh

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@ $(RUN_STAMP)

test-deps:
	scripts/install-test-deps.sh

postgres:
	scripts/ensure-postgres.sh

clean-venv:
	rm -rf $(VENV)
