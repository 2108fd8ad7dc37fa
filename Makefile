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
# PYTHONDONTWRITEBYTECODE keeps the tests from littering the tree, and uv does not compile by
# default: without this every ansible-playbook (and each forked worker) compiled Ansible anew.
export UV_COMPILE_BYTECODE := 1
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
# created: see apt-deps). sudo: visudo checks the rendered sudoers files.
APT_PACKAGES := debootstrap systemd-container nftables iproute2 openssh-client util-linux \
                ca-certificates curl postgresql libpq5 nginx-light testssl.sh rsyslog rsyslog-relp \
                rsyslog-openssl age sudo aide

.PHONY: help
## help: this list (each target's line is the `## target:` comment above it in this Makefile)
help:
	@sed -n 's/^#  //p' $(MAKEFILE_LIST) | head -3
	@echo
	@sed -n 's/^## \([a-z-]*\): /  \1|/p' $(MAKEFILE_LIST) | column -t -s '|'

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

## deps: the locked virtual environment (.venv)
deps: $(VENV)/.synced
$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet uv 2>/dev/null || \
	  python3 -m pip install --quiet --break-system-packages uv || \
	  { apt-get install -y -qq python3-pip && python3 -m pip install --quiet --break-system-packages uv; }
	uv sync --frozen --quiet
	@touch $@

# -- the lab ---------------------------------------------------------------------------------------
.PHONY: lab-up lab-down lab-status
## lab-up: start the lab (idempotent; repairs killed machines)
lab-up: deps apt-deps
	$(BIN)/tierwall lab up

## lab-down: stop the lab and remove every trace of it from this machine
lab-down: deps
	$(BIN)/tierwall lab down

## lab-status: what runs of the lab
lab-status: deps
	$(BIN)/tierwall lab status

# -- converge -------------------------------------------------------------------------------------
.PHONY: converge
# unlock-db.yml first: a db machine that restarted (a repaired lab) boots with its data locked,
# as on Hetzner; on a new lab it has nothing to unlock and ends at once.
## converge: unlock-db.yml, then site.yml, on the lab; then the lab's key escrow (tierwall escrow)
converge: lab-up
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/unlock-db.yml
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/site.yml
	$(BIN)/tierwall escrow export --lab

# -- tests ----------------------------------------------------------------------------------------
PYTEST := $(BIN)/pytest -q -p no:cacheprovider

# Which tests run: everything for `make test` (but the Debian 13 tree's checks: make
# trixie-configs); for `make lab` only what the report needs.
MARKS_PRE := -m "not trixie_tree"
MARKS_LIVE := not lab_lifecycle and not upgrade_drill
# The unit tests are many short ones, each on its own: one worker per core.
UNIT = $(PYTEST) tests/unit -n auto $(MARKS_PRE) --junit-xml=$(REPORTS)/unit.xml
INTEGRATION = $(PYTEST) tests/integration app/tests $(MARKS_PRE) --junit-xml=$(REPORTS)/integration.xml

# The live suites against the converged lab, in two passes. First the tests that stop, restart
# or open something on a host for a moment, one after the other, alone. Then everything that only
# reads (the idempotence converge, the lab's checks, the segregation matrix, the testinfra suites
# per tier), spread over parallel workers: a file's tests stay together (its module fixtures are
# made once) and the files run side by side. Last, so its idempotence converge proves the
# disruptive tests left the lab as converged, and its results describe the lab the live
# mutations then break (their baseline in make test).
LIVE_WORKERS ?= 4
LIVE = $(PYTEST) tests/lab tests/testinfra --ansible-inventory=$(INVENTORY)
LIVE_PARALLEL = $(LIVE) -n $(LIVE_WORKERS) --dist loadfile -m "$(MARKS_LIVE) and not disruptive" \
                --junit-xml=$(REPORTS)/live.xml
LIVE_SERIAL = $(LIVE) -m "$(MARKS_LIVE) and disruptive" --junit-xml=$(REPORTS)/live-disruptive.xml
# The audit picks the JUnit files of $(REPORTS) by the names in tierwall.audit.evidence: with
# --suites lab or --suites test every file those suites write must be there (a missing one is an
# error, not a thinner report); `make audit` reads the known files that are there.
AUDIT = $(BIN)/tierwall audit --segregation $(REPORTS)/segregation.json --target lab --reports $(REPORTS)

.PHONY: lint unit integration live-tests lifecycle audit test
## lint: ruff, mypy (src/, infra/) and ansible-lint (production profile)
lint: deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy infra/policy
	$(BIN)/ansible-lint -q --profile production ansible/

