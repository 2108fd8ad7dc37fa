"""The mutation catalogue (`audit/mutations.yaml`): what each mutation breaks, where, and which tests
must see it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierwall.audit.controls import read_top_level_list
from tierwall.audit.layers import EVIDENCE_LAYERS, LIVE, LayerError, layer_of

TEXT, YAML = "text", "yaml"
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_KEYS = {"id", "control", "layer", "description", "apply", "tests"}


class CatalogueError(ValueError):
    pass


@dataclass(frozen=True)
class Patch:
    """One change to one file of the scratch copy: a text replacement or a YAML value."""

    kind: str
    file: str
    replace: str = ""
    with_: str = ""
    # Exactly this many occurrences must be found: a catalogue that no longer matches the code
    # is an error, never a silent no-op that would "survive".
    count: int = 1
    path: tuple[str, ...] = ()
    value: Any = None


@dataclass(frozen=True)
class Mutation:
    id: str
    control: str
    layer: str
    description: str
    patches: tuple[Patch, ...]
    # pytest arguments: test files, then any -k/-m selection.
    tests: tuple[str, ...]

    @property
    def needs_lab(self) -> bool:
        return self.layer == LIVE

    @property
    def test_files(self) -> tuple[str, ...]:
        files, skip_next = [], False
        for arg in self.tests:
            if skip_next:
                skip_next = False
            elif arg in ("-k", "-m"):
                skip_next = True
            elif not arg.startswith("-"):
                files.append(arg.split("::", 1)[0])
        return tuple(files)


def load_catalogue(path: Path, control_ids: set[str]) -> tuple[Mutation, ...]:
    entries = enumerate(read_top_level_list(path, "mutations", "the mutation catalogue", CatalogueError))
    mutations = tuple(_mutation(entry, f"{path}: mutations[{i}]", control_ids) for i, entry in entries)
    ids = [m.id for m in mutations]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise CatalogueError(f"{path}: mutation id(s) {twice} declared more than once")
    return mutations


def _mutation(entry: Any, where: str, control_ids: set[str]) -> Mutation:
    if not isinstance(entry, dict) or set(entry) != _KEYS:
        keys = sorted(entry) if isinstance(entry, dict) else entry
        raise CatalogueError(f"{where}: expected exactly the keys {sorted(_KEYS)}, got {keys}")
    where = f"{where} ({entry['id']})"
    if not isinstance(entry["id"], str) or not _ID.match(entry["id"]):
        raise CatalogueError(f"{where}: id must be lower-case words joined by '-'")
    if entry["control"] not in control_ids:
        raise CatalogueError(f"{where}: control {entry['control']!r} is not in audit/controls.yaml")
    if entry["layer"] not in EVIDENCE_LAYERS:
        raise CatalogueError(f"{where}: layer must be one of {list(EVIDENCE_LAYERS)}")
    patches = entry["apply"] if isinstance(entry["apply"], list) else [entry["apply"]]
    mutation = Mutation(
        id=entry["id"],
        control=entry["control"],
        layer=entry["layer"],
        description=" ".join(str(entry["description"]).split()),
        patches=tuple(_patch(p, where) for p in patches),
        tests=tuple(str(t) for t in entry["tests"] or ()),
    )
    _check_test_layers(mutation, where)
    return mutation


def _patch(raw: Any, where: str) -> Patch:
    if not isinstance(raw, dict) or raw.get("kind") not in (TEXT, YAML) or not raw.get("file"):
        raise CatalogueError(f"{where}: each apply entry needs kind (text or yaml) and file")
    if raw["kind"] == TEXT:
        if not raw.get("replace") or "with" not in raw:
            raise CatalogueError(f"{where}: a text patch needs 'replace' (non-empty) and 'with'")
        return Patch(TEXT, raw["file"], raw["replace"], raw["with"], int(raw.get("count", 1)))
    if not isinstance(raw.get("path"), list) or not raw["path"] or "value" not in raw:
        raise CatalogueError(f"{where}: a yaml patch needs 'path' (a list of keys) and 'value'")
    return Patch(YAML, raw["file"], path=tuple(str(k) for k in raw["path"]), value=raw["value"])


def _check_test_layers(mutation: Mutation, where: str) -> None:
    """The tests named must be tests of the mutation's layer, as the audit classifies them."""
    if not mutation.test_files:
        raise CatalogueError(f"{where}: 'tests' names no test file")
    for test_file in mutation.test_files:
        try:
            layer = layer_of(test_file)
        except LayerError as exc:
            raise CatalogueError(f"{where}: {exc}") from None
        if layer != mutation.layer:
            raise CatalogueError(f"{where}: {test_file} is a {layer} test, the mutation is {mutation.layer}")
