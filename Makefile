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
	@echo "targets: lab test unit lint lab-up lab-down lab-status converge verify clean"

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
	@command -v uv >/dev/null || python3 -m pip install --quiet uv
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
converge: lab-up
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/site.yml

# -- tests ----------------------------------------------------------------------------------------
PYTEST := $(BIN)/pytest -q -p no:cacheprovider

.PHONY: lint unit live-tests test
lint: deps
	$(BIN)/ruff check .
	$(BIN)/ansible-lint -q --profile production ansible/

unit: deps apt-deps
	@mkdir -p $(REPORTS)
	$(PYTEST) tests/unit app/tests --junit-xml=$(REPORTS)/unit.xml

# The live suites against the converged lab: idempotence (a second converge), the lab's own
# checks, the segregation matrix and the testinfra suites per tier. The lifecycle suite (down,
# up, repair) runs last because it rebuilds the machines.
live-tests: converge
	@mkdir -p $(REPORTS)
	$(PYTEST) tests/lab tests/testinfra -m "not lab_lifecycle" --ansible-inventory=$(INVENTORY) \
	  --junit-xml=$(REPORTS)/live.xml
	$(PYTEST) tests/lab -m lab_lifecycle --junit-xml=$(REPORTS)/lifecycle.xml

test: lint unit live-tests
