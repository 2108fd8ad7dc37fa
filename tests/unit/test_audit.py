"""The audit report: controls as code, evidence from JUnit, statuses an auditor can trust."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tierwall.audit import provenance
from tierwall.audit.controls import ControlsError, load_controls
from tierwall.audit.junit import ERROR, FAILED, PASSED, SKIPPED, JUnitError, read_junit
from tierwall.audit.layers import CODE, LIVE, RENDERED, LayerError, layer_of
from tierwall.audit.report import (
    CODE_ONLY,
    INCOMPLETE,
    MANUAL,
    NOT_PROVED,
    AuditError,
    Report,
    evaluate,
    load_segregation,
    render,
)
from tierwall.cli import main
from tierwall.paths import REPO

HDF_SCHEMA = Path(__file__).parent / "fixtures" / "hdf-exec-json.schema.json"

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
    layers: [ansible, live]
    method: TEST
  - id: NET-06
    title: the db has no route to the internet
    objective: no default route; the sentinel is unreachable
    requirements: [{framework: DSV, cite: "Art. 3(1)(c)"}]
    component: db
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

# One file per evidence layer, at the paths the audit maps to layers (tierwall.audit.layers).
SUITE = {
    "tests/unit/test_pulumi_program.py": """
import pytest

@pytest.mark.control("NET-01")
def test_db_private():
    assert True
""",
    "tests/integration/test_nginx_templates.py": """
import pytest

@pytest.mark.control("TLS-01")
def test_tls_rendered():
    assert True
""",
    "tests/testinfra/test_edge.py": """
import pytest

@pytest.mark.control("TLS-01")
def test_tls_modern():
    assert True

@pytest.mark.control("TLS-01")
def test_tls_fails():
    assert 1 == 2, "TLS 1.1 handshake succeeded"
""",
    "tests/testinfra/test_db.py": """
import pytest

@pytest.mark.control("NET-06")
def test_no_default_route():
    assert True

@pytest.mark.control("NET-06")
@pytest.mark.skip(reason="no sentinel in this target")
def test_sentinel_unreachable():
    pass
""",
}
# -k selections of the suite, one JUnit file each.
EVERYTHING = ""
NO_FAILURE = "not fails"
ALL_PASS = "not fails and not sentinel"
CODE_AND_RENDERED = "db_private or tls_rendered"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("suite")
    (work / "conftest.py").write_text((REPO / "conftest.py").read_text())
    for path, text in SUITE.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    (work / "pytest.ini").write_text(
        "[pytest]\njunit_family = xunit1\nmarkers =\n    control(id): audit control\n"
    )
    return work


@pytest.fixture(scope="module")
def junit(suite: Path):
    """A real pytest run per selection with this repo's conftest hook, so marker -> JUnit is proved too."""
    made: dict[str, Path] = {}

    def run(selection: str = EVERYTHING) -> Path:
        if selection not in made:
            xml = suite / f"junit-{len(made)}.xml"
            select = ["-k", selection] if selection else []
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    f"--junit-xml={xml}",
                    *select,
                ],
                cwd=suite,
                capture_output=True,
                check=False,
            )
            assert xml.exists()
            made[selection] = xml
        return made[selection]

    return run


@pytest.fixture
def controls_file(tmp_path: Path) -> Path:
    path = tmp_path / "controls.yaml"
    path.write_text(CONTROLS)
    return path


@pytest.fixture
def controls(controls_file: Path):
    return load_controls(controls_file)


def _statuses(controls, xml: Path, target: str = "lab", partial: bool = False) -> dict:
    return {s.control.id: s for s in evaluate(controls, read_junit([xml]), target=target, partial=partial)}


def _audit(xml: Path, controls_file: Path, out: Path, repo: Path, *extra: str) -> int:
    args = ["audit", "--junit", str(xml), "--controls", str(controls_file), "-o", str(out)]
    return main([*args, "--repo", str(repo), *extra])


# -- evidence and layers ----------------------------------------------------------------------------


