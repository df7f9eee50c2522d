# One entry point for set-up, the demo and the tests. Every target sets itself up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser prometheus demo test unit check-generated check-web check-deploy generate web lint typecheck bench-faults bench-load clean

setup: $(STAMP)

# The runtime lock and the development lock (tests, mypy, buf, Playwright, Envoy), then the
# project itself, editable.
$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "python3 is required"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade 'pip>=24'
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock -r requirements-dev.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

generate: setup
	PYTHON=$(PY) scripts/gen-protos.sh

# The browser bundle (web_bridge/static/app.js) from protos/ and web/src (needs Node 20 and npm).
web: setup
	scripts/build-web.sh

# Rebuilds the bundle in a scratch copy and fails when the committed one differs.
check-web: setup
	scripts/check-web.sh

# Debian's Chromium, driven by Playwright in the browser tests (never a downloaded browser).
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Debian's Prometheus: the metrics tests run a private server and promtool on every endpoint.
prometheus:
	@test -x /usr/bin/prometheus -a -x /usr/bin/promtool || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

# Regenerates into a scratch copy and fails when the committed generated/ differs.
check-generated: setup
	scripts/check-generated.sh

# The image and the Helm chart: hadolint, helm lint/template, Kubernetes schemas, Envoy's config,
# the alert rules and the dashboard's queries (scripts/check-deploy.sh; fetches Helm into .tools/).
check-deploy: setup
	scripts/check-deploy.sh

# The protos (buf), then the Python code: ruff's rules and its formatter (pyproject [tool.ruff]).
lint: setup
	cd protos && ../$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy strict over the services, the tests and scripts/ (pyproject [tool.mypy] files).
typecheck: setup
	$(VENV)/bin/mypy

demo: setup
	$(VENV)/bin/osago up

unit: setup
	$(PY) -m pytest -q -m "not functional"

# The whole suite with branch coverage of the project's packages (pyproject [tool.coverage]);
# fails when the total drops below fail_under.
test: setup browser prometheus check-generated check-web check-deploy lint typecheck
	$(PY) -m pytest -q --cov --cov-report=term-missing:skip-covered

bench-faults: setup
	$(VENV)/bin/osago bench faults

# 200 concurrent customers for two minutes at real time (docs/BENCHMARKS.md; takes the machine
# for about five minutes). Other sizes: .venv/bin/osago bench load --sessions N --duration S.
bench-load: setup
	$(VENV)/bin/osago bench load

clean:
	rm -rf $(VENV) .tools build *.egg-info
