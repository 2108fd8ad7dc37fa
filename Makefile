# tierwall — the two commands a newcomer needs:
#   make lab    build the lab, converge it, verify it, write the audit report (root)
#   make test   lint + unit tests + the lab integration suites (root)
# Every target installs what it needs (apt packages, uv, the locked virtualenv).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
export ANSIBLE_CONFIG := $(CURDIR)/ansible/ansible.cfg
export PYTHONDONTWRITEBYTECODE := 1
# testinfra's ansible backend calls ansible-inventory by name: the venv's must come first.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

VENV     := .venv
BIN      := $(VENV)/bin
LAB      := .lab
INVENTORY ?= $(LAB)/inventory.yml
REPORTS  := $(LAB)/reports

# Debian packages on the machine that runs the lab and the tests.
# nginx-light: `nginx -t` of the rendered templates; testssl.sh: the edge suite.
# postgresql: the reference app's tests start throwaway clusters of their own (no main cluster is
# created: see apt-deps).
APT_PACKAGES := debootstrap systemd-container nftables iproute2 openssh-client util-linux \
                ca-certificates curl postgresql libpq5 nginx-light testssl.sh

.PHONY: help
help:
	@sed -n 's/^#  //p' $(MAKEFILE_LIST) | head -3
	@echo "targets: lab test unit lint lab-up lab-down lab-status converge verify bench bench-lab clean"

# -- installation ---------------------------------------------------------------------------------
.PHONY: deps apt-deps
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  install -d /etc/postgresql-common; \
	  [ -e /etc/postgresql-common/createcluster.conf ] || \
	    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

deps: $(VENV)/.synced
$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet uv 2>/dev/null || \
	  python3 -m pip install --quiet --break-system-packages uv || \
	  { apt-get install -y -qq python3-pip && python3 -m pip install --quiet --break-system-packages uv; }
	uv sync --frozen --quiet
	@touch $@

# -- the lab ---------------------------------------------------------------------------------------
.PHONY: lab-up lab-down lab-status
lab-up: deps apt-deps
	$(BIN)/tierwall lab up

lab-down: deps
	$(BIN)/tierwall lab down

lab-status: deps
	$(BIN)/tierwall lab status

# -- converge -------------------------------------------------------------------------------------
.PHONY: converge
# unlock-db.yml first: a db machine that restarted (a repaired lab) boots with its data locked,
# as on Hetzner; on a new lab it has nothing to unlock and ends at once.
converge: lab-up
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/unlock-db.yml
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/site.yml

# -- tests ----------------------------------------------------------------------------------------
PYTEST := $(BIN)/pytest -q -p no:cacheprovider

.PHONY: lint unit integration live-tests test
lint: deps
	$(BIN)/ruff check .
	$(BIN)/ansible-lint -q --profile production ansible/

# Unit tests: pure Python, no root, no network namespace, no server started (seconds).
unit: deps
	@mkdir -p $(REPORTS)
	$(PYTEST) tests/unit --junit-xml=$(REPORTS)/unit.xml

# Integration tests on this machine: roles run for real on localhost, nginx -t, nftables in a
# throw-away network namespace, the reference app against real PostgreSQL clusters.
integration: deps apt-deps
	@mkdir -p $(REPORTS)
	$(PYTEST) tests/integration app/tests --junit-xml=$(REPORTS)/integration.xml

LIVE_SUITES := $(PYTEST) tests/lab tests/testinfra -m "not lab_lifecycle" --ansible-inventory=$(INVENTORY)
AUDIT := $(BIN)/tierwall audit --segregation $(REPORTS)/segregation.json

# The live suites against the converged lab: idempotence (a second converge), the lab's own
# checks, the segregation matrix and the testinfra suites per tier; then the audit report, which
# fails if a control failed or has no test. The lifecycle suite (down, up, repair) runs last
# because it rebuilds the machines.
live-tests: converge
	@mkdir -p $(REPORTS)
	@rm -f $(REPORTS)/live.xml $(REPORTS)/segregation.json
	$(LIVE_SUITES) --junit-xml=$(REPORTS)/live.xml
	$(AUDIT) --junit $(REPORTS)/unit.xml $(REPORTS)/integration.xml $(REPORTS)/live.xml --target lab
	$(PYTEST) tests/lab -m lab_lifecycle --junit-xml=$(REPORTS)/lifecycle.xml

test: lint unit integration live-tests

# -- the main job ---------------------------------------------------------------------------------
# Build the lab, converge it, run every verification suite, write the audit report, print a
# summary. Every step runs even when an earlier one fails, so the report shows what failed; the
# exit status is non-zero if anything did.
.PHONY: lab
lab: deps apt-deps
	@mkdir -p $(REPORTS); rm -f $(REPORTS)/*.xml $(REPORTS)/segregation.json
	@started=$$(date +%s); status=0; \
	$(BIN)/tierwall lab up || exit 1; \
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/unlock-db.yml || status=1; \
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/site.yml || status=1; \
	$(PYTEST) tests/unit --junit-xml=$(REPORTS)/unit.xml || status=1; \
	$(LIVE_SUITES) --junit-xml=$(REPORTS)/live.xml || status=1; \
	$(AUDIT) --junit $(REPORTS)/unit.xml $(REPORTS)/live.xml --target lab --started $$started || status=1; \
	exit $$status

# -- benchmarks (bench/README.md) -----------------------------------------------------------------
# Figures, not tests: each script prints its figures beside its target and writes
# .lab/reports/bench/<name>.json. `bench` measures the converged lab as it is; `bench-lab` tears
# the lab down and rebuilds it (cold and warm up, fresh and no-op converges, 1 against 3 app
# servers) and leaves it converged.
.PHONY: bench bench-lab
bench: converge
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/database.py
	$(BIN)/python bench/crypto.py

bench-lab: deps apt-deps
	$(BIN)/python bench/lab_timings.py --suites
	$(BIN)/python bench/scale.py

# -- verification against a Hetzner stack ---------------------------------------------------------
# make verify INVENTORY=path (from `tierwall inventory --pulumi-outputs`). The same testinfra
# suites; lab-only checks (the sentinel, the lab's lifecycle) are skipped with their reason, and
# controls only the lab can prove are reported "not reviewed" for this target.
.PHONY: verify
verify: deps
	@test -f "$(INVENTORY)" || { echo "make verify INVENTORY=<inventory from tierwall inventory>" >&2; exit 2; }
	@mkdir -p $(REPORTS); rm -f $(REPORTS)/verify.xml $(REPORTS)/unit.xml $(REPORTS)/segregation.json
	@status=0; target=$$($(BIN)/python -c "import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))['all']['vars']['tierwall_target'])" $(INVENTORY)); \
	TIERWALL_TARGET=$$target $(PYTEST) tests/unit --junit-xml=$(REPORTS)/unit.xml || status=1; \
	TIERWALL_TARGET=$$target $(PYTEST) tests/testinfra --ansible-inventory=$(INVENTORY) \
	  --junit-xml=$(REPORTS)/verify.xml || status=1; \
	$(BIN)/tierwall audit --partial --junit $(REPORTS)/unit.xml $(REPORTS)/verify.xml --target $$target || status=1; \
	exit $$status