def test_junit_carries_outcomes_controls_layers_and_run_metadata(junit) -> None:
    run = read_junit([junit()])
    outcomes = {r.nodeid.split("::")[1]: (r.outcome, r.controls, r.layer) for r in run.results}
    assert outcomes == {
        "test_db_private": (PASSED, ("NET-01",), CODE),
        "test_tls_rendered": (PASSED, ("TLS-01",), RENDERED),
        "test_tls_modern": (PASSED, ("TLS-01",), LIVE),
        "test_tls_fails": (FAILED, ("TLS-01",), LIVE),
        "test_no_default_route": (PASSED, ("NET-06",), LIVE),
        "test_sentinel_unreachable": (SKIPPED, ("NET-06",), LIVE),
    }
    assert len(run.properties["git_sha"]) == 40
    assert run.properties["target"] == "lab"


@pytest.mark.parametrize(
    ("path", "layer"),
    [
        ("tests/unit/test_pulumi_program.py", CODE),
        ("tests/unit/test_policies.py", CODE),
        ("tests/unit/test_firewall_render.py", RENDERED),
        ("tests/integration/test_nginx_templates.py", RENDERED),
        ("app/tests/test_notes_crypto.py", RENDERED),
        ("tests/lab/test_segregation.py", LIVE),
        ("tests/testinfra/test_edge.py", LIVE),
    ],
)
def test_the_layer_follows_the_test_file(path: str, layer: str) -> None:
    assert layer_of(path) == layer


def test_evidence_from_an_unmapped_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="no evidence layer"):
        layer_of("elsewhere/test_x.py")
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuite><testcase file="elsewhere/test_x.py" name="test_a">'
        '<properties><property name="control" value="NET-01"/></properties></testcase></testsuite>'
    )
    with pytest.raises(JUnitError, match=r"elsewhere/test_x\.py: no evidence layer"):
        read_junit([xml])


def test_a_junit_error_is_kept_apart_from_a_failure(tmp_path: Path, controls) -> None:
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuite><testcase file="tests/unit/test_policies.py" name="test_a">'
        '<properties><property name="control" value="NET-01"/></properties>'
        '<error message="fixture broke"/></testcase></testsuite>'
    )
    run = read_junit([xml])
    assert run.results[0].outcome == ERROR
    status = {s.control.id: s for s in evaluate(controls, run, partial=True)}["NET-01"]
    assert status.status == FAILED


# -- statuses ---------------------------------------------------------------------------------------


def test_statuses_follow_the_evidence(junit, controls) -> None:
    statuses = _statuses(controls, junit())
    assert statuses["NET-01"].status == PASSED  # declared at the code layer only, proved there
    assert statuses["TLS-01"].status == FAILED
    assert statuses["TLS-01"].note == "1 of 3 test(s) failed"
    assert statuses["NET-06"].status == NOT_PROVED
    assert statuses["PHY-01"].status == MANUAL
    assert "inherited" in statuses["PHY-01"].note


def test_a_skipped_behavioural_test_leaves_its_control_not_proved(junit, controls) -> None:
    statuses = _statuses(controls, junit(NO_FAILURE))
    net06 = statuses["NET-06"]
    assert net06.status == NOT_PROVED  # one test passed beside the skipped one: still not proved
    assert "1 of 2 test(s) skipped" in net06.note
    assert "no sentinel" in net06.note
    assert statuses["TLS-01"].status == PASSED
    assert statuses["TLS-01"].layers_proved == (RENDERED, LIVE)


def test_a_live_control_with_only_code_evidence_is_not_proved_in_the_lab(junit, controls) -> None:
    statuses = _statuses(controls, junit(CODE_AND_RENDERED), partial=True)
    assert statuses["TLS-01"].status == NOT_PROVED
    assert "needs a live test" in statuses["TLS-01"].note
    assert statuses["NET-06"].status == NOT_PROVED
    assert statuses["NET-06"].note == "no test of this run proves it"


