"""`make verify` on a stack that is not the lab: evidence from code alone is labelled so, never passed.

This runs the verify recipe as far as it goes without reaching a host. The inventory comes from the
recorded stack outputs (tests/unit/fixtures/stack-outputs.json) through `tierwall inventory`. The
target and audit commands are the recipe's own, as make expands them. unit.xml comes from a real
pytest run of a few code and rendered control tests of this suite. verify.xml is built here: the
live suites' JUnit when no host was reached, holding only their lab-only checks, skipped with the
reason tests/testinfra/conftest.py gives. Running the live suites themselves would connect to the
inventory's hosts, so they are not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from tierwall.audit.controls import Control, load_controls
from tierwall.audit.junit import PASSED, read_junit
from tierwall.audit.layers import CODE, RENDERED, requires_live
from tierwall.audit.report import CODE_ONLY, FAILED, INCOMPLETE, LAB, MANUAL, NOT_PROVED
from tierwall.cli import main
from tierwall.paths import REPO

OUTPUTS = Path(__file__).parent / "fixtures" / "stack-outputs.json"

# Real tests of this suite for unit.xml. LOC-01 and NET-04 are declared at the code layer only;
# NET-05 (live only) has a code test and FW-01 (rendered and live) a rendered one. So a target that
# is not the lab sees both kinds of code-only evidence, and the lab can tell them apart.
UNIT_FILES = (
    "tests/unit/test_config.py",
    "tests/unit/test_topology.py",
    "tests/unit/test_firewall_render.py",
)
UNIT_SELECTION = (
    "example_stack_is_valid or non_german_locations or flow_matrix_keeps_db_to_app_only "
    "or ruleset_accepts_exactly_the_matrix"
)
CODE_EVIDENCE = {"LOC-01", "NET-04", "NET-05", "FW-01"}
LIVE_REQUIRED = {"NET-05", "FW-01"}

# The lab-only checks of the live suites as `pytest tests/testinfra --collect-only -m lab_only`
# lists them for this inventory, with their controls. Against a stack they are skipped before any
# connection; verify.xml holds them and nothing else, as if no other live test ran.
LAB_ONLY = (
    ("tests/testinfra/test_app.py", "test_the_sentinel_is_unreachable[app-1]", "NET-06"),
    ("tests/testinfra/test_app.py", "test_the_sentinel_is_unreachable[app-2]", "NET-06"),
    (
        "tests/testinfra/test_database.py",
        "test_after_a_restart_the_data_is_locked_until_unlocked[db-1]",
        "ENC-05",
    ),
    ("tests/testinfra/test_db.py", "test_the_sentinel_is_unreachable[db-1-80]", "NET-06"),
    ("tests/testinfra/test_db.py", "test_the_sentinel_is_unreachable[db-1-443]", "NET-06"),
    (
        "tests/testinfra/test_edge.py",
        "test_the_crl_is_served_over_http_and_verifies_against_the_lab_ca[proxy-1]",
        "TLS-02",
    ),
    ("tests/testinfra/test_edge.py", "test_access_log_holds_the_sentinel_only_anonymised[proxy-1]", "RET-03"),
    ("tests/testinfra/test_edge.py", "test_error_log_holds_no_full_client_address[proxy-1]", "RET-03"),
)


@dataclass(frozen=True)
class Verify:
    """One verify run's inputs: the inventory, the recipe's commands and the two JUnit files."""

    inventory: Path
    target_command: list[str]
    audit_command: list[str]
    unit_xml: Path
    verify_xml: Path


@dataclass(frozen=True)
class Audit:
    exit_status: int
    stdout: str
    statuses: dict[str, str]  # control id -> status, as the Markdown report's table shows it
    hdf: dict


def _make_values(*names: str, **overrides: str) -> list[str]:
    """The Makefile's variables as make expands them (no recipe runs; the outer make's flags are
    dropped so that `make unit`'s own command line does not leak in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "_value-%: ; @:$(info $($*))"]
        + [f"_value-{name}" for name in names]
        + [f"{key}={value}" for key, value in overrides.items()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def _verify_recipe() -> str:
    """The verify rule's recipe lines, as written in the Makefile."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("verify: ")) + 1
    recipe = []
    for line in lines[start:]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    return "\n".join(recipe)


def _run_unit_tests(target: str, junit: Path) -> None:
    """A real pytest run of the selected tests, as the recipe runs tests/unit: with the target."""
    env = {**os.environ, "TIERWALL_TARGET": target}
    selection = [*UNIT_FILES, "-k", UNIT_SELECTION, f"--junit-xml={junit}"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]


def _write_live_junit(path: Path, inventory: Path, target: str, git_sha: str) -> None:
    reason = (
        f"lab only: the inventory {inventory} targets {target!r}, not 'lab'; this check needs "
        "the lab's sentinel or machines"
    )
    suites = ET.Element("testsuites", name="pytest tests")
    count = str(len(LAB_ONLY))
    suite = ET.SubElement(
        suites, "testsuite", name="pytest", errors="0", failures="0", skipped=count, tests=count
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (("git_sha", git_sha), ("target", target)):
        ET.SubElement(properties, "property", name=name, value=value)
    for test_file, name, control in LAB_ONLY:
        classname = test_file.removesuffix(".py").replace("/", ".")
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, file=test_file, time="0.000")
        ET.SubElement(ET.SubElement(case, "properties"), "property", name="control", value=control)
        ET.SubElement(case, "skipped", type="pytest.skip", message=reason)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


@pytest.fixture(scope="module")
def verify(tmp_path_factory: pytest.TempPathFactory) -> Verify:
    work = tmp_path_factory.mktemp("verify")
    inventory, reports = work / "inventory.yml", work / "reports"
    reports.mkdir()
    assert main(["inventory", "--pulumi-outputs", str(OUTPUTS), "-o", str(inventory)]) == 0
    target_command, audit_command = _make_values(
        "VERIFY_TARGET", "VERIFY_AUDIT", INVENTORY=str(inventory), REPORTS=str(reports)
    )
    return Verify(
        inventory,
        shlex.split(target_command),
        shlex.split(audit_command),
        reports / "unit.xml",
        reports / "verify.xml",
    )


@pytest.fixture(scope="module")
def target(verify: Verify) -> str:
    """The target the recipe reads from the inventory, with the recipe's own command."""
    result = subprocess.run(verify.target_command, cwd=REPO, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.fixture(scope="module")
def evidence(verify: Verify, target: str) -> Verify:
    """unit.xml from the real tests, then verify.xml at the commit unit.xml recorded."""
    _run_unit_tests(target, verify.unit_xml)
    git_sha = read_junit([verify.unit_xml]).properties["git_sha"]
    _write_live_junit(verify.verify_xml, verify.inventory, target, git_sha)
    return verify


@pytest.fixture(scope="module")
def audit(evidence: Verify, tmp_path_factory: pytest.TempPathFactory):
    """The recipe's audit command with a target, its report written away from .lab (once per target)."""
    made: dict[str, Audit] = {}

    def run(target: str) -> Audit:
        if target not in made:
            made[target] = _audit(evidence, target, tmp_path_factory.mktemp(f"lab-dir-{target}"))
        return made[target]

    return run


def _audit(evidence: Verify, target: str, lab_dir: Path) -> Audit:
    result = subprocess.run(
        [*evidence.audit_command, target],
        cwd=REPO,
        env={**os.environ, "TIERWALL_LAB_DIR": str(lab_dir)},
        capture_output=True,
        text=True,
        check=False,
    )
    report = lab_dir / "reports"
    assert (report / "report.md").exists(), f"no report: {result.stdout}{result.stderr}"
    statuses = _table_statuses((report / "report.md").read_text())
    hdf = json.loads((report / "report.hdf.json").read_text())
    return Audit(result.returncode, result.stdout, statuses, hdf)


def _table_statuses(markdown: str) -> dict[str, str]:
    rows = re.findall(r"^\| ([A-Z]{2,5}-\d{2}) \| [^|]* \| ([a-z ]+) \|", markdown, re.MULTILINE)
    return dict(rows)


def _controls() -> tuple[Control, ...]:
    return load_controls(REPO / "audit" / "controls.yaml")


# -- the recipe and its inputs ---------------------------------------------------------------------


def test_the_verify_recipe_runs_the_commands_this_test_runs() -> None:
    recipe = _verify_recipe()
    assert "target=$$($(VERIFY_TARGET));" in recipe
    assert "TIERWALL_TARGET=$$target $(PYTEST) tests/unit --junit-xml=$(REPORTS)/unit.xml" in recipe
    assert "--junit-xml=$(REPORTS)/verify.xml" in recipe
    assert "$(VERIFY_AUDIT) $$target || status=1" in recipe


def test_the_inventory_from_the_recorded_stack_targets_the_stack_not_the_lab(target: str) -> None:
    assert target == json.loads(OUTPUTS.read_text())["stack"] == "prod"
    assert target != LAB


def test_the_evidence_is_what_this_test_says_it_is(evidence: Verify, target: str) -> None:
    unit = read_junit([evidence.unit_xml])
    assert unit.properties["target"] == target  # the recipe hands the target to the suite
    assert {r.outcome for r in unit.results} == {PASSED}
    assert {c for r in unit.results for c in r.controls} == CODE_EVIDENCE
    assert {r.layer for r in unit.results} == {CODE, RENDERED}
    assert {c.id for c in _controls() if requires_live(c.layers)} & CODE_EVIDENCE == LIVE_REQUIRED
    for test_file, name, _ in LAB_ONLY:
        text = (REPO / test_file).read_text()
        assert f"def {name.split('[')[0]}(" in text, f"{test_file} has no {name}"
    assert "@pytest.mark.lab_only" in (REPO / "tests" / "testinfra" / "test_db.py").read_text()


# -- the report for the stack ----------------------------------------------------------------------


def test_code_only_evidence_on_the_stack_is_proved_in_code_only_never_passed(audit, target: str) -> None:
    result = audit(target)
    expected = {
        c.id: MANUAL if not c.automated else CODE_ONLY if c.id in CODE_EVIDENCE else NOT_PROVED
        for c in _controls()
    }
    assert result.statuses == expected
    assert PASSED not in result.statuses.values()
    assert result.exit_status == 0
    assert f"tierwall audit: {INCOMPLETE.upper()}" in result.stdout
    assert f"target:   {target}" in result.stdout


def test_the_stack_s_report_gives_the_reason_of_each_status(audit, target: str) -> None:
    controls = {c["id"]: c for c in audit(target).hdf["profiles"][0]["controls"]}
    for control_id in CODE_EVIDENCE:
        tags = controls[control_id]["tags"]
        assert tags["tierwall_status"] == CODE_ONLY
        assert f"no test of this run checked the hosts of {target}" in tags["tierwall_note"]
        assert set(tags["layers_proved"]) <= {CODE, RENDERED}
    assert "lab only: the inventory" in controls["NET-06"]["tags"]["tierwall_note"]
    assert controls["NET-01"]["tags"]["tierwall_note"] == "no test of this run proves it"
    # Heimdall counts a control passed on one passing result: none may read so.
    statuses = {r["status"] for c in controls.values() for r in c["results"]}
    assert PASSED not in statuses


# -- the same evidence named as the lab ------------------------------------------------------------


def test_the_same_evidence_as_the_lab_is_never_proved_in_code_only(audit) -> None:
    result = audit(LAB)
    assert CODE_ONLY not in result.statuses.values()
    assert {c: result.statuses[c] for c in LIVE_REQUIRED} == dict.fromkeys(LIVE_REQUIRED, NOT_PROVED)
    assert {c: result.statuses[c] for c in CODE_EVIDENCE - LIVE_REQUIRED} == dict.fromkeys(
        CODE_EVIDENCE - LIVE_REQUIRED, PASSED
    )
    assert result.exit_status == 1
    assert f"tierwall audit: {FAILED.upper()}" in result.stdout


# -- the target command ----------------------------------------------------------------------------


def test_an_inventory_without_a_target_is_one_line_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  vars: {}\n")
    assert main(["inventory-target", str(inventory)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{inventory} has no all.vars.tierwall_target: regenerate it with `tierwall inventory`" in err
