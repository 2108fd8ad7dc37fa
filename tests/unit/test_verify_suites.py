"""The testinfra suites as the read-only verify account: which command goes through sudo, which
check is skipped, and the lab's own verify account and inventory.

tests/testinfra/conftest.py prefixes ``sudo -n`` to a command exactly when, formatted, it is one
of the common role's ``common_verify_sudo_commands``, and skips (never passes) the checks the
account cannot run. Its real hooks run here in throw-away pytest projects and its connection
wrapper on a backend that records what it would send; no host is reached.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from testinfra.backend.base import BaseBackend, CommandResult
from testinfra.host import Host

from tierwall.cli import main
from tierwall.config import ConfigError
from tierwall.lab import inventory as lab

pytest_plugins = ("pytester",)

REPO = Path(__file__).resolve().parents[2]
TESTINFRA = REPO / "tests" / "testinfra"
CONFTEST = TESTINFRA / "conftest.py"
PAGE = "docs/operations/verification.md"
VERIFY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEw6Yg3TqzHc8f0iR8m0nC1lW9gX2pVb7oYdQ4sJk5uV lab-verify"
OPS_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICQxSzOYjRJ9rRQD61U5bQGgpac9S4whSH1f3jV4vauq tierwall-lab-ops"


@pytest.fixture(scope="module")
def suites() -> ModuleType:
    """tests/testinfra/conftest.py as a plain module (its functions, not its hooks)."""
    spec = importlib.util.spec_from_file_location("testinfra_conftest_under_test", CONFTEST)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _role_commands() -> list[str]:
    """The role's list, read here only to check the conftest reads the same one."""
    defaults = REPO / "ansible" / "roles" / "common" / "defaults" / "main.yml"
    return list(yaml.safe_load(defaults.read_text())["common_verify_sudo_commands"])


# -- the sudo prefix ---------------------------------------------------------------------------------


def test_the_allowed_commands_are_the_common_roles(suites: ModuleType) -> None:
    assert suites.verify_sudo_commands({}) == frozenset(_role_commands())
    assert len(_role_commands()) >= 4


def test_an_inventory_that_sets_the_roles_variable_wins_as_in_ansible(suites: ModuleType) -> None:
    assert suites.verify_sudo_commands({"common_verify_sudo_commands": ["/usr/sbin/sshd -T"]}) == {
        "/usr/sbin/sshd -T"
    }


@pytest.mark.parametrize("command", _role_commands())
def test_each_allowed_command_goes_through_sudo_n(suites: ModuleType, command: str) -> None:
    assert suites.as_verify(command, suites.verify_sudo_commands({})) == f"sudo -n {command}"


@pytest.mark.parametrize(
    "command",
    [
        "sshd -T",  # not the path sudoers names
        "/usr/sbin/sshd -T -f /etc/shadow",  # another argument
        "/usr/sbin/sshd  -T",  # not the same string
        "/usr/sbin/nft list ruleset",
        "ss -H -l -t -n",  # the listeners without -p: as itself
        "cat /etc/shadow",
        "sudo -n /usr/sbin/sshd -T",
        "",
    ],
)
def test_every_other_command_runs_as_the_account_itself(suites: ModuleType, command: str) -> None:
    assert suites.as_verify(command, suites.verify_sudo_commands({})) == command


class Recording(BaseBackend):
    """A testinfra backend that records the command line it would send."""

    NAME = "recording"

    def __init__(self) -> None:
        super().__init__("recorded")
        self.sent: list[str] = []

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        line = self.get_command(command, *args)
        self.sent.append(line)
        return self.result(0, line.encode(), b"", b"")


def _connected(suites: ModuleType, monkeypatch: pytest.MonkeyPatch, all_vars: dict[str, Any]) -> Any:
    import testinfra

    data = {"all": {"vars": all_vars, "children": {"proxy": {"hosts": {"proxy-1": {}}}}}}
    monkeypatch.setattr(testinfra, "get_host", lambda spec, **_: Host(Recording()))
    monkeypatch.setattr(suites, "_HOSTS", {})
    return suites.connect(suites.Inventory(Path("inventory.yml"), data), "proxy-1")


