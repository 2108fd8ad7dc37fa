"""The JUnit files a run of the suites leaves in the reports directory, and which of them its audit reads.

The Makefile's suites write these names (``--junit-xml=$(REPORTS)/<name>``); `make lab` and
`make test` hand the audit the directory and the name of their run, and the files are chosen here,
in one place that the unit tests hold against the Makefile.
"""

from __future__ import annotations

from pathlib import Path

UNIT = "unit.xml"  # tests/unit
INTEGRATION = "integration.xml"  # tests/integration and app/tests, the reference application's own
LIVE = "live.xml"  # the parallel pass of tests/lab and tests/testinfra
LIVE_DISRUPTIVE = "live-disruptive.xml"  # the disruptive tests, one after the other
LIFECYCLE = "lifecycle.xml"  # tests/lab -m lab_lifecycle: the lab taken down and up again (NET-05)

# make lab leaves out the lifecycle suite: it would rebuild the lab it has just converged. make test
# runs it after the live suites and before its audit.
SUITES: dict[str, tuple[str, ...]] = {
    "lab": (UNIT, INTEGRATION, LIVE, LIVE_DISRUPTIVE),
    "test": (UNIT, INTEGRATION, LIVE, LIVE_DISRUPTIVE, LIFECYCLE),
}
KNOWN = SUITES["test"]


class EvidenceError(ValueError):
    pass


def evidence_files(reports: Path, suites: str | None = None) -> list[Path]:
    """The JUnit files of the run ``suites`` names ("lab" or "test"), every one required: pytest
    writes its file even when tests fail, so a missing one is a suite that never ran, and the
    controls it proves would lose evidence without a word. Without ``suites`` (`make audit`, after
    any choice of suites): the known files that are there."""
    if suites is None:
        return _present(reports)
    missing = [name for name in SUITES[suites] if not (reports / name).is_file()]
    if missing:
        raise EvidenceError(
            f"{reports}: {', '.join(missing)} missing: a suite of `make {suites}` did not run (each "
            "writes its file, failing or not), and the controls it proves would lose that evidence"
        )
    return [reports / name for name in SUITES[suites]]


def _present(reports: Path) -> list[Path]:
    found = [reports / name for name in KNOWN if (reports / name).is_file()]
    if not found:
        raise EvidenceError(f"{reports}: none of {', '.join(KNOWN)} is there; run the suites first")
    return found
