# retrain: every target depends on `setup`, which builds .venv once and again only when
# pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RETRAIN := $(BIN)/retrain
ARGS ?=

.PHONY: setup test lint demo retrain full-rebuild bump-version bench status clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "retrain needs Python >= 3.11 (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

test: setup
	$(BIN)/ruff check retrain tests bench
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check retrain tests bench

# The sample market goes into the default store when it holds no bars, and is topped up to the
# last complete session when it is the sample (deterministically, from its recorded seed and
# origins); then the whole weekly loop runs once (`retrain run`, incremental) and the next
# session's picks are printed.
demo: setup
	$(RETRAIN) sample-data --top-up
	$(RETRAIN) run $(ARGS)
	$(RETRAIN) predict --top 10

# The weekly job: incremental indicators, features, labels, training and backtest.
# Options pass through ARGS, e.g. make retrain ARGS="--exchange NYSE --training-days 120"
retrain: setup
	$(RETRAIN) run $(ARGS)

full-rebuild: setup
	$(RETRAIN) run --full-rebuild $(ARGS)

bump-version: setup
	$(RETRAIN) run --bump-version $(ARGS)

status: setup
	$(RETRAIN) status $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

bench: setup
	$(BIN)/python bench/run.py
