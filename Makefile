# Every target builds .venv from the pinned requirements first (only when they changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
STUDY_DIR ?= study_out
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: venv demo study test test-fast lint format bench clean

$(STAMP): requirements.txt requirements-dev.txt constraints.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m apps.demo --out $(DEMO_DIR)

# MALTA vs ABLR vs audio-only over 3 seeds on a 240-video corpus (12-15 min on 2 idle cores):
# the demo's 80 videos leave 11 test videos, too few to tell the models apart.
study: $(STAMP)
	$(PY) -m apps.demo --out $(STUDY_DIR) --videos 240 --seeds 3 --epochs 12 --stages corpus,preprocess,localization

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -p no:warnings -n 2 --durations=15 tests

# The inner loop: unit tests only (no generated corpus, Beam job, training run or subprocess).
test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:warnings -m "not e2e" tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(STUDY_DIR) .pytest_cache
