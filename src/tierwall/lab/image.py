"""The base image: Debian by debootstrap, about what Hetzner's debian-13 (or debian-12) image holds.

Which release is the lab's setting ``TIERWALL_LAB_IMAGE``: ``debian-13`` (the default, Debian 13
"trixie", what stacks run) or ``debian-12`` (Debian 12 "bookworm", only as the starting point of
the upgrade drill: a stack can no longer be created on it). ``up`` reads it and
records it in the lab's state; every other lab command follows the record, so ``status``,
``restart``, ``ssh`` and ``down`` act on the lab as it was built whatever their environment says.

Built once per machine and release under ``/var/cache/tierwall/base-<suite>`` (read-only lower
layer of every machine's overlay), so a switch of release rebuilds the machines but debootstraps
each release only once. A stamp file, written last, marks a complete build: a directory without
it (an interrupted build) is rebuilt. The stamp records the suite and the package list, so
changing :data:`~tierwall.lab.addressing.BASE_PACKAGES` rebuilds too.

The base has no SSH host keys, an empty machine-id and no hostname: each machine gets its own
in its overlay.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from tierwall.config import DEBIAN_SUITES, DEFAULT_IMAGE
from tierwall.lab.addressing import BASE_PACKAGES, BASE_STAMP, CACHE_DIR, MIRROR
from tierwall.lab.system import LabError, log, run

IMAGE_VARIABLE = "TIERWALL_LAB_IMAGE"


def requested_image(environ: Mapping[str, str] = os.environ) -> str:
    """The image ``up`` builds the lab from: ``TIERWALL_LAB_IMAGE``, unset or empty for the default."""
    image = environ.get(IMAGE_VARIABLE, "").strip() or DEFAULT_IMAGE
    if image not in DEBIAN_SUITES:
        raise LabError(
            f"{IMAGE_VARIABLE}={image!r} is not an image the lab can build: set it to "
            f"{' or '.join(DEBIAN_SUITES)} (`export {IMAGE_VARIABLE}=debian-12`), "
            f"or unset it for {DEFAULT_IMAGE}"
        )
    return image


def suite_of(image: str) -> str:
    """debootstrap's suite for a stack image: debian-12 -> bookworm, debian-13 -> trixie."""
    return DEBIAN_SUITES[image]


def base_dir(suite: str) -> Path:
    return CACHE_DIR / f"base-{suite}"


def sources(suite: str) -> str:
    security = MIRROR.replace("/debian", "/debian-security")
    return (
        f"deb {MIRROR} {suite} main\n"
        f"deb {MIRROR} {suite}-updates main\n"
        f"deb {security} {suite}-security main\n"
    )


def recipe(suite: str) -> dict:
    return {"suite": suite, "variant": "minbase", "packages": sorted(BASE_PACKAGES), "version": 2}


def recipe_id(suite: str) -> str:
    return hashlib.sha256(json.dumps(recipe(suite), sort_keys=True).encode()).hexdigest()[:16]


def is_ready(suite: str, base: Path | None = None) -> bool:
    stamp = (base or base_dir(suite)) / BASE_STAMP
    try:
        return json.loads(stamp.read_text()).get("id") == recipe_id(suite)
    except (OSError, ValueError):
        return False


def ensure_base(suite: str, rebuild: bool = False, base: Path | None = None) -> bool:
    """Build the suite's base image unless a complete one is cached. Returns True when it was built."""
    base = base or base_dir(suite)
    if not rebuild and is_ready(suite, base):
        return False
    started = time.monotonic()
    tmp = base.with_name(base.name + ".building")
    for stale in (tmp, base):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the base image ({suite}, debootstrap from {MIRROR}) in {base}")
    _debootstrap(suite, tmp)
    _customise(tmp, suite)
    tmp.rename(base)
    stamp = {"id": recipe_id(suite), **recipe(suite), "built": time.time()}
    (base / BASE_STAMP).write_text(json.dumps(stamp))
    log(f"base image built in {time.monotonic() - started:.0f} s")
    return True


def _debootstrap(suite: str, target: Path) -> None:
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", suite, str(target)]
    result = run([*argv, MIRROR], check=False, timeout=1200)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise LabError(
            f"debootstrap failed; the half-built tree stays in {target} and is rebuilt next time:\n{tail}"
        )


def _customise(root: Path, suite: str) -> None:
    (root / "etc/apt/sources.list").write_text(sources(suite))
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
