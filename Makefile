# Two commands on a fresh machine (they create .venv and install on first use):
#   make demo    # train a digits CNN, edit it, audit it, print the gate verdict (embedded server)
#   make test    # the whole test suite (needs Postgres and Redis on 127.0.0.1)
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are installed first and explicitly, so no resolver swaps in another (multi-GB) build.
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install demo test test-fast serve manifest bench

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(if $(strip $(TORCH)),$(PY) -m pip install -q $(TORCH))
	$(PY) -m pip install -q -e '.[all]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/editaudit demo

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

serve: install
	$(VENV)/bin/editaudit serve

# regenerate the torch-free architecture manifest the API reads (after adding an architecture)
manifest: install
	$(PY) -m editaudit.worker.ml.archs.signatures

bench: install
	$(PY) bench/audit.py
