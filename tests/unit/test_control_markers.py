"""Every control a test names exists in the control matrix, and its evidence has a layer the audit knows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tierwall.audit.controls import load_controls
from tierwall.audit.junit import PASSED, read_junit
from tierwall.audit.layers import LIVE, RENDERED, layer_of, requires_live
from tierwall.paths import REPO

_MARKER = re.compile(r"""mark\.control\(\s*["']([^"']+)["']""")

# Controls that declare the live layer but that no live suite proves yet: the lab's audit reports
# them "not proved" (and fails) until a test on running hosts carries their marker. Listed so a gap
# is seen here first; the assertion below fails once the test exists, so an entry cannot linger.
WITHOUT_LIVE_TEST: set[str] = set()


def _markers() -> dict[str, list[str]]:
    """control id -> the test files (relative to the repository) that carry its marker."""
    used: dict[str, list[str]] = {}
    for folder in ("tests", "app/tests"):
        for path in (REPO / folder).rglob("test_*.py"):
            for control_id in _MARKER.findall(path.read_text()):
                used.setdefault(control_id, []).append(str(path.relative_to(REPO)))
    return used


def test_every_control_marker_names_a_known_control() -> None:
    known = {c.id for c in load_controls(REPO / "audit" / "controls.yaml")}
    used = _markers()
    assert used, "no test carries a control marker"
    unknown = {cid: files for cid, files in used.items() if cid not in known}
    assert not unknown, f"tests name controls missing from audit/controls.yaml: {unknown}"


def test_every_file_with_control_markers_has_an_evidence_layer() -> None:
    files = {Path(f) for paths in _markers().values() for f in paths}
    layers = {str(f): layer_of(str(f)) for f in files}  # raises for a path the audit cannot place
    assert layers["tests/testinfra/test_edge.py"] == LIVE


def test_every_control_that_needs_a_live_proof_has_a_live_test() -> None:
    live = {cid for cid, files in _markers().items() if any(layer_of(f) == LIVE for f in files)}
    controls = load_controls(REPO / "audit" / "controls.yaml")
    needing = {c.id for c in controls if c.automated and requires_live(c.layers)}
    assert needing - live == WITHOUT_LIVE_TEST


def test_the_app_tests_carry_their_controls_into_junit_when_run_alone(tmp_path: Path) -> None:
    """The marker -> JUnit wiring (the root conftest.py) holds for app/tests too, not only when
    tests/ is collected beside them: a real run of the crypto tests, which need no database."""
    junit = tmp_path / "app.xml"
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path}/tmp"]
    subprocess.run(
        [*pytest, "app/tests/test_notes_crypto.py", "-m", "control", f"--junit-xml={junit}"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    run = read_junit([junit])
    names = {r.nodeid.split("::")[1].split("[")[0] for r in run.results}
    assert "test_ciphertext_moved_to_another_file_is_rejected" in names
    assert {(r.outcome, r.controls, r.layer) for r in run.results} == {(PASSED, ("APP-01",), RENDERED)}