# apt-deps: the firewall's rulesets are loaded by nft in a private namespace (as root); without
# nft those tests skip and FW-01 is not proved, on this machine as in a stack's verification.
## unit: Python tests, no server started (seconds); nft loads the rendered rulesets when root
unit: deps apt-deps
	@mkdir -p $(REPORTS)
	$(UNIT)

## integration: roles run on localhost, nginx -t, nftables in a throw-away netns, the app on PostgreSQL
integration: deps apt-deps
	@mkdir -p $(REPORTS)
	$(INTEGRATION)

## live-tests: converge the lab, then the live suites (the disruptive tests, then the parallel pass)
live-tests: converge live-passes

# The two passes alone, on a lab already converged (bench/lab_timings.py times this).
.PHONY: live-passes
live-passes: deps
	@mkdir -p $(REPORTS)
	@rm -f $(REPORTS)/live.xml $(REPORTS)/live-disruptive.xml $(REPORTS)/segregation.json
	$(LIVE_SERIAL)
	$(LIVE_PARALLEL)

## lifecycle: the lab's lifecycle suite (down leaves no trace, up repairs); rebuilds the machines
lifecycle: deps
	$(PYTEST) tests/lab -m lab_lifecycle --junit-xml=$(REPORTS)/lifecycle.xml

## audit: the audit report from the evidence in .lab/reports (report.html, report.md, report.hdf.json)
audit: deps
	$(AUDIT)

# Each mutation of audit/mutations.yaml breaks one promise in a scratch copy of the repository;
# that control's tests must fail there (apt-deps: the rendered mutations run nginx -t). The
# live mutations run with --lab (make mutate-live).
.PHONY: mutate
## mutate: break each control on purpose in a scratch copy; its tests must turn it red (the score)
mutate: deps apt-deps
	@mkdir -p $(REPORTS)
	$(BIN)/tierwall mutate --layer code,rendered

# One at a time on the converged lab: each break (patched roles converged, or commands as drift)
# is applied, its control's live tests must fail, and the lab must come back (a second converge
# changes nothing; after drift, the tests pass again). Without a baseline each selection first
# runs once unmutated; make test gives it both passes' results, just taken on this lab.
.PHONY: mutate-live
## mutate-live: break each control on the running lab; its live tests must turn it red, then revert
mutate-live: deps
	@mkdir -p $(REPORTS)
	$(BIN)/tierwall mutate --lab --layer live -o $(REPORTS)/mutations-live.json $(MUTATE_BASELINE)

# restore-drill.yml on the converged lab: every repository restored to a point in time on the
# first app server, checked and removed (the live suites run it too: tests/lab/test_restore_drill.py).
.PHONY: drill
## drill: the restore drill on the lab: every backup repository restored to a point in time; report in .lab/reports
drill: deps
	@mkdir -p $(REPORTS)
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/restore-drill.yml

# The lifecycle suite runs after the other live suites (it rebuilds the machines) and before the
# audit, so its evidence reaches the report too: --suites test refuses to report without it.
## test: what CI runs: lint, unit, integration, mutate, the live suites and mutations, lifecycle, the audit
test: MUTATE_BASELINE = --baseline $(REPORTS)/live-disruptive.xml --baseline $(REPORTS)/live.xml
test: lint unit integration mutate live-tests mutate-live lifecycle
	@rm -f $(REPORTS)/report.*
	$(AUDIT) --suites test

# The release upgrade as an operator runs it on a stack: a Debian 12 lab is built and converged,
# tests/lab/test_upgrade_drill.py stores data through the proxy, runs upgrade-debian-13.yml and
# reads the data back; then every live suite runs on the upgraded lab. Not in make test: it builds
# a second lab of another release (its last run is recorded in the README).
.PHONY: upgrade-drill
## upgrade-drill: a Debian 12 lab holding data, upgraded in place to Debian 13, then every live suite
upgrade-drill: deps apt-deps
	@mkdir -p $(REPORTS)
	$(BIN)/tierwall lab down
	TIERWALL_LAB_IMAGE=debian-12 $(BIN)/tierwall lab up
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/site.yml
	$(PYTEST) tests/lab/test_upgrade_drill.py -m upgrade_drill --ansible-inventory=$(INVENTORY) \
	  --junit-xml=$(REPORTS)/upgrade-drill.xml
	$(MAKE) live-passes

# The trixie tree: debootstrap'd as tests/integration/test_trixie_configs.py's docstring shows
# (about 2.5 min and 950 MB); nothing runs in it but Debian 13's own checkers, without network.
.PHONY: trixie-configs
## trixie-configs: the roles' rendered configuration checked by Debian 13's tools (TIERWALL_TRIXIE_ROOT=tree)
trixie-configs: deps
	TIERWALL_TRIXIE_ROOT=$${TIERWALL_TRIXIE_ROOT:?set it to a debootstrapped trixie tree} \
	  $(PYTEST) tests/integration/test_trixie_configs.py

