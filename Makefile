# `make demo` and `make test` create or refresh .venv, then run.
# The venv is rebuilt only when pyproject.toml or constraints.txt change (stamp file).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin
DEMO_OUT ?= outputs/demo

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tardistill demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) outputs
