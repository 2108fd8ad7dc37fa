"""Render the audit report: each control's status from the last run's evidence, as HTML and Markdown."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from tierwall.audit.controls import Control
from tierwall.audit.junit import FAILED, PASSED, SKIPPED, Run, TestResult

NOT_REVIEWED = "not reviewed"


class AuditError(ValueError):
    pass


@dataclass(frozen=True)
class ControlStatus:
    control: Control
    status: str  # passed | failed | not reviewed
    tests: tuple[TestResult, ...]
    note: str


def evaluate(controls: tuple[Control, ...], run: Run, partial: bool = False) -> list[ControlStatus]:
    """Each control's status. Refuses a matrix and a run that do not fit together.

    ``partial``: a run of only some suites (e.g. against production, where the lab's own suites
    cannot run); a TEST control no test of the run proves is then "not reviewed", not an error.
    """
    known = {c.id for c in controls}
    unknown = sorted({cid for r in run.results for cid in r.controls} - known)
    if unknown:
        users = sorted({r.nodeid for r in run.results if set(r.controls) & set(unknown)})
        raise AuditError(
            f"tests name unknown control(s) {unknown} (e.g. {users[0]}): add them to audit/controls.yaml "
            "or fix the marker"
        )
    untested = [c.id for c in controls if c.automated and not run.for_control(c.id)]
    if untested and not partial:
        raise AuditError(
            f"control(s) {untested} are method TEST but no test in this run carries "
            "@pytest.mark.control for them: write the test, or run the suite that holds it"
        )
    statuses = []
    for control in controls:
        tests = tuple(run.for_control(control.id))
        if not control.automated:
            statuses.append(
                ControlStatus(control, NOT_REVIEWED, tests, f"{control.method}: {control.reason}")
            )
            continue
        if not tests:
            statuses.append(ControlStatus(control, NOT_REVIEWED, tests, "no test of this run proves it"))
            continue
        outcomes = {t.outcome for t in tests}
        if FAILED in outcomes:
            failed = sum(1 for t in tests if t.outcome == FAILED)
            statuses.append(ControlStatus(control, FAILED, tests, f"{failed} of {len(tests)} test(s) failed"))
        elif PASSED in outcomes:
            skipped = sum(1 for t in tests if t.outcome == SKIPPED)
            note = f"{len(tests) - skipped} test(s) passed" + (f", {skipped} skipped" if skipped else "")
            statuses.append(ControlStatus(control, PASSED, tests, note))
        else:
            reasons = "; ".join(sorted({t.message for t in tests if t.message}))
            statuses.append(ControlStatus(control, NOT_REVIEWED, tests, f"all tests skipped: {reasons}"))
    return statuses


def load_segregation(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    data = json.loads(path.read_text())
    pairs: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(
        lambda: {"declared": [], "connected": [], "violations": []}
    )
    for probe in data.get("probes", []):
        key = (probe["source"], probe["destination"])
        port = f"{probe['port']}/{probe['protocol']}"
        if probe["declared"]:
            pairs[key]["declared"].append(port)
        if probe["connected"]:
            pairs[key]["connected"].append(port)
        # The prober's own verdict (tierwall.segregation.Probe.violation): one rule, one place.
        if probe.get("violation"):
            pairs[key]["violations"].append(f"{port} {probe['violation']}")
    rows = [{"source": s, "destination": d, **v} for (s, d), v in sorted(pairs.items())]
    endpoints = sorted(
        {p["source"] for p in data.get("probes", [])} | {p["destination"] for p in data.get("probes", [])}
    )
    return {
        "endpoints": endpoints,
        "rows": rows,
        "probes": len(data.get("probes", [])),
        "violations": sum(len(r["violations"]) for r in rows),
        "declared_connected": sum(1 for p in data.get("probes", []) if p["declared"] and p["connected"]),
        "generated": data.get("generated", ""),
    }


def render(
    statuses: list[ControlStatus],
    run: Run,
    out_dir: Path,
    segregation: dict[str, Any] | None = None,
    target: str | None = None,
) -> tuple[Path, Path]:
    env = Environment(
        loader=PackageLoader("tierwall.audit", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    counts = {s: sum(1 for c in statuses if c.status == s) for s in (PASSED, FAILED, NOT_REVIEWED)}
    context = {
        "statuses": statuses,
        "counts": counts,
        "run": run.properties,
        "target": target or run.properties.get("target", "unknown"),
        "tests": len(run.results),
        "rendered": datetime.now(UTC).isoformat(timespec="seconds"),
        "segregation": segregation,
        "verdict": FAILED if counts[FAILED] or (segregation and segregation["violations"]) else PASSED,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / "report.html"
    markdown = out_dir / "report.md"
    html.write_text(env.get_template("report.html.j2").render(**context))
    markdown.write_text(env.get_template("report.md.j2").render(**context))
    return html, markdown
