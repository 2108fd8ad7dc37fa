"""Read pytest's JUnit XML (junit_family=xunit1): outcomes and the control ids each test carries."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


class JUnitError(ValueError):
    pass


@dataclass(frozen=True)
class TestResult:
    nodeid: str
    outcome: str
    message: str
    controls: tuple[str, ...]
    seconds: float


@dataclass
class Run:
    results: list[TestResult] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)

    def for_control(self, control_id: str) -> list[TestResult]:
        return [r for r in self.results if control_id in r.controls]


def read_junit(paths: list[Path]) -> Run:
    run = Run()
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise JUnitError(f"{path}: not a readable JUnit XML file ({exc}); run the suites first") from None
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            props = suite.find("properties")
            if props is not None:
                for prop in props.iter("property"):
                    # The first file's metadata wins; later files fill what is missing.
                    run.properties.setdefault(prop.get("name", ""), prop.get("value", ""))
            for case in suite.iter("testcase"):
                run.results.append(_result(case))
    return run


def _result(case: ET.Element) -> TestResult:
    classname = case.get("classname", "")
    module = classname.replace(".", "/") + ".py" if classname else case.get("file", "")
    nodeid = f"{case.get('file') or module}::{case.get('name', '')}"
    outcome, message = PASSED, ""
    for tag in ("failure", "error"):
        element = case.find(tag)
        if element is not None:
            outcome, message = FAILED, element.get("message", "") or (element.text or "")[:500]
    skipped = case.find("skipped")
    if outcome == PASSED and skipped is not None:
        outcome, message = SKIPPED, skipped.get("message", "")
    controls = tuple(prop.get("value", "") for prop in case.iter("property") if prop.get("name") == "control")
    return TestResult(nodeid, outcome, message.strip(), controls, float(case.get("time", 0) or 0))
