# `make demo` and `make test` do their own set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test lint venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	touch $@

venv: $(VENV)/.torch

demo: venv
	$(BIN)/python -m pip install -q -e ".[demo]"
	$(BIN)/hazyzoo demo

test: venv
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info demo_output
