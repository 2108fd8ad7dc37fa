"""The control matrix (`audit/controls.yaml`): each promise, its legal references and how it is proved."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FRAMEWORKS = ("POLICY", "FADP", "DSV", "GDPR")
LAYERS = ("pulumi", "ansible", "live")
METHODS = ("TEST", "EXAMINE", "INTERVIEW")
_ID = re.compile(r"^[A-Z]{2,5}-\d{2}$")


class ControlsError(ValueError):
    pass


@dataclass(frozen=True)
class Reference:
    framework: str
    cite: str

    def __str__(self) -> str:
        return f"{self.framework} {self.cite}"


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    objective: str
    requirements: tuple[Reference, ...]
    baselines: tuple[str, ...]
    component: str
    layers: tuple[str, ...]
    method: str
    # For EXAMINE/INTERVIEW: why it cannot be automated and what the auditor examines.
    reason: str = ""

    @property
    def automated(self) -> bool:
        return self.method == "TEST"


def read_top_level_list(path: Path, key: str, what: str, error: type[Exception]) -> list[Any]:
    """The ``key:`` list of a YAML file (the control matrix, the mutation catalogue), or ``error``
    naming the file and what is wrong."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise error(f"{path}: expected a top-level '{key}:' list")
    return document[key]


def load_controls(path: str | Path) -> tuple[Control, ...]:
    path = Path(path)
    entries = read_top_level_list(path, "controls", "the control matrix", ControlsError)
    controls = [_parse(entry, index, path) for index, entry in enumerate(entries)]
    seen: set[str] = set()
    for control in controls:
        if control.id in seen:
            raise ControlsError(f"{path}: control {control.id} is declared twice")
        seen.add(control.id)
    return tuple(controls)


def _parse(entry: Any, index: int, path: Path) -> Control:
    where = f"{path}: controls[{index}]"
    if not isinstance(entry, dict):
        raise ControlsError(f"{where}: expected a mapping")
    known = {
        "id",
        "title",
        "objective",
        "requirements",
        "baselines",
        "component",
        "layers",
        "method",
        "reason",
    }
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ControlsError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(known)}")
    for field in ("id", "title", "objective", "component", "method"):
        if not isinstance(entry.get(field), str) or not entry[field].strip():
            raise ControlsError(f"{where}: field '{field}' is required (a non-empty string)")
    control_id = entry["id"]
    where = f"{path}: control {control_id}"
    if not _ID.match(control_id):
        raise ControlsError(f"{where}: id must look like NET-01")
    if entry["method"] not in METHODS:
        raise ControlsError(f"{where}: method must be one of {METHODS}")
    requirements = []
    for ref in entry.get("requirements") or []:
        if not isinstance(ref, dict) or ref.get("framework") not in FRAMEWORKS or not ref.get("cite"):
            raise ControlsError(
                f"{where}: each requirement needs framework ({'/'.join(FRAMEWORKS)}) and cite"
            )
        requirements.append(Reference(ref["framework"], str(ref["cite"])))
    if not requirements:
        raise ControlsError(f"{where}: at least one requirement reference is needed")
    layers = tuple(entry.get("layers") or ())
    if not layers or any(layer not in LAYERS for layer in layers):
        raise ControlsError(f"{where}: layers must be a non-empty list among {LAYERS}")
    reason = str(entry.get("reason", "")).strip()
    if entry["method"] != "TEST" and not reason:
        raise ControlsError(f"{where}: a {entry['method']} control needs a 'reason' (why not automated)")
    return Control(
        id=control_id,
        title=entry["title"].strip(),
        objective=entry["objective"].strip(),
        requirements=tuple(requirements),
        baselines=tuple(str(b) for b in entry.get("baselines") or ()),
        component=entry["component"],
        layers=layers,
        method=entry["method"],
        reason=reason,
    )