def test_connect_sends_the_formatted_command_through_sudo_as_verify(
    suites: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = _connected(suites, monkeypatch, {"tierwall_verify_account": True})
    host.run("/usr/sbin/sshd -T")
    host.run("/usr/sbin/nft %s list ruleset", "-j")  # formatted, then matched
    host.run("/usr/bin/ss -H -l -t -n")
    host.run("grep -F -- %s /var/log/nginx/access.log", "/usr/sbin/sshd -T")
    assert host.backend.sent == [
        "sudo -n /usr/sbin/sshd -T",
        "sudo -n /usr/sbin/nft -j list ruleset",
        "/usr/bin/ss -H -l -t -n",
        "grep -F -- '/usr/sbin/sshd -T' /var/log/nginx/access.log",
    ]


@pytest.mark.parametrize("flag", [None, False, "true"])
def test_connect_adds_nothing_unless_the_inventory_says_verify(
    suites: ModuleType, monkeypatch: pytest.MonkeyPatch, flag: object
) -> None:
    all_vars = {} if flag is None else {"tierwall_verify_account": flag}
    host = _connected(suites, monkeypatch, all_vars)
    host.run("/usr/sbin/sshd -T")
    assert host.backend.sent == ["/usr/sbin/sshd -T"]


def test_the_suites_name_each_root_command_as_sudoers_does() -> None:
    """A suite that ran `sshd -T` by another spelling would go unprefixed and fail as verify; a
    command the role allows that no suite runs is root granted for nothing."""
    sources = "\n".join(path.read_text() for path in TESTINFRA.glob("*.py"))
    for command in _role_commands():
        assert re.search(rf'\.run\("{re.escape(command)}"\)', sources), f"no suite runs {command!r}"


# -- the skip ---------------------------------------------------------------------------------------

CHECKS = """
import pytest

TIER_GROUP = "db"


@pytest.mark.verify_never("reads the secrets")
def test_reads_a_secret(host_name):
    assert host_name == "db-1"


@pytest.mark.disruptive
def test_restarts_something(host_name):
    assert host_name == "db-1"


def test_reads_as_itself(host_name):
    assert host_name == "db-1"
"""
MARKERS = "[pytest]\nmarkers =\n    lab_only: x\n    disruptive: x\n    verify_never(why): x\n"


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, all_vars: dict[str, Any],
         checks: str = CHECKS) -> pytest.RunResult:  # fmt: skip
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(MARKERS)
    pytester.makepyfile(test_checks=checks)
    inventory = pytester.path / "inventory.yml"
    groups = {"db": {"hosts": {"db-1": {}}}}
    inventory.write_text(yaml.safe_dump({"all": {"vars": all_vars, "children": groups}}))
    monkeypatch.setenv("TIERWALL_INVENTORY", str(inventory))
    return pytester.runpytest("-rs", "-p", "no:cacheprovider")


def test_under_verify_the_checks_it_cannot_run_are_skipped_naming_the_page(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(pytester, monkeypatch, {"tierwall_target": "prod", "tierwall_verify_account": True})
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines_random([
        f"SKIPPED*test_checks.py*never as the verify account: reads the secrets ({PAGE})*",
        f"SKIPPED*test_checks.py*never as the verify account: it stops, restarts or changes*({PAGE})*",
    ])  # fmt: skip


@pytest.mark.parametrize("all_vars", [{"tierwall_target": "lab"}, {"tierwall_verify_account": False}])
def test_as_ops_every_check_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, all_vars: dict[str, Any]
) -> None:
    _run(pytester, monkeypatch, all_vars).assert_outcomes(passed=3)


def test_a_never_marker_without_its_reason_is_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = CHECKS.replace('verify_never("reads the secrets")', "verify_never")
    result = _run(pytester, monkeypatch, {"tierwall_verify_account": True}, checks)
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*use @pytest.mark.verify_never('why') with one reason*"])


def test_the_verification_page_names_the_marker_and_the_sudo_rule() -> None:
    page = (REPO / PAGE).read_text()
    assert "verify_never" in page
    assert "sudo -n" in page
    assert "The suites do not yet run as `verify`" not in page


# -- the lab's verify account ---------------------------------------------------------------------


def test_the_lab_config_carries_the_verify_key_and_refuses_the_operators() -> None:
    assert lab.lab_config(OPS_KEY, 1, verify_key=VERIFY_KEY).verify_ssh_public_key == VERIFY_KEY
    assert lab.lab_config(OPS_KEY, 1).verify_ssh_public_key == ""
    with pytest.raises(ConfigError, match="verifySshPublicKey: is one of sshPublicKeys"):
        lab.lab_config(OPS_KEY, 1, verify_key=OPS_KEY.replace("ops", "verify"))


def test_the_labs_inventory_creates_the_account_and_still_connects_as_ops() -> None:
    config = lab.lab_config(OPS_KEY, 1, verify_key=VERIFY_KEY)
    all_vars = lab.lab_inventory(config, None, ["192.0.2.53"])["all"]["vars"]
    assert all_vars["common_verify_authorized_keys"] == [VERIFY_KEY]
    assert (all_vars["ansible_user"], all_vars["ansible_become"]) == ("ops", True)
    assert all_vars["ansible_ssh_private_key_file"] == str(lab.PRIVATE_KEY)
    assert "tierwall_verify_account" not in all_vars


