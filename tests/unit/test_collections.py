"""ansible/collections/requirements.yml declares every collection tierwall uses, at the shipped version.

The collections come from the locked `ansible` package, not from Galaxy: a role using a collection
the file does not declare, or a pin that differs from what the package installed, would make
`ansible-galaxy collection install -r` elsewhere give a different Ansible than the one tested here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ansible_collections
import pytest
import yaml

from tierwall.paths import REPO

ANSIBLE = REPO / "ansible"
REQUIREMENTS = ANSIBLE / "collections" / "requirements.yml"
INSTALLED = Path(ansible_collections.__path__[0])
BUILTIN = "ansible.builtin"  # part of ansible-core, never declared
# namespace.collection.plugin, the collection part matching an installed collection's directory.
FQCN = re.compile(r"\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\b")
# Task keys that are not modules (a module key is whatever else a task holds).
TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always")


def _declared() -> dict[str, str]:
    document = yaml.safe_load(REQUIREMENTS.read_text())
    return {entry["name"]: entry["version"] for entry in document["collections"]}


def _sources() -> list[Path]:
    files = [p for p in ANSIBLE.rglob("*") if p.suffix in (".yml", ".yaml", ".j2", ".cfg") and p.is_file()]
    return [p for p in files if "collections" not in p.relative_to(ANSIBLE).parts[:1]]


def _installed(namespace: str, name: str) -> bool:
    return (INSTALLED / namespace / name / "MANIFEST.json").is_file()


def _text_fqcns() -> Iterator[tuple[Path, str]]:
    """Every ns.collection.plugin in ansible/ whose collection the ansible package installs.

    Catches modules, lookups, filters and tests in Jinja and callbacks in ansible.cfg; dotted
    words that are not plugins (net.ipv4.ip_forward, deb.debian.org) name no installed collection.
    """
    for path in _sources():
        for match in FQCN.finditer(path.read_text()):
            namespace, name, _ = match.groups()
            if f"{namespace}.{name}" != BUILTIN and _installed(namespace, name):
                yield path, match.group(0)


def _tasks(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in TASK_LISTS:
            yield from _tasks(node.get(key))


def _task_files() -> Iterator[tuple[Path, Any]]:
    for path in (ANSIBLE / "playbooks").glob("*.yml"):
        yield path, yaml.safe_load(path.read_text())
    for folder in ("tasks", "handlers"):
        for path in (ANSIBLE / "roles").glob(f"*/{folder}/*.yml"):
            yield path, yaml.safe_load(path.read_text())


def _module_fqcns() -> Iterator[tuple[Path, str]]:
    """The module of every task given by its full name, installed collection or not (a typo too)."""
    for path, document in _task_files():
        for task in _tasks(document):
            for key in task:
                if FQCN.fullmatch(str(key)):
                    yield path, str(key)


def test_every_collection_used_is_declared() -> None:
    declared = set(_declared())
    used = [*_text_fqcns(), *_module_fqcns()]
    assert used, "no collection plugin found in ansible/: the search itself is broken"
    undeclared = sorted(
        f"{path.relative_to(REPO)}: {fqcn}"
        for path, fqcn in used
        if fqcn.rsplit(".", 1)[0] not in declared | {BUILTIN}
    )
    assert not undeclared, "used but not in requirements.yml:\n" + "\n".join(undeclared)


def test_every_declared_collection_is_used() -> None:
    used = {fqcn.rsplit(".", 1)[0] for _, fqcn in [*_text_fqcns(), *_module_fqcns()]}
    assert sorted(set(_declared()) - used) == []


@pytest.mark.parametrize(("collection", "version"), sorted(_declared().items()))
def test_declared_version_is_the_one_the_ansible_package_ships(collection: str, version: str) -> None:
    namespace, name = collection.split(".")
    manifest = INSTALLED / namespace / name / "MANIFEST.json"
    assert manifest.is_file(), f"{collection} is not installed by the locked ansible package"
    installed = json.loads(manifest.read_text())["collection_info"]["version"]
    assert version == installed, f"{collection}: requirements.yml pins {version}, ansible ships {installed}"


def test_the_callback_ansible_cfg_enables_is_found() -> None:
    """Guards the text search: ansible.cfg's callback is among the plugins it reports."""
    assert (ANSIBLE / "ansible.cfg", "ansible.posix.profile_tasks") in set(_text_fqcns())
