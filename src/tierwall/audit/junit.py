"""Read pytest's JUnit XML (junit_family=xunit1): outcomes, the control ids and the layer of each test."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tierwall.audit.layers import LayerError, layer_of

# error: the test could not run to its assertions (a fixture or collection broke), as JUnit tells it
# apart from an assertion that failed.
PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


class JUnitError(ValueError):
    pass


@dataclass(frozen=True)
class TestResult:
    nodeid: str
    outcome: str
    message: str
    controls: tuple[str, ...]
    seconds: float
    # code | rendered | live (tierwall.audit.layers); empty for a test that proves no control.
    layer: str = ""

    @property
    def ran(self) -> bool:
        return self.outcome != SKIPPED


@dataclass(frozen=True)
class Source:
    """One JUnit file and the suite facts it recorded (commit, start time, target)."""

    path: Path
    properties: dict[str, str]


@dataclass
class Run:
    results: list[TestResult] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)

    def for_control(self, control_id: str) -> list[TestResult]:
        return [r for r in self.results if control_id in r.controls]

    def commits(self) -> set[str]:
        """Every commit the suites of this run say they ran at."""
        return {s.properties["git_sha"] for s in self.sources if s.properties.get("git_sha")}


def read_junit(paths: list[Path]) -> Run:
    run = Run()
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise JUnitError(f"{path}: not a readable JUnit XML file ({exc}); run the suites first") from None
        source = Source(Path(path), {})
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            _read_properties(suite, source.properties)
            try:
                run.results.extend(_result(case) for case in suite.iter("testcase"))
            except LayerError as exc:
                raise JUnitError(f"{path}: {exc}") from None
        run.sources.append(source)
        for name, value in source.properties.items():
            # The first file's metadata wins; later files fill what is missing.
            run.properties.setdefault(name, value)
    return run


def _read_properties(suite: ET.Element, into: dict[str, str]) -> None:
    props = suite.find("properties")
    if props is not None:
        for prop in props.iter("property"):
            into.setdefault(prop.get("name", ""), prop.get("value", ""))


def _result(case: ET.Element) -> TestResult:
    classname = case.get("classname", "")
    test_file = case.get("file") or (classname.replace(".", "/") + ".py" if classname else "")
    nodeid = f"{test_file}::{case.get('name', '')}"
    outcome, message = PASSED, ""
    for tag, tag_outcome in (("failure", FAILED), ("error", ERROR)):
        element = case.find(tag)
        if element is not None and outcome == PASSED:
            outcome, message = tag_outcome, element.get("message", "") or (element.text or "")[:500]
    skipped = case.find("skipped")
    if outcome == PASSED and skipped is not None:
        outcome, message = SKIPPED, skipped.get("message", "")
    controls = tuple(prop.get("value", "") for prop in case.iter("property") if prop.get("name") == "control")
    # Only evidence needs a layer; a test of the tooling itself may live anywhere.
    layer = layer_of(test_file) if controls else ""
    return TestResult(nodeid, outcome, message.strip(), controls, float(case.get("time", 0) or 0), layer)
