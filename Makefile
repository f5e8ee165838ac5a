PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install demo test

# torch first, pinned: a bare range would pull a newer CUDA build
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"

demo: install
	distill run recipe=demo

test: install
	$(PYTHON) -m pytest -q
