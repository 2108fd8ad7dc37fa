"""Which JUnit files the audit of `make lab` and `make test` reads (tierwall.audit.evidence).

The Makefile's suites write the files and the audit picks them by name: these tests hold the two
together, so a suite whose evidence never reaches the report (the lifecycle suite's NET-05 test,
the reference application's own tests) is caught here rather than by an auditor.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tierwall.audit.evidence import (
    INTEGRATION,
    LIFECYCLE,
    SUITES,
    UNIT,
    EvidenceError,
    evidence_files,
)
from tierwall.cli import main
from tierwall.paths import REPO

MAKEFILE = REPO / "Makefile"

CONTROLS = """
controls:
  - id: APP-01
    title: notes encrypted by the application
    objective: per note, bound to its file and row
    requirements: [{framework: GDPR, cite: "Art. 32(1)(a)"}]
    component: app
    layers: [live]
    method: TEST
  - id: NET-05
    title: only the declared flows connect
    objective: the lab's lifecycle leaves no trace
    requirements: [{framework: DSV, cite: "Art. 3(1)(a)"}]
    component: network
    layers: [live]
    method: TEST
"""

APP_TEST = ("app/tests/test_notes_crypto.py", "test_ciphertext_moved_to_another_file_is_rejected", "APP-01")
LIVE_TEST = (
    "tests/testinfra/test_end_to_end.py",
    "test_a_note_written_through_the_proxy_reads_back",
    "APP-01",
)
LIFECYCLE_TEST = (
    "tests/lab/test_lifecycle.py",
    "test_down_leaves_no_trace_and_up_is_idempotent_and_repairs",
    "NET-05",
)
SEGREGATION_TEST = ("tests/lab/test_segregation.py", "test_no_undeclared_connection_passes", "NET-05")

# What each file of a `make test` run holds here: one control test, or none.
CASES = {
    "unit.xml": None,
    "integration.xml": APP_TEST,
    "live.xml": SEGREGATION_TEST,
    "live-disruptive.xml": LIVE_TEST,
    "lifecycle.xml": LIFECYCLE_TEST,
}


def _junit(path: Path, case: tuple[str, str, str] | None) -> None:
    body = ""
    if case is not None:
        test_file, name, control = case
        body = (
            f'<testcase file="{test_file}" name="{name}" time="0.1">'
            f'<properties><property name="control" value="{control}"/></properties></testcase>'
        )
    path.write_text(f'<testsuites><testsuite name="pytest">{body}</testsuite></testsuites>')


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """A reports directory as `make test` leaves it, every suite's file written."""
    directory = tmp_path / "reports"
    directory.mkdir()
    for name, case in CASES.items():
        _junit(directory / name, case)
    return directory


def _audit(reports: Path, tmp_path: Path, repo: Path, *extra: str) -> int:
    controls = tmp_path / "controls.yaml"
    controls.write_text(CONTROLS)
    args = ["audit", "--reports", str(reports), "--controls", str(controls), "-o", str(tmp_path / "out")]
    return main([*args, "--repo", str(repo), "--target", "lab", *extra])


# -- the choice of files ---------------------------------------------------------------------------


def test_make_test_reads_every_suite_s_file_the_lifecycle_suite_s_among_them(reports: Path) -> None:
    files = evidence_files(reports, "test")
    assert [f.name for f in files] == list(CASES)
    assert reports / LIFECYCLE in files
    assert reports / INTEGRATION in files  # tests/integration and app/tests


def test_make_lab_reads_its_suites_without_the_lifecycle_suite(reports: Path) -> None:
    (reports / LIFECYCLE).unlink()
    assert [f.name for f in evidence_files(reports, "lab")] == list(CASES)[:-1]
    assert LIFECYCLE not in SUITES["lab"]


@pytest.mark.parametrize(("suites", "missing"), [("test", LIFECYCLE), ("lab", INTEGRATION), ("test", UNIT)])
def test_a_missing_file_of_the_run_is_an_error_naming_it(reports: Path, suites: str, missing: str) -> None:
    (reports / missing).unlink()
    expected = rf"{re.escape(missing)} missing: a suite of `make {suites}` did not run"
    with pytest.raises(EvidenceError, match=expected):
        evidence_files(reports, suites)


