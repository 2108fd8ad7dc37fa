"""The mutation catalogue (`audit/mutations.yaml`): what each mutation breaks, where, and which tests
must see it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierwall.audit.controls import read_top_level_list
from tierwall.audit.layers import EVIDENCE_LAYERS, LIVE, LayerError, layer_of

TEXT, YAML, COMMAND = "text", "yaml", "command"
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_KEYS = {"id", "control", "layer", "description", "apply", "tests"}
# Only live mutations say how the lab is converged (and so reverted), and may undo by command
# what no role owns (a row, a database role).
_LIVE_KEYS = {"converge", "revert"}


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
class Command:
    """A break made directly on running hosts, as an operator's slip or an intruder would make
    it: a shell command run as root on every host of ``hosts`` (an inventory pattern), its
    arguments templated with the host's variables, as in an ad-hoc Ansible run. With ``module``,
    ``run`` holds that module's arguments instead (a file copied from the controller, whose
    content must not appear on a command line)."""

    hosts: str
    run: str
    module: str = "ansible.builtin.shell"


@dataclass(frozen=True)
class Converge:
    """The converge that carries a live mutation's patched files to the lab and, from the
    unpatched tree, takes them (and any drift the commands made) back off it."""

    limit: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Mutation:
    id: str
    control: str
    layer: str
    description: str
    patches: tuple[Patch, ...]
    # pytest arguments: test files, then any -k/-m selection.
    tests: tuple[str, ...]
    commands: tuple[Command, ...] = ()
    converge: Converge | None = None
    revert: tuple[Command, ...] = ()

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
    if not isinstance(entry, dict) or not _KEYS <= set(entry) <= _KEYS | _LIVE_KEYS:
        keys = sorted(entry) if isinstance(entry, dict) else entry
        raise CatalogueError(
            f"{where}: expected the keys {sorted(_KEYS)} (live ones also {sorted(_LIVE_KEYS)}), got {keys}"
        )
    where = f"{where} ({entry['id']})"
    if not isinstance(entry["id"], str) or not _ID.match(entry["id"]):
        raise CatalogueError(f"{where}: id must be lower-case words joined by '-'")
    if entry["control"] not in control_ids:
        raise CatalogueError(f"{where}: control {entry['control']!r} is not in audit/controls.yaml")
    if entry["layer"] not in EVIDENCE_LAYERS:
        raise CatalogueError(f"{where}: layer must be one of {list(EVIDENCE_LAYERS)}")
    changes = _as_list(entry["apply"])
    mutation = Mutation(
        id=entry["id"],
        control=entry["control"],
        layer=entry["layer"],
        description=" ".join(str(entry["description"]).split()),
        patches=tuple(_patch(p, where) for p in changes if _kind(p) != COMMAND),
        tests=tuple(str(t) for t in entry["tests"] or ()),
        commands=tuple(_command(c, where) for c in changes if _kind(c) == COMMAND),
        converge=_converge(entry.get("converge"), where) if "converge" in entry else None,
        revert=tuple(_command(c, where) for c in _as_list(entry.get("revert"))),
    )
    _check_test_layers(mutation, where)
    _check_live_parts(mutation, where)
    return mutation


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _kind(raw: Any) -> Any:
    return raw.get("kind") if isinstance(raw, dict) else None


def _command(raw: Any, where: str) -> Command:
    if _kind(raw) != COMMAND or not all(isinstance(raw.get(k), str) for k in ("hosts", "run")):
        raise CatalogueError(f"{where}: a command needs kind: command, hosts (a pattern), run (a shell line)")
    return Command(raw["hosts"], raw["run"].strip(), str(raw.get("module") or Command.module))


def _converge(raw: Any, where: str) -> Converge:
    limit, tags = (raw.get("limit"), raw.get("tags")) if isinstance(raw, dict) else (None, None)
    if not isinstance(limit, str) or not isinstance(tags, list) or not tags:
        raise CatalogueError(
            f"{where}: converge needs limit (a host pattern) and tags (the roles' tags that carry and "
            "revert the break; a full converge per mutation would not fit the time budget)"
        )
    return Converge(limit, tuple(str(t) for t in tags))


def _check_live_parts(mutation: Mutation, where: str) -> None:
    if not mutation.needs_lab:
        if mutation.commands or mutation.converge or mutation.revert:
            raise CatalogueError(f"{where}: commands, converge and revert belong to live mutations only")
        if not mutation.patches:
            raise CatalogueError(f"{where}: apply changes no file")
        return
    if mutation.converge is None:
        raise CatalogueError(f"{where}: a live mutation needs converge: the converge that reverts it")
    if not mutation.patches and not mutation.commands:
        raise CatalogueError(f"{where}: apply changes nothing")


def _patch(raw: Any, where: str) -> Patch:
    if not isinstance(raw, dict) or raw.get("kind") not in (TEXT, YAML) or not raw.get("file"):
        raise CatalogueError(f"{where}: each apply entry needs kind (text, yaml or command) and file")
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
