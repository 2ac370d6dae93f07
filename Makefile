# estimator_lab: `make demo` (set up, run the main study) and `make test` (set up, run the tests).
# TORCH pins the CPU build that lies on this kind of machine; on a GPU machine use
# `make demo TORCH=torch` to get the CUDA build the normal way.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
# Line coverage below this percentage fails `make test` (measured 95.6% on 2026-12-08).
COVERAGE_FLOOR ?= 90

.PHONY: demo curated-demo test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/estimator-lab demo --out runs/demo

# The curated demo report under reports/ is rewritten on purpose only, then committed.
curated-demo: $(VENV)/.installed
	$(VENV)/bin/estimator-lab demo --out reports/demo

test: $(VENV)/.installed
	$(PY) -m pytest --cov=estimator_lab --cov-report=term:skip-covered --cov-fail-under=$(COVERAGE_FLOOR)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
