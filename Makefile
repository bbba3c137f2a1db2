# sipim set-up in two commands on Debian 12 (root, or a user with sudo):
#   make run    create .venv, install sipim, start `sipim serve $(ARGS)`
#   make test   install the test tools (sipp, sipsak, baresip, Kamailio, PostgreSQL,
#               Chromium when absent), install sipim with its test extra, run pytest $(PYTEST_ARGS)
#   make lint   check the import contracts in pyproject.toml ([tool.importlinter]: the
#               layers, the roles' independence, no cycles), ruff, and mypy --strict on
#               the typed modules ($(STRICT_TYPED)); test runs it first
#   make web    build the browser client (npm ci + esbuild) into sipim/web/static/;
#               run and test do it when the bundle is missing or older than web/
#   make accel  compile the SIP message layer with mypyc (sipim/sip/_accel.py); run
#               and test do it when a source changed (run goes on without it if the
#               build cannot be made; SIPIM_ACCEL=0 skips it). test runs the suite on
#               the compiled modules, then tests/sip again on the sources (SIPIM_PURE=1)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
ARGS ?=
PYTEST_ARGS ?=

# pip reinstalls only when pyproject.toml is newer than the stamp of the last install.
RUN_STAMP := $(VENV)/.sipim-installed
TEST_STAMP := $(VENV)/.sipim-test-installed

.PHONY: run test lint venv test-deps postgres clean-venv web accel accel-optional

# The browser client bundle; index.html is written last by web/build.mjs.
WEB_BUNDLE := sipim/web/static/index.html
WEB_SOURCES := web/package.json web/package-lock.json web/build.mjs $(wildcard web/src/*)

run: $(RUN_STAMP) $(WEB_BUNDLE) accel-optional
	exec $(VENV)/bin/sipim serve $(ARGS)

# The pure-Python pass over tests/sip runs only for the whole suite (no PYTEST_ARGS).
test: test-deps $(TEST_STAMP) lint postgres $(WEB_BUNDLE) accel
	@status=0; $(VENV)/bin/pytest -q $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then \
	    echo "make test: FAILED - pytest collected no tests (exit 5)" >&2; \
	fi; \
	if [ $$status -eq 0 ] && [ -z "$(PYTEST_ARGS)" ]; then \
	    echo ">> tests/sip again on the pure-Python SIP modules (SIPIM_PURE=1)" >&2; \
	    SIPIM_PURE=1 $(VENV)/bin/pytest -q tests/sip || status=$$?; \
	fi; \
	exit $$status

# The modules kept clean under mypy --strict: the sans-IO protocol layers, the store,
# the shared values and the router; every module a new role adds joins the list.
STRICT_TYPED := sipim/sip sipim/cpim sipim/imdn sipim/store sipim/net.py sipim/phone.py \
	sipim/tomlconfig.py sipim/core/router.py sipim/core/identity.py sipim/core/ratelimit.py

# lint-imports, ruff and mypy come with the test extra; each exits non-zero on a finding.
lint: $(TEST_STAMP)
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/ruff check --quiet sipim tests bench scripts
	$(VENV)/bin/mypy --strict --no-error-summary $(STRICT_TYPED)

venv: $(VENV)/bin/python

$(VENV)/bin/python:
	PYTHON=$(PYTHON) VENV_DIR=$(VENV) scripts/ensure-venv.sh

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[accel]'
	touch $@

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@ $(RUN_STAMP)

web: $(WEB_BUNDLE)

# The build script compares source hashes with its stamp: a no-op when current.
accel: $(RUN_STAMP)
	VENV_DIR=$(VENV) scripts/build-accel.sh

accel-optional: $(RUN_STAMP)
	VENV_DIR=$(VENV) SIPIM_ACCEL=$${SIPIM_ACCEL:-optional} scripts/build-accel.sh

$(WEB_BUNDLE): $(WEB_SOURCES)
	scripts/build-web.sh

test-deps:
	scripts/install-test-deps.sh

postgres:
	scripts/ensure-postgres.sh

clean-venv:
	rm -rf $(VENV)
