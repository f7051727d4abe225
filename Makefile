# Set-up and the two entry points of the README. Torch is installed first, pinned, so that pip does not pull a
# CUDA build on a CPU machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[demo,hf,test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/langneurons demo

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/collect.py

lint: $(VENV)/.installed
	$(BIN)/ruff check .
