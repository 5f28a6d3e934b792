# The two set-up commands of the README: `make repro` and `make test`.
# Both create the virtual environment first if it is missing (Python 3.11 and git are all they need).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROFILE ?= sample
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: venv repro test test-fast profile plots benchmark mlflow-ui mlflow-server clean-outputs

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

# A tracking server for several writers (dvc queue start -j N, a team): on 127.0.0.1 only.
# MLFLOW_BACKEND may be a PostgreSQL URI; MLFLOW_AUTH=1 turns on MLflow's basic authentication
# (admin password from MLFLOW_AUTH_ADMIN_PASSWORD, users' database and settings from the file
# MLFLOW_AUTH_CONFIG_PATH points at, CSRF key from MLFLOW_FLASK_SERVER_SECRET_KEY: keep all of them
# outside the repository). Then, for every command:
#   export MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT)  (and MLFLOW_TRACKING_USERNAME/PASSWORD)
MLFLOW_PORT ?= 5001
MLFLOW_BACKEND ?= sqlite:///$(abspath mlflow-server.db)
MLFLOW_ARTIFACTS ?= $(abspath mlartifacts-server)
mlflow-server: venv
	$(BIN)/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) \
		--backend-store-uri $(MLFLOW_BACKEND) --artifacts-destination $(MLFLOW_ARTIFACTS) \
		$(if $(MLFLOW_AUTH),--app-name basic-auth)
