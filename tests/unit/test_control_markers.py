"""Every control a test names exists in the control matrix (the audit refuses unknown ids)."""

from __future__ import annotations

import re

from tierwall.audit.controls import load_controls
from tierwall.paths import REPO

_MARKER = re.compile(r"""mark\.control\(\s*["']([^"']+)["']""")


def test_every_control_marker_names_a_known_control() -> None:
    known = {c.id for c in load_controls(REPO / "audit" / "controls.yaml")}
    used: dict[str, list[str]] = {}
    for folder in ("tests", "app/tests"):
        for path in (REPO / folder).rglob("test_*.py"):
            for control_id in _MARKER.findall(path.read_text()):
                used.setdefault(control_id, []).append(str(path.relative_to(REPO)))
    assert used, "no test carries a control marker"
    unknown = {cid: files for cid, files in used.items() if cid not in known}
    assert not unknown, f"tests name controls missing from audit/controls.yaml: {unknown}"
