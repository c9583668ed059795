# The project's two entry points on a fresh machine (both create and reuse .venv/):
#   make demo   set everything up, then run the CPU demo (synthetic corpus -> train -> evaluate -> transcribe)
#   make test   set everything up, then run the test suite
# TORCH picks the torch build; the default is the CPU wheel that this kind of machine holds locally.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install -q -c $(VENV)/torch-constraint.txt -e '.[test,export]'
	touch $@

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/loss.py --quick
	for b in features train_step train_throughput decode; do $(PY) benchmarks/$$b.py || exit 1; done