def test_a_stack_with_only_code_evidence_is_proved_in_code_only(junit, controls) -> None:
    statuses = _statuses(controls, junit(CODE_AND_RENDERED), target="hetzner-prod", partial=True)
    assert statuses["NET-01"].status == CODE_ONLY
    assert statuses["TLS-01"].status == CODE_ONLY
    assert "hosts of hetzner-prod" in statuses["TLS-01"].note
    assert statuses["PHY-01"].status == MANUAL


def test_a_stack_with_live_evidence_passes(junit, controls) -> None:
    statuses = _statuses(controls, junit(ALL_PASS), target="hetzner-prod", partial=True)
    assert statuses["TLS-01"].status == PASSED
    assert statuses["NET-06"].status == PASSED
    assert statuses["NET-01"].status == CODE_ONLY  # a Pulumi mock says nothing about the stack


def test_a_test_naming_an_unknown_control_is_refused(junit, tmp_path: Path) -> None:
    path = tmp_path / "controls.yaml"
    path.write_text(CONTROLS.replace("id: TLS-01", "id: TLS-09"))
    with pytest.raises(AuditError, match=r"unknown control\(s\) \['TLS-01'\]"):
        evaluate(load_controls(path), read_junit([junit()]))


def _with_untested_net09(tmp_path: Path) -> Path:
    path = tmp_path / "controls.yaml"
    extra = CONTROLS + CONTROLS.split("controls:")[1].replace("NET-01", "NET-09").split("- id: TLS-01")[0]
    path.write_text(extra)
    return path


def test_a_test_control_without_tests_is_refused(junit, tmp_path: Path) -> None:
    with pytest.raises(AuditError, match=r"\['NET-09'\] are method TEST but no test"):
        evaluate(load_controls(_with_untested_net09(tmp_path)), read_junit([junit()]))


def test_a_partial_run_reports_untested_controls_as_not_proved(junit, tmp_path: Path) -> None:
    controls = load_controls(_with_untested_net09(tmp_path))
    statuses = _statuses(controls, junit(), partial=True)
    assert statuses["NET-09"].status == NOT_PROVED
    assert statuses["NET-01"].status == PASSED


# -- the control matrix -----------------------------------------------------------------------------


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


# -- the command: verdict and exit status -----------------------------------------------------------