def test_without_a_run_the_known_files_that_are_there_are_read(reports: Path) -> None:
    (reports / LIFECYCLE).unlink()
    _junit(reports / "verify.xml", None)  # make verify's, handed to the audit by name
    assert [f.name for f in evidence_files(reports)] == list(CASES)[:-1]
    for name in CASES:
        (reports / name).unlink(missing_ok=True)
    with pytest.raises(EvidenceError, match="run the suites first"):
        evidence_files(reports)


# -- through the command ---------------------------------------------------------------------------


def test_the_audit_of_make_test_reports_the_lifecycle_and_the_app_tests(
    reports: Path, tmp_path: Path, git_repo: Path
) -> None:
    assert _audit(reports, tmp_path, git_repo, "--suites", "test") == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"- [live] `{LIFECYCLE_TEST[0]}::{LIFECYCLE_TEST[1]}` — passed" in text
    assert f"- [rendered] `{APP_TEST[0]}::{APP_TEST[1]}` — passed" in text
    hdf = json.loads((tmp_path / "out" / "report.hdf.json").read_text())
    hashed = [Path(f["path"]).name for f in hdf["passthrough"]["tierwall"]["files"] if f["role"] == "junit"]
    assert hashed == list(CASES)


def test_the_audit_of_make_test_refuses_a_run_without_the_lifecycle_file(
    reports: Path, tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (reports / LIFECYCLE).unlink()
    assert _audit(reports, tmp_path, git_repo, "--suites", "test") == 1
    assert f"{LIFECYCLE} missing" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.md").exists()


def test_suites_without_a_reports_directory_is_refused(
    reports: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["audit", "--junit", str(reports / UNIT), "--suites", "test", "-o", str(tmp_path / "out")]
    assert main(args) == 1
    assert "give --reports DIR" in capsys.readouterr().err


# -- the Makefile writes what the audit reads ------------------------------------------------------


def _rule(target: str) -> tuple[str, str]:
    """A rule's prerequisites and recipe, as written in the Makefile (not its target variables)."""
    lines = MAKEFILE.read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:") and "=" not in line)
    recipe = []
    for line in lines[head + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    return lines[head].split(":", 1)[1], "\n".join(recipe)


def _expanded(name: str, reports: Path) -> list[str]:
    """A Makefile variable as make expands it, split as the shell would (nothing is run)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    show = ["make", "-s", "--no-print-directory", "--eval", f"_show: ; @:$(info $({name}))", "_show"]
    result = subprocess.run(
        [*show, f"REPORTS={reports}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return shlex.split(result.stdout)


def test_every_junit_file_the_suites_write_is_evidence_of_make_test() -> None:
    written = set(re.findall(r"--junit-xml=\$\(REPORTS\)/([\w.-]+)", MAKEFILE.read_text()))
    # make verify names its own two files to the audit (--junit): no run's evidence to choose.
    # make upgrade-drill is no part of make test: its file is the drill's own record.
    assert written - {"verify.xml", "upgrade-drill.xml"} == set(SUITES["test"])


def test_make_lab_and_make_test_audit_the_files_of_their_own_suites(tmp_path: Path) -> None:
    assert _expanded("AUDIT", tmp_path)[-2:] == ["--reports", str(tmp_path)]
    prerequisites, recipe = _rule("test")
    assert "lifecycle" in prerequisites.split()
    assert "$(AUDIT) --suites test" in recipe
    _, lab = _rule("lab")
    assert "$(AUDIT) --suites lab " in lab
    assert "lifecycle" not in lab  # the lab's run leaves the lifecycle suite to make test


def test_the_app_tests_run_in_the_integration_suite_whose_file_both_runs_read(tmp_path: Path) -> None:
    command = _expanded("INTEGRATION", tmp_path)
    assert "app/tests" in command
    assert f"--junit-xml={tmp_path}/{INTEGRATION}" in command
    assert all(INTEGRATION in files for files in SUITES.values())
    _, lab = _rule("lab")
    assert "$(INTEGRATION)" in lab
    # make lab keeps the tests that carry a control marker, app/tests' among them.
    assert 'lab: MARKS_PRE := -m "control and not trixie_tree"' in MAKEFILE.read_text().splitlines()
