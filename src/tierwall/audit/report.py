"""Each control's status from a run's evidence, and the report as HTML, Markdown and HDF JSON."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from tierwall.audit.controls import Control
from tierwall.audit.junit import ERROR, FAILED, PASSED, SKIPPED, Run, TestResult
from tierwall.audit.layers import EVIDENCE_LAYERS, LIVE, requires_live
from tierwall.audit.provenance import Provenance

LAB = "lab"
NOT_PROVED = "not proved"
CODE_ONLY = "proved in code only"
MANUAL = "manual"
STATUSES = (PASSED, CODE_ONLY, FAILED, NOT_PROVED, MANUAL)
INCOMPLETE = "incomplete"  # a verdict: nothing failed, but not everything was proved on the target


class AuditError(ValueError):
    pass


@dataclass(frozen=True)
class ControlStatus:
    control: Control
    status: str  # one of STATUSES
    tests: tuple[TestResult, ...]
    note: str

    @property
    def layers_proved(self) -> tuple[str, ...]:
        """Layers at which at least one test of this control ran and passed."""
        passed = {t.layer for t in self.tests if t.outcome == PASSED}
        return tuple(layer for layer in EVIDENCE_LAYERS if layer in passed)


def evaluate(
    controls: tuple[Control, ...], run: Run, target: str = LAB, partial: bool = False
) -> list[ControlStatus]:
    """Each control's status. Refuses a matrix and a run that do not fit together.

    ``partial``: a run of only some suites (e.g. against production, where the lab's own suites
    cannot run); a TEST control no test of the run proves is then "not proved", not an error.
    """
    _refuse_unknown_controls(controls, run)
    untested = [c.id for c in controls if c.automated and not run.for_control(c.id)]
    if untested and not partial:
        raise AuditError(
            f"control(s) {untested} are method TEST but no test in this run carries "
            "@pytest.mark.control for them: write the test, or run the suite that holds it"
        )
    return [_status(control, tuple(run.for_control(control.id)), target) for control in controls]


def _refuse_unknown_controls(controls: tuple[Control, ...], run: Run) -> None:
    known = {c.id for c in controls}
    unknown = sorted({cid for r in run.results for cid in r.controls} - known)
    if unknown:
        users = sorted({r.nodeid for r in run.results if set(r.controls) & set(unknown)})
        raise AuditError(
            f"tests name unknown control(s) {unknown} (e.g. {users[0]}): add them to audit/controls.yaml "
            "or fix the marker"
        )


def _status(control: Control, tests: tuple[TestResult, ...], target: str) -> ControlStatus:
    if not control.automated:
        return ControlStatus(control, MANUAL, tests, f"{control.method}: {control.reason}")
    if not tests:
        return ControlStatus(control, NOT_PROVED, tests, "no test of this run proves it")
    broken = [t for t in tests if t.outcome in (FAILED, ERROR)]
    if broken:
        return ControlStatus(control, FAILED, tests, f"{len(broken)} of {len(tests)} test(s) failed")
    skipped = [t for t in tests if t.outcome == SKIPPED]
    if skipped:
        # A skipped test checked nothing; the tests that passed beside it do not cover its part.
        reasons = "; ".join(sorted({t.message for t in skipped if t.message})) or "no reason given"
        note = f"{len(skipped)} of {len(tests)} test(s) skipped, so not every check ran: {reasons}"
        return ControlStatus(control, NOT_PROVED, tests, note)
    return _status_of_passing(control, tests, target)


def _status_of_passing(control: Control, tests: tuple[TestResult, ...], target: str) -> ControlStatus:
    layers = sorted({t.layer for t in tests}, key=EVIDENCE_LAYERS.index)
    proved = f"{len(tests)} test(s) passed at layer(s) {', '.join(layers)}"
    if LIVE in layers:
        return ControlStatus(control, PASSED, tests, proved)
    if target != LAB:
        # Mocks and rendered files say what the code would build, not what runs on this target.
        return ControlStatus(
            control, CODE_ONLY, tests, f"{proved}; no test of this run checked the hosts of {target}"
        )
    if requires_live(control.layers):
        return ControlStatus(
            control, NOT_PROVED, tests, f"{proved}; the control needs a live test and none ran"
        )
    return ControlStatus(control, PASSED, tests, proved)


@dataclass(frozen=True)
class Report:
    statuses: list[ControlStatus]
    run: Run
    target: str
    partial: bool
    provenance: Provenance
    segregation: dict[str, Any] | None = None

    @property
    def strict(self) -> bool:
        """The lab run is the full proof: there, a control left unproved fails the verdict."""
        return self.target == LAB or not self.partial

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.statuses if c.status == s) for s in STATUSES}

    @property
    def failures(self) -> list[str]:
        """The controls that make the verdict fail."""
        failing = {FAILED, NOT_PROVED} if self.strict else {FAILED}
        return [s.control.id for s in self.statuses if s.status in failing]

    @property
    def violations(self) -> int:
        return self.segregation["violations"] if self.segregation else 0

    @property
    def verdict(self) -> str:
        if self.failures or self.violations:
            return FAILED
        if any(s.status in (NOT_PROVED, CODE_ONLY) for s in self.statuses):
            return INCOMPLETE
        return PASSED


def load_segregation(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    data = json.loads(path.read_text())
    pairs: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(
        lambda: {"declared": [], "connected": [], "violations": []}
    )
    for probe in data.get("probes", []):
        key = (probe["source"], probe["destination"])
        port = _port_label(probe)
        if probe["declared"]:
            pairs[key]["declared"].append(port)
        if probe["connected"]:
            pairs[key]["connected"].append(port)
        # The prober's own verdict (tierwall.segregation.Probe.violation): one rule, one place.
        if probe.get("violation"):
            pairs[key]["violations"].append(f"{port} {probe['violation']}")
    for sweep in data.get("sweeps", []):
        pairs[(sweep["source"], sweep["destination"])]["violations"].extend(sweep.get("violations", []))
    # A declared flow no attempt tested is unproved: it fails the verdict like a violation.
    not_probed = [c for c in data.get("coverage", []) if c.get("status") == "not probed"]
    for flow in not_probed:
        pairs[(flow["source"], flow["destination"])]["violations"].append(f"{_port_label(flow)} not probed")
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
        **_segregation_proofs(data, not_probed),
    }


def _segregation_proofs(data: dict[str, Any], not_probed: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The matrix's other proofs, one line each: full-range sweeps, unprobed flows, public IPv6."""
    return {
        "sweeps": [
            f"{s['source']} -> {s['destination']} {s['address']} tcp {s['first']}-{s['last']}: "
            f"{s['blocked']} of {s['ports']} blocked in {s['seconds']} s"
            for s in data.get("sweeps", [])
        ],
        "not_probed": [f"{f['source']} -> {f['destination']} {_port_label(f)}" for f in not_probed],
        "ipv6": [
            f"{r['endpoint']}: {r['status']}" + (f" ({r['reason']})" if r["reason"] else "")
            for r in data.get("ipv6", [])
        ],
    }


