"""The audit report: controls as code, evidence from JUnit, statuses an auditor can trust."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tierwall.audit.controls import ControlsError, load_controls
from tierwall.audit.junit import FAILED, PASSED, SKIPPED, read_junit
from tierwall.audit.report import NOT_REVIEWED, AuditError, evaluate, load_segregation, render
from tierwall.cli import main
from tierwall.paths import REPO

CONTROLS = """
controls:
  - id: NET-01
    title: db has no public address
    objective: nothing on the internet can address the db
    requirements: [{framework: POLICY, cite: "VII.3"}]
    component: db
    layers: [pulumi]
    method: TEST
  - id: TLS-01
    title: modern TLS only
    objective: TLS 1.2 and 1.3 only
    requirements: [{framework: GDPR, cite: "Art. 32(1)(a)"}]
    baselines: ["CIS-NGINX 4.1.4"]
    component: proxy
    layers: [live]
    method: TEST
  - id: PHY-01
    title: premises
    objective: physical access control
    requirements: [{framework: DSV, cite: "Art. 3(1)(b)"}]
    component: all
    layers: [live]
    method: EXAMINE
    reason: inherited from the hosting provider
"""

SUITE = """
import pytest

@pytest.mark.control("NET-01")
def test_db_private():
    assert True

@pytest.mark.control("TLS-01")
def test_tls_fails():
    assert 1 == 2, "TLS 1.1 handshake succeeded"

@pytest.mark.control("TLS-01")
@pytest.mark.skip(reason="no sentinel in this target")
def test_tls_from_sentinel():
    pass
"""


@pytest.fixture(scope="module")
def junit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real pytest run with this repo's conftest hook, so the marker -> JUnit path is proved too."""
    work = tmp_path_factory.mktemp("suite")
    (work / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    (work / "test_sample.py").write_text(SUITE)
    (work / "pytest.ini").write_text(
        "[pytest]\njunit_family = xunit1\nmarkers =\n    control(id): audit control\n"
    )
    xml = work / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junit-xml={xml}", str(work)],
        cwd=work,
        capture_output=True,
        check=False,
    )
    assert xml.exists()
    return xml


@pytest.fixture
def controls(tmp_path: Path):
    path = tmp_path / "controls.yaml"
    path.write_text(CONTROLS)
    return load_controls(path)


def test_junit_carries_outcomes_controls_and_run_metadata(junit: Path) -> None:
    run = read_junit([junit])
    outcomes = {r.nodeid.split("::")[1]: (r.outcome, r.controls) for r in run.results}
    assert outcomes == {
        "test_db_private": (PASSED, ("NET-01",)),
        "test_tls_fails": (FAILED, ("TLS-01",)),
        "test_tls_from_sentinel": (SKIPPED, ("TLS-01",)),
    }
    assert len(run.properties["git_sha"]) == 40
    assert run.properties["target"] == "lab"


def test_statuses_follow_the_evidence(junit: Path, controls) -> None:
    statuses = {s.control.id: s for s in evaluate(controls, read_junit([junit]))}
    assert statuses["NET-01"].status == PASSED
    assert statuses["TLS-01"].status == FAILED
    assert statuses["TLS-01"].note == "1 of 2 test(s) failed"
    assert statuses["PHY-01"].status == NOT_REVIEWED
    assert "inherited" in statuses["PHY-01"].note


def test_only_skipped_tests_mean_not_reviewed(junit: Path, controls) -> None:
    run = read_junit([junit])
    run.results = [r for r in run.results if r.outcome != FAILED]
    status = {s.control.id: s for s in evaluate(controls, run)}["TLS-01"]
    assert status.status == NOT_REVIEWED
    assert "no sentinel" in status.note


def test_a_test_naming_an_unknown_control_is_refused(junit: Path, tmp_path: Path) -> None:
    path = tmp_path / "controls.yaml"
    path.write_text(CONTROLS.replace("id: TLS-01", "id: TLS-09"))
    with pytest.raises(AuditError, match=r"unknown control\(s\) \['TLS-01'\]"):
        evaluate(load_controls(path), read_junit([junit]))


