"""The base image: Debian 12 by debootstrap, about what Hetzner's debian-12 image holds.

Built once per machine under ``/var/cache/tierwall/base-bookworm`` (read-only lower layer of
every machine's overlay). A stamp file, written last, marks a complete build: a directory
without it (an interrupted build) is rebuilt. The stamp records the package list, so changing
:data:`~tierwall.lab.addressing.BASE_PACKAGES` rebuilds too.

The base has no SSH host keys, an empty machine-id and no hostname: each machine gets its own
in its overlay.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from tierwall.lab.addressing import BASE_DIR, BASE_PACKAGES, BASE_STAMP, BASE_SUITE, MIRROR
from tierwall.lab.system import LabError, log, run

SOURCES = f"""\
deb {MIRROR} {BASE_SUITE} main
deb {MIRROR} {BASE_SUITE}-updates main
deb {MIRROR.replace("/debian", "/debian-security")} {BASE_SUITE}-security main
"""


def recipe() -> dict:
    return {"suite": BASE_SUITE, "variant": "minbase", "packages": sorted(BASE_PACKAGES), "version": 2}


def recipe_id() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def is_ready(base: Path = BASE_DIR) -> bool:
    stamp = base / BASE_STAMP
    try:
        return json.loads(stamp.read_text()).get("id") == recipe_id()
    except (OSError, ValueError):
        return False


def ensure_base(rebuild: bool = False, base: Path = BASE_DIR) -> bool:
    """Build the base image unless a complete one is cached. Returns True when it was built."""
    if not rebuild and is_ready(base):
        return False
    started = time.monotonic()
    tmp = base.with_name(base.name + ".building")
    for stale in (tmp, base):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the base image ({BASE_SUITE}, debootstrap from {MIRROR}) in {base}")
    result = run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            BASE_SUITE,
            str(tmp),
            MIRROR,
        ],
        check=False,
        timeout=1200,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise LabError(
            f"debootstrap failed; the half-built tree stays in {tmp} and is rebuilt next time:\n{tail}"
        )
    _customise(tmp)
    tmp.rename(base)
    (base / BASE_STAMP).write_text(json.dumps({"id": recipe_id(), **recipe(), "built": time.time()}))
    log(f"base image built in {time.monotonic() - started:.0f} s")
    return True


def _customise(root: Path) -> None:
    (root / "etc/apt/sources.list").write_text(SOURCES)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    (root / "etc/hostname").unlink(missing_ok=True)
    run(["systemctl", f"--root={root}", "enable", "ssh.service"])
    # Units that only make sense on real hardware or with udev; they fail in a container.
    for unit in ("systemd-networkd-wait-online.service", "getty-static.service"):
        run(["systemctl", f"--root={root}", "mask", unit], check=False)
    run(["chroot", str(root), "apt-get", "clean"])
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()
