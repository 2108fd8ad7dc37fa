"""Scratch copies of the repository: a mutation is applied to a copy, never to the work tree.

Reverting a mutation is deleting its copy, so a crash mid-run can never leave a control broken in
the tree other people work in.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tierwall.mutations.catalogue import TEXT, Patch


class PatchError(ValueError):
    pass


def tracked_files(repo: Path) -> list[str]:
    """What git would commit from this work tree: tracked files and new files it does not ignore."""
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in listing.split("\0") if name})


def pristine_copy(repo: Path, destination: Path) -> Path:
    """The work tree's files as they are now (edits included), with the repository's virtualenv."""
    for name in tracked_files(repo):
        source = repo / name
        # A file deleted in the work tree but still in the index is simply absent, as on disk.
        if source.is_file() or source.is_symlink():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    # Tests find tools through REPO/.venv (ansible-playbook, the policy pack's interpreter).
    (destination / ".venv").symlink_to(repo / ".venv")
    return destination


def clone(pristine: Path, destination: Path) -> Path:
    shutil.copytree(pristine, destination, symlinks=True)
    return destination


def apply_patches(root: Path, patches: tuple[Patch, ...]) -> None:
    for patch in patches:
        target = root / patch.file
        if not target.is_file():
            raise PatchError(f"{patch.file}: no such file in the scratch copy")
        if patch.kind == TEXT:
            target.write_text(_replaced(target.read_text(), patch))
        else:
            target.write_text(_yaml_set(target.read_text(), patch))


def _replaced(text: str, patch: Patch) -> str:
    found = text.count(patch.replace)
    if found != patch.count:
        raise PatchError(
            f"{patch.file}: expected {patch.count} occurrence(s) of {patch.replace!r}, found {found}; "
            "the code changed: update the mutation in audit/mutations.yaml"
        )
    return text.replace(patch.replace, patch.with_)


def _yaml_set(text: str, patch: Patch) -> str:
    document = yaml.safe_load(text)
    node = document
    for key in patch.path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    # Only an existing key is changed: a typo in the path must not add a key nobody reads.
    if not isinstance(node, dict) or patch.path[-1] not in node:
        raise PatchError(f"{patch.file}: no key {'.'.join(patch.path)} to change")
    node[patch.path[-1]] = patch.value
    return yaml.safe_dump(document, sort_keys=False)