def test_a_test_control_without_tests_is_refused(junit: Path, tmp_path: Path) -> None:
    path = tmp_path / "controls.yaml"
    extra = CONTROLS + CONTROLS.split("controls:")[1].replace("NET-01", "NET-09").split("- id: TLS-01")[0]
    path.write_text(extra)
    with pytest.raises(AuditError, match=r"\['NET-09'\] are method TEST but no test"):
        evaluate(load_controls(path), read_junit([junit]))


def test_a_partial_run_reports_unproved_controls_as_not_reviewed(junit: Path, tmp_path: Path) -> None:
    path = tmp_path / "controls.yaml"
    extra = CONTROLS + CONTROLS.split("controls:")[1].replace("NET-01", "NET-09").split("- id: TLS-01")[0]
    path.write_text(extra)
    statuses = {s.control.id: s for s in evaluate(load_controls(path), read_junit([junit]), partial=True)}
    assert statuses["NET-09"].status == NOT_REVIEWED
    assert statuses["NET-01"].status == PASSED


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("method: TEST", "method: GUESS"), "method must be one of"),
        (("id: NET-01", "id: net1"), "id must look like"),
        (("layers: [pulumi]", "layers: [cloud]"), "layers must be"),
        (("reason: inherited from the hosting provider", ""), "needs a 'reason'"),
        (("    component: db\n", ""), "field 'component' is required"),
        (("    component: db\n", "    component: db\n    owner: ops\n"), "unknown field"),
    ],
)
def test_malformed_control_matrices_are_refused(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = tmp_path / "controls.yaml"
    path.write_text(CONTROLS.replace(*change, 1))
    with pytest.raises(ControlsError, match=message):
        load_controls(path)


def test_the_projects_control_matrix_is_valid() -> None:
    controls = load_controls(REPO / "audit" / "controls.yaml")
    ids = {c.id for c in controls}
    assert {"NET-01", "NET-05", "NET-06", "LOC-01", "AC-03"} <= ids
    assert all(c.reason for c in controls if not c.automated)


def test_report_renders_statuses_and_segregation(junit: Path, controls, tmp_path: Path) -> None:
    evidence = tmp_path / "segregation.json"
    evidence.write_text(
        json.dumps(
            {
                "generated": "2026-11-25T12:00:00+00:00",
                "probes": [
                    {
                        "source": "app-1",
                        "destination": "db-1",
                        "port": 5432,
                        "protocol": "tcp",
                        "declared": True,
                        "connected": True,
                        "violation": None,
                    },
                    {
                        "source": "proxy-1",
                        "destination": "db-1",
                        "port": 5432,
                        "protocol": "tcp",
                        "declared": False,
                        "connected": True,
                        "violation": "undeclared connection connected",
                    },
                ],
            }
        )
    )
    segregation = load_segregation(evidence)
    assert segregation is not None
    assert segregation["violations"] == 1
    run = read_junit([junit])
    html, markdown = render(evaluate(controls, run), run, tmp_path / "out", segregation, "lab")
    page = html.read_text()
    assert "<script" not in page  # one self-contained, static file
    assert "TLS-01" in page
    assert "5432/tcp undeclared connection connected" in page
    text = markdown.read_text()
    assert "| NET-01 | db has no public address | passed |" in text
    assert "| TLS-01 | modern TLS only | failed |" in text
    assert "**FAILED**" in text


def test_audit_command_exit_status(junit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "controls.yaml"
    path.write_text(CONTROLS)
    args = ["audit", "--junit", str(junit), "--controls", str(path), "-o", str(tmp_path / "r")]
    assert main(args) == 1  # TLS-01 failed
    assert "failed: TLS-01" in capsys.readouterr().out
    assert (tmp_path / "r" / "report.html").exists()
    assert main(["audit", "--junit", str(tmp_path / "missing.xml"), "--controls", str(path)]) == 1
