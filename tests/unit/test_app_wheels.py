"""The application's pinned dependencies install from wheels alone on both releases' Python.

The app role exports the application's requirements from uv.lock on the controller (the argv of
tasks/controller.yml's export task, run here as it is written there) and installs them on the app
server with `pip install --require-hashes --only-binary=:all:` into a venv of the host's python3:
CPython 3.11 on Debian 12, 3.13 on Debian 13. A pin without a wheel for that interpreter (a
compiled package locked for 3.11 only) fails the converge on that release. For each release, every
requirement of the export that applies there must have a wheel in uv.lock that the interpreter
accepts (CPython, manylinux x86_64 up to the release's glibc) and whose hash the export carries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging import tags
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from tierwall.paths import REPO

CONTROLLER_TASKS = REPO / "ansible" / "roles" / "app" / "tasks" / "controller.yml"
EXPORT_TASK = "Export the application's dependencies from uv.lock, each with its hashes"


@dataclass(frozen=True)
class Release:
    python: tuple[int, int]
    glibc_minor: int  # glibc 2.N

    def environment(self) -> dict[str, str]:
        """PEP 508 marker values of the release's python3."""
        version = ".".join(map(str, self.python))
        return {
            "python_version": version,
            "python_full_version": f"{version}.0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
        }

    def tags(self) -> set[tags.Tag]:
        """The wheel tags its pip accepts, as packaging computes them for that interpreter and glibc."""
        platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(self.glibc_minor, 4, -1)]
        platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
        interpreter = f"cp{self.python[0]}{self.python[1]}"
        return {
            *tags.cpython_tags(python_version=self.python, platforms=platforms),
            *tags.compatible_tags(python_version=self.python, interpreter=interpreter, platforms=platforms),
        }


RELEASES = {"debian-12": Release((3, 11), 36), "debian-13": Release((3, 13), 41)}


def _export(tmp_path: Path) -> str:
    """The role's export task, run here: the requirements an app server installs."""
    if shutil.which("uv") is None:
        pytest.fail("uv is not installed: `make deps` installs it")
    tasks = yaml.safe_load(CONTROLLER_TASKS.read_text())
    (task,) = [t for block in tasks for t in block.get("block", []) if t["name"] == EXPORT_TASK]
    output = tmp_path / "requirements.txt"
    argv = [str(output) if "requirements.txt" in a else a for a in task["ansible.builtin.command"]["argv"]]
    done = subprocess.run(argv, cwd=REPO, env={**os.environ, **task["environment"]}, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return output.read_text()


def _requirements(text: str) -> list[tuple[Requirement, set[str]]]:
    """(requirement, its sha256 hashes) for each entry of a hash-pinned requirements file."""
    found = []
    for entry in re.split(r"\n(?=[^\s#])", text):
        spec = entry.split("\\", 1)[0].strip()
        if spec and not spec.startswith("#"):
            found.append((Requirement(spec), set(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))))
    return found


def _locked_wheels() -> dict[tuple[str, str], dict[str, str]]:
    """(name, version) -> {wheel file name: sha256} from uv.lock."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {
        (canonicalize_name(p["name"]), p["version"]): {
            w["url"].rsplit("/", 1)[1]: w["hash"].removeprefix("sha256:") for w in p.get("wheels", [])
        }
        for p in lock["package"]
        if "version" in p
    }


def _usable(wheels: dict[str, str], hashes: set[str], release: Release) -> list[str]:
    accepted = release.tags()
    return [name for name, digest in wheels.items()
            if digest in hashes and accepted & set(parse_wheel_filename(name)[3])]  # fmt: skip


def _pinned(requirement: Requirement) -> str:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement} is not pinned"
    return spec.version


@pytest.mark.parametrize("image", sorted(RELEASES))
def test_every_pin_the_app_installs_has_a_wheel_for_the_releases_python(image: str, tmp_path: Path) -> None:
    release = RELEASES[image]
    locked = _locked_wheels()
    applying = [(r, h) for r, h in _requirements(_export(tmp_path))
                if r.marker is None or r.marker.evaluate(release.environment())]  # fmt: skip
    assert {canonicalize_name(r.name) for r, _ in applying} >= {"cffi", "cryptography"}, applying
    missing = [
        f"{r.name}=={_pinned(r)}"
        for r, hashes in applying
        if not _usable(locked.get((canonicalize_name(r.name), _pinned(r)), {}), hashes, release)
    ]
    assert missing == [], (
        f"no hash-pinned wheel for CPython {'.'.join(map(str, release.python))} ({image}) of {missing}: "
        "widen requires-python "
        "in pyproject.toml to that Python and run `uv lock`"
    )


def test_a_wheel_for_another_python_does_not_count() -> None:
    """The check bites: cffi's cp311 wheel (all the lock held for 3.11 alone) serves Debian 12 only."""
    wheel = {"cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl": "0" * 64}
    assert _usable(wheel, {"0" * 64}, RELEASES["debian-12"])
    assert not _usable(wheel, {"0" * 64}, RELEASES["debian-13"])
    assert not _usable(wheel, {"1" * 64}, RELEASES["debian-12"]), "a wheel whose hash is not exported"
    newer_glibc = {"x-1-cp313-cp313-manylinux_2_42_x86_64.whl": "0" * 64}
    assert not _usable(newer_glibc, {"0" * 64}, RELEASES["debian-13"])
