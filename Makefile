# The two set-up commands of the README: `make repro` and `make test`.
# Both create the virtual environment first if it is missing (Python 3.11 and git are all they need).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROFILE ?= sample
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: venv repro test test-fast profile plots benchmark mlflow-ui clean-outputs

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

repro: venv
	dvc repro
	dvc status

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not e2e and not slow"

# Switch the active params to a profile: profiles/base.yaml with profiles/$(PROFILE).yaml over it.
profile: venv
	$(BIN)/birdclef profile $(PROFILE)

# dvc plots show as a page that renders offline (dvc_plots/index.html)
plots: venv
	$(BIN)/birdclef plots

benchmark: venv
	$(BIN)/python -m birdclef.cli benchmark

mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --port 5000