def test_the_labs_verify_inventory_connects_as_verify_through_the_gate() -> None:
    config = lab.lab_config(OPS_KEY, 1, verify_key=VERIFY_KEY)
    inventory = lab.lab_inventory(config, None, ["192.0.2.53"], verify=True)
    all_vars = inventory["all"]["vars"]
    assert (all_vars["ansible_user"], all_vars["ansible_become"]) == ("verify", False)
    assert all_vars["tierwall_verify_account"] is True
    assert all_vars["ansible_ssh_private_key_file"] == str(lab.VERIFY_PRIVATE_KEY)
    assert all_vars["tierwall_target"] == "lab"
    db = inventory["all"]["children"]["db"]["hosts"]["db-1"]["ansible_ssh_common_args"]
    assert "ops@" not in db
    assert db.count("verify@") == 2, "both hops of the db's jump chain go as verify"
    assert db.count("tierwall.lab.guard") == 1, "the first hop opens through the containment gate"
    proxy = inventory["all"]["children"]["proxy"]["hosts"]["proxy-1"]["ansible_ssh_common_args"]
    assert "tierwall.lab.guard" in proxy


def test_a_verify_inventory_without_the_key_is_refused() -> None:
    with pytest.raises(lab.LabError, match="no verify key"):
        lab.lab_inventory(lab.lab_config(OPS_KEY, 1), None, ["192.0.2.53"], verify=True)


def test_tierwall_inventory_lab_verify_writes_the_verify_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, content in (("PUBLIC_KEY", OPS_KEY), ("PRIVATE_KEY", "x"), ("VERIFY_PUBLIC_KEY", VERIFY_KEY),
                          ("VERIFY_PRIVATE_KEY", "x")):  # fmt: skip
        path = tmp_path / name.lower()
        path.write_text(content + "\n")
        monkeypatch.setattr(lab, name, path)
    monkeypatch.setattr(lab, "VERIFY_INVENTORY", tmp_path / "inventory-verify.yml")
    monkeypatch.setattr(lab, "INVENTORY", tmp_path / "inventory.yml")
    monkeypatch.setattr("tierwall.lab.network.resolvers", lambda: ["192.0.2.53"])
    monkeypatch.setattr(lab.State, "load", classmethod(lambda cls, path=None: None))
    assert main(["inventory", "--lab", "--verify"]) == 0
    written = yaml.safe_load((tmp_path / "inventory-verify.yml").read_text())["all"]["vars"]
    assert (written["ansible_user"], written["tierwall_verify_account"]) == ("verify", True)
    assert main(["inventory", "--lab"]) == 0
    ops = yaml.safe_load((tmp_path / "inventory.yml").read_text())["all"]["vars"]
    assert (ops["ansible_user"], ops["common_verify_authorized_keys"]) == ("ops", [VERIFY_KEY])


# -- the audit --------------------------------------------------------------------------------------

VERIFY_JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="2">
<testcase classname="tests.testinfra.test_base" file="tests/testinfra/test_base.py"
  name="test_firewall_is_default_deny_and_accepts_exactly_the_matrix[proxy-1]" time="1.0">
  <properties><property name="control" value="FW-01"/></properties></testcase>
<testcase classname="tests.testinfra.test_base" file="tests/testinfra/test_base.py"
  name="test_firewall_survives_a_reboot[proxy-1]" time="0.0">
  <properties><property name="control" value="FW-01"/></properties>
  <skipped type="pytest.skip" message="{reason}"/></testcase>
</testsuite></testsuites>
"""


@pytest.mark.parametrize("target", ["lab", "prod"])
def test_a_check_skipped_as_verify_leaves_its_control_not_proved(
    suites: ModuleType, tmp_path: Path, target: str
) -> None:
    """The live ruleset passed as verify, the check of the saved ruleset was skipped as "never":
    FW-01 is not proved (the audit's own rule for any skip), never passed."""
    from tierwall.audit.controls import load_controls
    from tierwall.audit.junit import read_junit
    from tierwall.audit.report import NOT_PROVED, evaluate

    class Item:
        nodeid = "tests/testinfra/test_base.py::test_firewall_survives_a_reboot[proxy-1]"

        @staticmethod
        def get_closest_marker(name: str) -> Any:
            never = pytest.mark.verify_never("reads /etc/nftables.conf").mark
            return never if name == "verify_never" else None

    reason = suites.verify_skip_reason(Item())
    assert reason is not None
    assert PAGE in reason
    junit = tmp_path / "verify.xml"
    junit.write_text(VERIFY_JUNIT.format(reason=reason))
    statuses = evaluate(load_controls(REPO / "audit" / "controls.yaml"), read_junit([junit]), target, True)
    (fw01,) = [s for s in statuses if s.control.id == "FW-01"]
    assert fw01.status == NOT_PROVED
    assert PAGE in fw01.note
