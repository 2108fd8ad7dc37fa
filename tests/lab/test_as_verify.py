"""The testinfra suites run as the read-only verify account against the lab, as the scheduled
production check runs them against a stack (docs/operations/verification.md).

The lab's inventory carries the lab's own verify key, so the converge created the account on
every machine; `tierwall inventory --lab --verify` writes the inventory that connects as it (no
become, both hops of the jump chain as verify, the first through the containment gate). The
suites then run in a pytest of their own, which must end with every check passed or skipped with
the page's reason, none failed, and the checks that need the account's sudo commands or its log
groups among those that passed. Without the ``sudo -n`` prefix, or with a command the sudoers
file does not name, sshd -T and the other root reads fail as verify, and so does this test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierwall.audit import junit as results_of
from tierwall.audit.junit import PASSED, SKIPPED
from tierwall.lab.inventory import hosts_of, ssh_argv
from tierwall.paths import ANSIBLE_DIR, REPO

pytestmark = pytest.mark.lab

PAGE = "docs/operations/verification.md"
TESTINFRA = "tests/testinfra"
# The host-side suites whole; of the edge and end-to-end suites only the checks that read the
# proxy and app hosts (the others are requests from the sentinel, which the ops run already makes
# and which would spend the sentinel's rate-limit allowance beside the parallel pass).
SELECTION = [
    *(f"{TESTINFRA}/{name}" for name in (
        "test_base.py", "test_networks.py", "test_private_tiers.py", "test_host_baseline.py",
        "test_application.py", "test_config_permissions.py", "test_database.py", "test_app.py",
        "test_db.py", "test_proxy.py", "test_ssh_forwarding.py",
    )),
    f"{TESTINFRA}/test_edge.py::test_proxy_verifies_the_app_servers_certificates",
    f"{TESTINFRA}/test_edge.py::test_every_app_server_certificate_verifies_from_the_proxy",
    f"{TESTINFRA}/test_edge.py::test_a_query_string_never_reaches_a_log",
    f"{TESTINFRA}/test_edge.py::test_logs_are_deleted_within_the_retention_period",
    f"{TESTINFRA}/test_end_to_end.py::test_no_identifier_reaches_the_logs",
    f"{TESTINFRA}/test_end_to_end.py::test_the_databases_hold_only_ciphertext_and_pseudonyms",
]  # fmt: skip
# Checks that must have run, and passed, as verify: through each of the role's sudo commands, and
# as the account itself (its own reads, the adm and systemd-journal groups).
MUST_PASS = {
    "test_base.py::test_sshd_is_key_only_without_root": "sudo /usr/sbin/sshd -T",
    "test_base.py::test_firewall_is_default_deny_and_accepts_exactly_the_matrix": "sudo nft -j list ruleset",
    "test_application.py::test_listens_only_on_the_frontend_address": "sudo ss -H -l -n -p -t -u",
    "test_edge.py::test_proxy_verifies_the_app_servers_certificates": "sudo nginx -T",
    "test_base.py::test_nothing_listens_that_the_matrix_does_not_declare": "ss without -p, as itself",
    "test_base.py::test_no_forwarding": "/proc/sys, as itself",
    "test_networks.py::test_each_tier_is_on_its_networks_only": "ip, as itself",
    "test_application.py::test_systemd_analyze_exposure_is_at_most_2": "systemd-analyze, as itself",
    "test_edge.py::test_a_query_string_never_reaches_a_log": "nginx's logs, group adm",
    "test_end_to_end.py::test_no_identifier_reaches_the_logs": "the journal, group systemd-journal",
}
# Checks the page marks "never": skipped with its reason, whatever the lab would allow.
MUST_SKIP = (
    "test_application.py::test_secrets_are_not_in_the_environment_or_the_unit",
    "test_database.py::test_only_postgres_is_privileged",
    "test_edge.py::test_logs_are_deleted_within_the_retention_period",
    "test_config_permissions.py::test_allow_lists_and_secrets_are_readable_by_their_service_only",
)


@pytest.fixture(scope="module")
def verify_inventory(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verify") / "inventory-verify.yml"
    argv = [sys.executable, "-m", "tierwall.cli", "inventory", "--lab", "--verify", "-o", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    all_vars = yaml.safe_load(path.read_text())["all"]["vars"]
    assert (all_vars["ansible_user"], all_vars["ansible_become"]) == ("verify", False)
    assert all_vars["tierwall_verify_account"] is True
    ops = lab.vars.get("common_verify_authorized_keys")
    assert ops, "the lab's inventory has no verify key: `tierwall lab up`, then converge site.yml"
    return path


def _of(results: list[results_of.TestResult], check: str) -> list[results_of.TestResult]:
    """The results of ``check`` (file::name), one per host it was parametrized over."""
    node = f"{TESTINFRA}/{check}"
    return [r for r in results if r.nodeid == node or r.nodeid.startswith(node + "[")]


def test_the_account_reads_as_itself_and_runs_only_its_named_commands_as_root(
    lab: Any, verify_inventory: Path
) -> None:
    """On every machine: the login is verify, its groups read the logs, sudo runs the role's
    commands exactly as named and refuses the same program with another argument, or a shell."""
    inventory = yaml.safe_load(verify_inventory.read_text())
    script = (
        "id -un; id -Gn; "
        "sudo -n /usr/sbin/sshd -T >/dev/null 2>&1; echo named=$?; "
        "sudo -n /usr/sbin/sshd -T -C user=root >/dev/null 2>&1; echo argument=$?; "
        "sudo -n /bin/sh -c id >/dev/null 2>&1; echo shell=$?; "
        "cat /etc/shadow >/dev/null 2>&1; echo shadow=$?"
    )
    for name, hostvars in hosts_of(inventory).items():
        argv = ssh_argv(hostvars, inventory["all"]["vars"], [script], ["-o", "BatchMode=yes"])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        user, groups, *codes = done.stdout.split("\n")
        assert user == "verify", name
        assert {"adm", "systemd-journal"} <= set(groups.split()), f"{name}: {groups}"
        answers = dict(line.split("=") for line in codes if line)
        assert answers == {"named": "0", "argument": "1", "shell": "1", "shadow": "1"}, f"{name}: {answers}"


def test_the_testinfra_suites_run_as_verify(lab: Any, verify_inventory: Path, tmp_path: Path) -> None:
    junit = tmp_path / "verify.xml"
    # Not the outer run's: its xdist worker and current-test variables belong to that run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        TIERWALL_TARGET="lab",
    )
    argv = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not disruptive",
        *SELECTION, f"--ansible-inventory={verify_inventory}", f"--junit-xml={junit}",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)
    tail = (done.stdout[-6000:] + done.stderr[-2000:]).strip()
    assert junit.exists(), f"the verify run wrote no JUnit file (exit {done.returncode}):\n{tail}"
    results = results_of.read_junit([junit]).results
    assert results, f"the verify run ran nothing:\n{tail}"

    broken = [f"{r.nodeid}: {r.outcome}: {r.message[:300]}" for r in results
              if r.outcome not in (PASSED, SKIPPED)]  # fmt: skip
    assert broken == [], "checks that failed as verify:\n" + "\n".join(broken)
    strays = [f"{r.nodeid}: {r.message}" for r in results if r.outcome == SKIPPED and PAGE not in r.message]
    assert strays == [], f"skipped without the reason of {PAGE}:\n" + "\n".join(strays)
    for check, how in MUST_PASS.items():
        found = _of(results, check)
        assert found, f"{check} ({how}) did not run as verify"
        assert {r.outcome for r in found} == {PASSED}, f"{check} ({how}): {[r.message for r in found]}"
    for check in MUST_SKIP:
        found = _of(results, check)
        assert found, f"{check} was not collected"
        assert {r.outcome for r in found} == {SKIPPED}, f"{check} ran as verify"
    assert done.returncode == 0, tail
