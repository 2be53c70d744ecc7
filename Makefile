# authproxy: every target installs what it needs into a user-level cache (never the checkout).
#   AUTHPROXY_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/authproxy) overrides the location.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE   ?= $(or $(AUTHPROXY_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/authproxy)
export AUTHPROXY_CACHE := $(CACHE)
PYTHON  ?= python3
REQS    := requirements.txt requirements-dev.txt
VENV    := $(CACHE)/venv-$(shell cat $(REQS) | sha256sum | cut -c1-12)
PY      := $(VENV)/bin/python
STACK   ?= dev
PYTEST  := $(PY) -m pytest -p no:cacheprovider

.PHONY: help venv unit test docs

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: $(REQS)
	@command -v $(PYTHON) >/dev/null || { echo "missing: $(PYTHON) (Python 3.11+)"; exit 1; }
	@echo "==> creating $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed ## install the Python dependencies into the cache

unit: venv ## fast tests: config, components under Pulumi mocks, pure spec builders
	$(PYTEST) tests/unit -q

docs: venv ## regenerate docs/configuration.md from the config model
	$(PY) -c "from components.config import config_reference_markdown as m; open('docs/configuration.md','w').write(m())"

test: unit ## everything CI runs
