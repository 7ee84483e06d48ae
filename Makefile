# Two commands on a fresh machine (they create .venv and install on first use):
#   make demo    # train a digits CNN, edit it, audit it, print the gate verdict (embedded server)
#   make test    # the whole test suite (needs Postgres and Redis on 127.0.0.1)
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are installed first and explicitly, so no resolver swaps in another (multi-GB) build.
# CPU=1: torch's CPU-only wheels from download.pytorch.org (~0.7 GB instead of the CUDA build's ~4 GB).
TORCH ?= torch==2.14.1 torchvision==0.29.1
ifeq ($(CPU),1)
TORCH := --index-url https://download.pytorch.org/whl/cpu 'torch>=2.10,<2.15' 'torchvision>=0.25,<0.30'
endif
PYTEST_ARGS ?=

.PHONY: install demo lint test test-fast install-check serve manifest bench screenshots

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(if $(strip $(TORCH)),$(PY) -m pip install -q $(TORCH))
	$(PY) -m pip install -q -e '.[all]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/editaudit demo

# static checks first (fail fast): ruff, then mypy over the tree as Python imports it (tests/tools/typecheck.py)
lint: install
	$(VENV)/bin/ruff check .
	$(PY) -m tests.tools.typecheck

# the static checks, the whole suite, then the release as users install it (wheel -> fresh venvs: gate, api, worker)
test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)
	$(PY) -m tests.tools.install_check

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

install-check: install
	$(PY) -m tests.tools.install_check

serve: install
	$(VENV)/bin/editaudit serve

# regenerate the torch-free architecture manifest the API reads (after adding an architecture)
manifest: install
	$(PY) -m editaudit.worker.ml.archs.signatures

# the screenshots in docs/img/ (console, reports, /docs), taken by the browser tests in headless Chromium
screenshots: install
	EDITAUDIT_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/e2e/test_console_browser.py tests/e2e/test_docs_browser.py \
		tests/e2e/test_demo.py

bench: install
	$(PY) bench/audit.py
