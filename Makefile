# The two set-up commands of the README: `make demo` and `make test`. Both create .venv and install on
# first use (and again when pyproject.toml or a requirements file changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sdgan-installed
WORKSPACE ?= workspace/demo
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test install browser clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-nodeps.txt
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.10 is required") if sys.version_info < (3, 10) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[test]"
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt
	touch $@

demo: $(STAMP)
	$(BIN)/sdgan demo --workspace $(WORKSPACE)

test: $(STAMP) browser
	$(BIN)/python -m pytest

# Headless Chromium for the test that renders the evaluation report: Debian's package, installed when missing and
# apt-get is usable as root; otherwise that one test is skipped with its reason (SDGAN_CHROMIUM names a binary).
browser:
	@command -v chromium >/dev/null 2>&1 || [ -n "$$SDGAN_CHROMIUM" ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "chromium is not installed: the report render test will be skipped"


clean-demo:
	rm -rf $(WORKSPACE)
