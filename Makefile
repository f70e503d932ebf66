# The two set-up commands of the README: `make demo` and `make test`. Both create .venv and install on
# first use (and again when pyproject.toml or a requirements file changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sdgan-installed
WORKSPACE ?= workspace/demo
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test install clean-demo

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

test: $(STAMP)
	$(BIN)/python -m pytest

clean-demo:
	rm -rf $(WORKSPACE)
