"""Fixtures shared by the unit tests: the lab's lifecycle with every step faked."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tierwall.lab import lifecycle
from tierwall.lab.inventory import lab_config
from tierwall.lab.state import State


class _Refused(AssertionError):
    pass


def _refuse(*args: object, **kwargs: object) -> None:
    raise _Refused(f"a unit test tried to run {args}")


@pytest.fixture
def faked_lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """lifecycle with every step faked; returns the list the fakes append their names to. Nothing
    reaches the machine: lifecycle's ``machines``, ``network``, ``snapshot`` and ``packages`` are
    namespaces holding only these fakes, its ``run`` runs nothing and its ``RUN_DIR`` is temporary."""
    calls: list[str] = []

    def called(name: str, result: object = None):
        def fake(*args: object, **kwargs: object) -> object:
            calls.append(name)
            return result

        return fake

    def start(state: State, host: SimpleNamespace, device: str | None) -> int:
        calls.append("start")
        state.pids[host.name] = 4242
        return 4242

    monkeypatch.setattr(lifecycle, "run", lambda argv, **_: subprocess.CompletedProcess(argv, 0, "", ""))
    monkeypatch.setattr(lifecycle.subprocess, "run", _refuse)
    monkeypatch.setattr(lifecycle.subprocess, "Popen", _refuse)
    monkeypatch.setattr(lifecycle, "RUN_DIR", tmp_path / "var" / "run")
    monkeypatch.setattr(lifecycle, "ARCHIVE_ANCHORS", tmp_path / "lab" / "log-archive")
    monkeypatch.setattr(lifecycle, "require_root", called("require_root"))
    monkeypatch.setattr(lifecycle, "ensure_host_packages", called("ensure_host_packages"))
    monkeypatch.setattr(lifecycle, "ensure_key", called("ensure_key", "ssh-ed25519 AAAA test"))
    monkeypatch.setattr(lifecycle, "ensure_verify_key", called("ensure_verify_key", "ssh-ed25519 AAAA v"))
    monkeypatch.setattr(lifecycle, "lab_config", lambda key, apps, image, verify: lab_config(None, 1, image))
    monkeypatch.setattr(lifecycle, "is_ready", lambda suite: True)
    monkeypatch.setattr(lifecycle, "ensure_base", called("ensure_base", False))
    monkeypatch.setattr(lifecycle, "start_sentinel", called("start_sentinel"))
    monkeypatch.setattr(lifecycle, "start_offsite", called("start_offsite"))
    monkeypatch.setattr(lifecycle, "_access", called("_access", False))
    monkeypatch.setattr(lifecycle, "_write_inventory", called("_write_inventory", {}))
    monkeypatch.setattr(lifecycle, "verify_ssh", called("verify_ssh"))
    monkeypatch.setattr(lifecycle, "_leftovers", lambda: False)
    monkeypatch.setattr(State, "load", classmethod(lambda cls, path=None: None))
    monkeypatch.setattr(State, "save", lambda self, path=None: None)
    monkeypatch.setattr(
        lifecycle,
        "snapshot",
        SimpleNamespace(take=called("snapshot.take", {}), save=called("snapshot.save")),
    )
    monkeypatch.setattr(
        lifecycle,
        "packages",
        SimpleNamespace(harvest=called("harvest", 0), cache_dir=lambda suite: tmp_path / f"packages-{suite}"),
    )
    monkeypatch.setattr(
        lifecycle,
        "network",
        SimpleNamespace(
            resolvers=lambda: ["192.0.2.53"],
            build_network=called("build_network"),
            teardown_network=called("teardown_network"),
            netns_exists=lambda name: False,
        ),
    )
    monkeypatch.setattr(
        lifecycle,
        "machines",
        SimpleNamespace(
            mount_overlay=called("mount_overlay", True),
            first_boot_files=called("first_boot_files"),
            attach_volume=called("attach_volume", "/dev/loop9"),
            start=start,
            wait_running=called("wait_running", "running"),
            stop_all=called("stop_all"),
            pid_alive=lambda pid, needle="": False,
            kill_strays=called("kill_strays", []),
            is_mounted=lambda path: False,
            remove_cgroups=called("remove_cgroups"),
        ),
    )
    return calls


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A committed repository (one tracked file, one ignored directory) for provenance checks."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "notes.txt").write_text("committed\n")
    (repo / ".gitignore").write_text("ignored/\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo), *args],
            check=True,
            capture_output=True,
        )
    return repo