def _port_label(probe: dict[str, Any]) -> str:
    return "echo/icmp" if probe["protocol"] == "icmp" else f"{probe['port']}/{probe['protocol']}"


def drill_reports(out_dir: Path) -> list[dict[str, Any]]:
    """The drills' own reports written beside this one (e.g. restore-drill.md with its .json):
    file name, verdict and when it ran, for the report to link them."""
    drills = []
    for markdown in sorted(out_dir.glob("*-drill.md")):
        evidence = markdown.with_suffix(".json")
        data = json.loads(evidence.read_text()) if evidence.is_file() else {}
        started = data.get("started_at")
        drills.append({
            "file": markdown.name,
            "passed": data.get("passed"),
            "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds") if started else "",
        })  # fmt: skip
    return drills


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    hdf: Path


def render(report: Report, out_dir: Path) -> ReportFiles:
    from tierwall.audit.hdf import to_hdf

    env = Environment(
        loader=PackageLoader("tierwall.audit", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    rendered = datetime.now(UTC).isoformat(timespec="seconds")
    context = {
        "report": report,
        "statuses": report.statuses,
        "counts": report.counts,
        "run": report.run.properties,
        "target": report.target,
        "tests": len(report.run.results),
        "rendered": rendered,
        "segregation": report.segregation,
        "verdict": report.verdict,
        "provenance": report.provenance,
        "warnings": report.provenance.warnings(),
        "drills": drill_reports(out_dir),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / "report.html", out_dir / "report.md", out_dir / "report.hdf.json")
    files.html.write_text(env.get_template("report.html.j2").render(**context))
    files.markdown.write_text(env.get_template("report.md.j2").render(**context))
    files.hdf.write_text(json.dumps(to_hdf(report, rendered), indent=2) + "\n")
    return files
