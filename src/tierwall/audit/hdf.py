"""The report as MITRE Heimdall Data Format (HDF, InSpec "exec-json"), for Heimdall and other tools.

HDF knows four result statuses (passed, failed, skipped, error) and derives a control's status from
its results: any failure -> Failed, else any pass -> Passed, else all skipped -> Not Reviewed. Two
of the audit's statuses would be rounded up by that rule, so for a control "not proved" or "proved
in code only" each passing result is reported skipped with its real outcome kept in
``originalStatus`` (HDF's field for an overridden status) and the reason in ``skip_message``:
Heimdall then shows Not Reviewed, never Passed. The audit's own status is in the tag
``tierwall_status``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from tierwall.audit.junit import PASSED, TestResult
from tierwall.audit.layers import CONTROL_LAYER_TO_EVIDENCE
from tierwall.audit.report import CODE_ONLY, FAILED, NOT_PROVED

if TYPE_CHECKING:
    from tierwall.audit.report import ControlStatus, Report

# Every control guards special-category health data (session notes), so none is low-impact; HDF
# reads 0 as "not applicable", which no control of the matrix is.
IMPACT = 0.7
_ROUNDED_UP_BY_HDF = (NOT_PROVED, CODE_ONLY)


def to_hdf(report: Report, rendered: str) -> dict[str, Any]:
    started = report.run.properties.get("started") or rendered
    controls = [_control(status, started) for status in report.statuses]
    counts = report.counts
    controls_file = next((f for f in report.provenance.files if f.role == "controls"), None)
    return {
        "platform": {
            "name": f"tierwall-{report.target}",
            "release": report.provenance.commit,
            "target_id": report.target,
        },
        "version": _tool_version(),
        "statistics": {
            "duration": round(sum(t.seconds for t in report.run.results), 3),
            "controls": {
                "passed": {"total": counts[PASSED]},
                "failed": {"total": counts[FAILED]},
                "skipped": {"total": sum(counts.values()) - counts[PASSED] - counts[FAILED]},
            },
        },
        "profiles": [
            {
                "name": "tierwall-controls",
                "title": "tierwall: security promises of the privacy policy, proved per control",
                "version": _tool_version(),
                "sha256": controls_file.sha256 if controls_file else "",
                "supports": [],
                "attributes": [],
                "groups": [
                    {
                        "id": controls_file.path if controls_file else "audit/controls.yaml",
                        "title": "the control matrix",
                        "controls": [s.control.id for s in report.statuses],
                    }
                ],
                "controls": controls,
                "status": "loaded",
                "status_message": f"tierwall verdict: {report.verdict}",
            }
        ],
        "passthrough": {"tierwall": _passthrough(report, rendered)},
    }


def _control(status: ControlStatus, started: str) -> dict[str, Any]:
    control = status.control
    tags: dict[str, Any] = {
        "tierwall_status": status.status,
        "tierwall_note": status.note,
        "method": control.method,
        "component": control.component,
        "layers_required": sorted({CONTROL_LAYER_TO_EVIDENCE[layer] for layer in control.layers}),
        "layers_proved": list(status.layers_proved),
        "baselines": list(control.baselines),
    }
    for reference in control.requirements:
        tags.setdefault(reference.framework, []).append(reference.cite)
    descriptions = [{"label": "default", "data": control.objective}]
    if control.reason:
        descriptions.append({"label": "check", "data": f"{control.method}: {control.reason}"})
    return {
        "id": control.id,
        "title": control.title,
        "desc": control.objective,
        "descriptions": descriptions,
        "impact": IMPACT,
        "refs": [],
        "tags": tags,
        "source_location": {"ref": "audit/controls.yaml"},
        "results": _results(status, started),
    }


def _results(status: ControlStatus, started: str) -> list[dict[str, Any]]:
    if not status.tests:
        # HDF reads a control without results as a profile error; say instead what is missing.
        label = "manual" if status.status != NOT_PROVED else "none"
        return [
            {
                "status": "skipped",
                "code_desc": f"[{label}] {status.note}",
                "skip_message": status.note,
                "start_time": started,
            }
        ]
    return [_result(test, status, started) for test in status.tests]


def _result(test: TestResult, status: ControlStatus, started: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "status": test.outcome,
        "code_desc": f"[{test.layer}] {test.nodeid}",
        "run_time": test.seconds,
        "start_time": started,
        "resource_id": test.nodeid,
    }
    if test.message:
        result["skip_message" if test.outcome == "skipped" else "message"] = test.message
    if test.outcome == PASSED and status.status in _ROUNDED_UP_BY_HDF:
        result.update(
            status="skipped",
            originalStatus=PASSED,
            skip_message=f"this test passed, but the control is {status.status}: {status.note}",
        )
    return result


def _passthrough(report: Report, rendered: str) -> dict[str, Any]:
    provenance = report.provenance
    return {
        "verdict": report.verdict,
        "target": report.target,
        "partial": report.partial,
        "rendered": rendered,
        "commit": provenance.commit,
        "work_tree_modified": provenance.modified,
        "work_tree_changes": list(provenance.changes),
        "tests_ran_at": list(provenance.run_commits),
        "files": [{"role": f.role, "path": f.path, "sha256": f.sha256} for f in provenance.files],
        "segregation_violations": report.violations,
    }


def _tool_version() -> str:
    try:
        return version("tierwall")
    except PackageNotFoundError:
        return "0+unknown"
