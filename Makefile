# authproxy: every target installs what it needs into a user-level cache (never the checkout).
#   AUTHPROXY_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/authproxy) overrides the location.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE   ?= $(or $(AUTHPROXY_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/authproxy)
export AUTHPROXY_CACHE := $(CACHE)
PYTHON  ?= python3
REQS    := requirements.txt requirements-dev.txt
# One venv per requirement set, under venvs/ (the cache is shared by several checkouts: each keeps
# its own; venvs unused for 14 days are removed)
VENV    := $(CACHE)/venvs/$(shell cat $(REQS) | sha256sum | cut -c1-12)
PY      := $(VENV)/bin/python
STACK   ?= dev
MODE    ?=
PYTEST  := $(PY) -m pytest -p no:cacheprovider
# unit and conformance: JOBS pytest-xdist workers (one per core here), a test module per worker
# (its module fixtures built once); the tests marked `timing` (they measure wall time) run alone after
JOBS    ?= 2
XDIST   := $(if $(filter-out 0 1,$(JOBS)),-n $(JOBS) --dist loadfile)
# actionlint (Go module, built once into the cache; module and build caches there too)
GO      ?= go
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT := $(CACHE)/actionlint/$(ACTIONLINT_VERSION)/actionlint
GOBUILD_ENV := GOPATH=$(CACHE)/go GOMODCACHE=$(CACHE)/go/pkg/mod GOCACHE=$(CACHE)/go-build \
               GOFLAGS="-modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0

.PHONY: help venv toolchain unit test docs render render-digests conformance e2e engine live demo lint typecheck actionlint policy-test bench soak

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: $(REQS)
	@command -v $(PYTHON) >/dev/null || { echo "missing: $(PYTHON) (Python 3.11+)"; exit 1; }
	@echo "==> creating $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@
	@# venvs no checkout used for 14 days are dead weight in the cache: drop them
	@find $(CACHE)/venvs -mindepth 1 -maxdepth 1 -type d ! -path '$(VENV)' \
	  ! -newermt '-14 days' -exec rm -rf {} + 2>/dev/null || true

venv: $(VENV)/.installed ## install the Python dependencies into the cache
	@touch $(VENV)

toolchain: venv $(ACTIONLINT) ## install every component `make test` uses into the cache (CI's toolchain job)
	$(PY) -m authproxy_local.install --group test

unit: venv ## fast tests: config, components under Pulumi mocks, pure spec builders
	$(PYTEST) tests/unit -q $(XDIST) -m "not timing"
	$(PYTEST) tests/unit -q -m timing

docs: venv ## regenerate docs/configuration.md from the config model
	$(PY) -c "from components.config import config_reference_markdown as m; open('docs/configuration.md','w').write(m())"

render-digests: venv ## record the current render of every example stack as the expected one (tests/unit/test_render_identity.py)
	$(PY) -m authproxy_local.render --digests --update

render: venv ## offline render of a stack into build/render/<stack>-<mode>: make render STACK=dev [MODE=envoy-filter]
	$(PY) -m authproxy_local.render --stack $(STACK) $(if $(MODE),--mode $(MODE))

conformance: venv ## dev+prod renders, both ext_authz modes, through kubernetes-validate and istioctl analyze
	$(PYTEST) tests/conformance -q $(XDIST)

e2e: venv ## live end-to-end tests: the dev stack (real `pulumi up`) on real Keycloak, Redis, oauth2-proxy, Envoy running istiod's config (both ext_authz modes)
	$(PY) -m authproxy_local.install --group e2e
	$(PYTEST) tests/e2e -q

engine: venv ## the stacks through the real pulumi CLI and providers, awaited on kube-apiserver + controllers + kwok nodes, and Keycloak: preview, policy, up, rollouts, HPA, drain, rotation, faults, destroy
	$(PY) -m authproxy_local.install --group engine
	$(PY) -m authproxy_local.engine

demo: venv ## run the stack locally (STACK=dev [MODE=envoy-filter]); prints URLs and demo users; Ctrl-C stops it
	$(PY) -m authproxy_local.install --group demo
	$(PY) -m authproxy_local.demo --stack $(STACK) $(if $(MODE),--mode $(MODE))

soak: venv ## sessions under failover, rolling restarts, sign-in storms, Keycloak restarts, 10k/100k sessions (prod stack, live harness; not in `make test`): docs/reliability.md. QUICK=1, SCALE=10000, ONLY=rolling-restart,..., SET=istio.extAuthzTimeout=4s, ACCESS_LOG=1
	$(PY) -m authproxy_local.install --group soak
	$(PY) -m authproxy_local.soak $(if $(QUICK),--quick) $(if $(SCALE),--scale $(SCALE)) $(if $(ONLY),--only $(ONLY)) $(foreach s,$(SET),--set $(s)) $(if $(ACCESS_LOG),--access-log)

bench: venv ## request-path benchmark on the live harness with wrk (~12 min; not in `make test`): docs/benchmarks.md + plot; QUICK=1 = 3-min smoke run
	$(PY) -m authproxy_local.install --group bench
	$(PY) -m authproxy_local.bench $(if $(QUICK),--quick)

lint: venv ## ruff over the whole checkout (pyproject.toml [tool.ruff])
	$(PY) -m ruff check .

typecheck: venv ## mypy: strict on components/ and policy/ (pyproject.toml [tool.mypy])
	$(PY) -m mypy --cache-dir $(CACHE)/mypy-cache

$(ACTIONLINT):
	@command -v $(GO) >/dev/null || { echo "missing: go (1.25+), needed to build actionlint"; exit 1; }
	$(GOBUILD_ENV) GOBIN=$(@D) $(GO) install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

actionlint: venv $(ACTIONLINT) ## check .github/workflows (actionlint, with shellcheck on run: scripts)
	$(ACTIONLINT) -shellcheck=$(VENV)/bin/shellcheck -pyflakes=

policy-test: venv ## the policy pack's tests (also part of `make unit`)
	$(PYTEST) tests/unit/test_policies.py -q

live: venv ## e2e and engine side by side, each output line prefixed `e2e | ` / `engine | `; fails naming the half that failed
	$(PY) -m authproxy_local.together "e2e=$(MAKE) --no-print-directory e2e" "engine=$(MAKE) --no-print-directory engine"

test: lint typecheck actionlint unit conformance live ## everything CI runs (e2e and engine side by side: `make live`)
