"""Small helpers around the host: running commands, root check, host packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tierwall.lab.addressing import HOST_PACKAGES, HOST_SERVICES_OFF


class LabError(RuntimeError):
    """Something the operator must act on; the message says what."""


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str],
    check: bool = True,
    input: str | None = None,
    timeout: float = 600,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, input=input, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise LabError(f"command failed ({result.returncode}): {' '.join(argv)}\n{detail}")
    return result


def ok(argv: Sequence[str]) -> bool:
    return run(argv, check=False).returncode == 0


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (network namespaces, bridges, nftables, loop devices, systemd-nspawn): "
            "run it as root, e.g. `sudo .venv/bin/tierwall lab up`"
        )


def ensure_host_packages() -> None:
    missing = sorted({pkg for cmd, pkg in HOST_PACKAGES.items() if shutil.which(cmd) is None})
    if not missing:
        return
    log(f"installing host packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env
    )
    if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():
        # Debian starts nginx on all of this machine's addresses at installation, the lab's
        # "internet" bridge included; the lab runs its own instance in a namespace instead.
        run(["systemctl", "disable", "--now", *HOST_SERVICES_OFF], check=False)