# -- the main job ---------------------------------------------------------------------------------
# Build the lab, converge it and run what the audit report needs, once: every test that carries
# a control marker (the segregation matrix and the idempotence converge among them); the rest of
# the suites belongs to `make test`. The tests that need no lab (unit, integration and the
# reference application's own, app/tests) run while the lab converges (the converge mostly waits
# for packages); their output goes to .lab/reports/pre-live.log. Every step runs even when an
# earlier one fails, so the report shows what failed; the exit status is non-zero if anything did.
.PHONY: lab
## lab: the main job: build the lab, converge it, prove the controls, write the audit report
lab: MARKS_PRE := -m "control and not trixie_tree"
lab: MARKS_LIVE := control and not lab_lifecycle
lab: deps apt-deps
	@mkdir -p $(REPORTS); rm -f $(REPORTS)/*.xml $(REPORTS)/segregation.json $(REPORTS)/report.* $(REPORTS)/*-drill.*
	@started=$$(date +%s); status=0; \
	$(BIN)/tierwall lab up || exit 1; \
	( $(UNIT); unit=$$?; $(INTEGRATION) && exit $$unit ) > $(REPORTS)/pre-live.log 2>&1 & pre=$$!; \
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/unlock-db.yml || status=1; \
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/playbooks/site.yml || status=1; \
	$(BIN)/tierwall escrow export --lab || status=1; \
	wait $$pre || { status=1; tail -n 30 $(REPORTS)/pre-live.log; }; \
	grep -E '^[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s' $(REPORTS)/pre-live.log || true; \
	$(LIVE_SERIAL) || status=1; \
	$(LIVE_PARALLEL) || status=1; \
	$(AUDIT) --suites lab --started $$started || status=1; \
	exit $$status

# -- benchmarks (bench/README.md) -----------------------------------------------------------------
# Figures, not tests: each script prints its figures beside its target and writes
# .lab/reports/bench/<name>.json. `bench` measures the converged lab as it is; `bench-lab` tears
# the lab down and rebuilds it (cold and warm up, fresh and no-op converges, 1 against 3 app
# servers) and leaves it converged.
.PHONY: bench bench-lab
## bench: edge, database and crypto figures on the converged lab (bench/README.md)
bench: converge
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/database.py
	$(BIN)/python bench/crypto.py

## bench-lab: lab timings and scale figures; rebuilds the lab and leaves it converged
bench-lab: deps apt-deps
	$(BIN)/python bench/lab_timings.py --suites
	$(BIN)/python bench/scale.py

# -- verification against a Hetzner stack ---------------------------------------------------------
# make verify INVENTORY=path (from `tierwall inventory --pulumi-outputs`). The same testinfra
# suites; lab-only checks (the sentinel, the lab's lifecycle) are skipped with their reason,
# controls only the lab can prove are reported "not proved" for this target, and those whose only
# evidence is code or rendered configuration "proved in code only". The disruptive tests (a db
# restart, the app killed, a rate-limit flood) never run against production: their controls are
# "not proved" here unless another test proves them.
# The target and audit commands are variables so that tests/unit/test_verify_audit.py runs them as
# make expands them: the one part of this recipe that can be proved without reaching a host.
VERIFY_TARGET = $(BIN)/tierwall inventory-target $(INVENTORY)
VERIFY_AUDIT = $(BIN)/tierwall audit --partial --junit $(REPORTS)/unit.xml $(REPORTS)/verify.xml --target
.PHONY: verify
## verify: the testinfra suites and the audit against a Hetzner stack (INVENTORY=file)
verify: deps apt-deps
	@test -f "$(INVENTORY)" || { echo "make verify INVENTORY=<inventory from tierwall inventory>" >&2; exit 2; }
	@mkdir -p $(REPORTS); rm -f $(REPORTS)/verify.xml $(REPORTS)/unit.xml $(REPORTS)/segregation.json
	@status=0; target=$$($(VERIFY_TARGET)); \
	TIERWALL_TARGET=$$target $(PYTEST) tests/unit --junit-xml=$(REPORTS)/unit.xml || status=1; \
	TIERWALL_TARGET=$$target $(PYTEST) tests/testinfra --ansible-inventory=$(INVENTORY) -m "not disruptive" \
	  --junit-xml=$(REPORTS)/verify.xml || status=1; \
	$(VERIFY_AUDIT) $$target || status=1; \
	exit $$status