def test_a_failed_control_fails_the_command(
    junit, controls_file: Path, tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _audit(junit(), controls_file, tmp_path / "r", git_repo) == 1
    out = capsys.readouterr().out
    assert "tierwall audit: FAILED" in out
    assert "failing the verdict: TLS-01, NET-06" in out
    assert (tmp_path / "r" / "report.html").exists()
    missing = ["audit", "--junit", str(tmp_path / "missing.xml"), "--controls", str(controls_file)]
    assert main(missing) == 1


def test_a_skipped_test_fails_the_lab_verdict(
    junit, controls_file: Path, tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _audit(junit(NO_FAILURE), controls_file, tmp_path / "r", git_repo, "--target", "lab") == 1
    out = capsys.readouterr().out
    assert "failing the verdict: NET-06" in out
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| NET-06 | the db has no route to the internet | not proved |" in text
    assert "**FAILED**" in text
    html = (tmp_path / "r" / "report.html").read_text()
    assert '<td class="not-proved">not proved</td>' in html


def test_a_complete_lab_run_passes(junit, controls_file: Path, tmp_path: Path, git_repo: Path) -> None:
    assert _audit(junit(ALL_PASS), controls_file, tmp_path / "r", git_repo, "--target", "lab") == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "**PASSED**" in text
    assert "| PHY-01 | premises | manual |" in text
    assert "- [live] `tests/testinfra/test_db.py::test_no_default_route` — passed" in text
    assert "- [code] `tests/unit/test_pulumi_program.py::test_db_private` — passed" in text


def test_a_partial_stack_run_is_incomplete_not_passed(
    junit, controls_file: Path, tmp_path: Path, git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--target", "hetzner-prod", "--partial")
    assert _audit(junit(CODE_AND_RENDERED), controls_file, tmp_path / "r", git_repo, *args) == 0
    assert f"tierwall audit: {INCOMPLETE.upper()}" in capsys.readouterr().out
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| NET-01 | db has no public address | proved in code only |" in text
    assert "| TLS-01 | modern TLS only | proved in code only |" in text
    assert "| passed |" not in text


def test_the_lab_target_stays_strict_when_partial(
    junit, controls_file: Path, tmp_path: Path, git_repo: Path
) -> None:
    args = ("--target", "lab", "--partial")
    assert _audit(junit(CODE_AND_RENDERED), controls_file, tmp_path / "r", git_repo, *args) == 1


def test_report_renders_the_segregation_matrix(junit, controls, tmp_path: Path, git_repo: Path) -> None:
    evidence = tmp_path / "segregation.json"
    probe = {"source": "app-1", "destination": "db-1", "port": 5432, "protocol": "tcp"}
    evidence.write_text(
        json.dumps(
            {
                "generated": "2026-11-25T12:00:00+00:00",
                "probes": [
                    {**probe, "declared": True, "connected": True, "violation": None},
                    {
                        **probe,
                        "source": "proxy-1",
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
    run = read_junit([junit(ALL_PASS)])
    origin = provenance.collect(git_repo, [("segregation", evidence)])
    report = Report(evaluate(controls, run), run, "lab", False, origin, segregation)
    assert report.verdict == FAILED  # every control passed, but a probe leaked
    files = render(report, tmp_path / "out")
    page = files.html.read_text()
    assert "<script" not in page  # one self-contained, static file
    assert "5432/tcp undeclared connection connected" in page


# -- provenance -------------------------------------------------------------------------------------


def test_a_clean_tree_is_recorded_clean_and_ignored_files_do_not_count(git_repo: Path) -> None:
    (git_repo / "ignored").mkdir()
    (git_repo / "ignored" / "x").write_text("scratch")
    origin = provenance.collect(git_repo, [])
    assert not origin.modified
    assert origin.warnings() == []
    assert len(origin.commit) == 40


def test_a_report_from_a_modified_tree_says_so_in_its_first_line(
    junit, controls_file: Path, tmp_path: Path, git_repo: Path
) -> None:
    out = tmp_path / "r"
    _audit(junit(ALL_PASS), controls_file, out, git_repo)
    # The suite's JUnit says it ran at this repository's commit, not the scratch repository's.
    first = (out / "report.md").read_text().splitlines()[0]
    assert "tests that ran at commit(s)" in first
    assert "modified" not in first

    (git_repo / "notes.txt").write_text("changed after the commit\n")
    _audit(junit(ALL_PASS), controls_file, out, git_repo)
    for name in ("report.md", "report.html"):
        first = (out / name).read_text().splitlines()[0]
        assert "WARNING" in first
        assert "modified work tree (1 changed path(s)" in first
    assert json.loads((out / "report.hdf.json").read_text())["passthrough"]["tierwall"]["work_tree_modified"]


def test_an_untracked_file_counts_as_a_modification(git_repo: Path) -> None:
    (git_repo / "new.py").write_text("print('not committed')\n")
    origin = provenance.collect(git_repo, [])
    assert origin.modified
    assert origin.changes == ("?? new.py",)


def test_outside_a_git_work_tree_the_report_cannot_vouch_for_its_code(tmp_path: Path) -> None:
    origin = provenance.collect(tmp_path, [])
    assert origin.modified
    assert "cannot be tied to a commit" in origin.warnings()[0]


def test_the_sha256_of_every_input_is_recorded_and_checkable(
    junit, controls_file: Path, tmp_path: Path, git_repo: Path
) -> None:
    assert provenance.sha256_file(_write(tmp_path / "abc", b"abc")) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 test vector
    )
    xml = junit(ALL_PASS)
    out = tmp_path / "r"
    _audit(xml, controls_file, out, git_repo)
    text = (out / "report.md").read_text()
    for path in (controls_file, xml):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{digest}  {path.resolve()}" in text  # sha256sum -c format
    files = json.loads((out / "report.hdf.json").read_text())["passthrough"]["tierwall"]["files"]
    assert [f["role"] for f in files] == ["controls", "junit"]
    checked = subprocess.run(
        ["sha256sum", "-c", "-"],
        input="".join(f"{f['sha256']}  {f['path']}\n" for f in files),
        text=True,
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    controls_file.write_text(CONTROLS + "\n# edited after the report\n")
    rechecked = subprocess.run(
        ["sha256sum", "-c", "-"],
        input="".join(f"{f['sha256']}  {f['path']}\n" for f in files),
        text=True,
        capture_output=True,
        check=False,
    )
    assert rechecked.returncode != 0
    assert f"{controls_file.resolve()}: FAILED" in rechecked.stdout


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- Heimdall Data Format ---------------------------------------------------------------------------


def _hdf_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(HDF_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _heimdall_status(control: dict) -> str:
    """The control status HDF consumers derive from the results (InSpec's enhanced outcomes)."""
    statuses = [r.get("status") for r in control["results"]]
    if "error" in statuses:
        return "error"
    if all(s == "skipped" for s in statuses):
        return "not_reviewed"
    return "failed" if "failed" in statuses else "passed"


@pytest.fixture
def hdf(junit, controls_file: Path, tmp_path: Path, git_repo: Path) -> dict:
    _audit(junit(NO_FAILURE), controls_file, tmp_path / "r", git_repo, "--target", "lab")
    return json.loads((tmp_path / "r" / "report.hdf.json").read_text())


def test_the_hdf_file_validates_against_the_published_schema(hdf: dict) -> None:
    _hdf_validator().validate(hdf)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda doc: doc.pop("profiles"),
        lambda doc: doc["profiles"][0]["controls"][0]["results"][0].update(status="manual"),
        lambda doc: doc["profiles"][0]["controls"][0].update(impact=1.5),
        lambda doc: doc["profiles"][0]["controls"][0]["results"][0].pop("start_time"),
    ],
)
def test_a_broken_hdf_document_fails_validation(hdf: dict, breakage) -> None:
    breakage(hdf)
    with pytest.raises(jsonschema.ValidationError):
        _hdf_validator().validate(hdf)


def test_hdf_maps_controls_with_their_layers_references_and_statuses(hdf: dict) -> None:
    profile = hdf["profiles"][0]
    controls = {c["id"]: c for c in profile["controls"]}
    assert list(controls) == ["NET-01", "TLS-01", "NET-06", "PHY-01"]
    tls = controls["TLS-01"]
    assert tls["title"] == "modern TLS only"
    assert tls["tags"]["GDPR"] == ["Art. 32(1)(a)"]
    assert tls["tags"]["tierwall_status"] == PASSED
    assert sorted(r["code_desc"] for r in tls["results"]) == [
        "[live] tests/testinfra/test_edge.py::test_tls_modern",
        "[rendered] tests/integration/test_nginx_templates.py::test_tls_rendered",
    ]
    assert 0 < tls["impact"] <= 1
    assert hdf["platform"]["release"] == hdf["passthrough"]["tierwall"]["commit"]


def test_hdf_never_rounds_a_not_proved_or_manual_control_up_to_passed(hdf: dict) -> None:
    controls = {c["id"]: c for c in hdf["profiles"][0]["controls"]}
    net06 = controls["NET-06"]
    assert net06["tags"]["tierwall_status"] == NOT_PROVED
    assert _heimdall_status(net06) == "not_reviewed"
    kept = [r for r in net06["results"] if r.get("originalStatus") == PASSED]
    assert len(kept) == 1  # the test that passed keeps its real outcome beside the override
    assert "not proved" in kept[0]["skip_message"]
    phy = controls["PHY-01"]
    assert phy["tags"]["tierwall_status"] == MANUAL
    assert _heimdall_status(phy) == "not_reviewed"
    assert "inherited from the hosting provider" in phy["results"][0]["skip_message"]
    assert _heimdall_status(controls["TLS-01"]) == "passed"
