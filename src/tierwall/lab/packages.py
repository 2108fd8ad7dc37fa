"""The lab's package cache: the Debian packages earlier converges downloaded, offered to the next.

A fresh lab's converge spent most of its time downloading the same packages again, machine by
machine, along the egress chain (proxy direct, app through squid, db through apt-cacher-ng and
squid). When the lab goes down, the ``.deb`` files each machine's apt downloaded are kept here;
the next lab's machines of the same release see them as a read-only layer of their disks, under
``/var/cache/apt/archives``, where apt uses a file only if its size and hash match the package
lists it has just fetched through the chain (a newer version is still downloaded). The roles
decide what is installed; this cache only remembers what they installed. Per package and
architecture only the newest version is kept, in ``/var/cache/tierwall/packages-<suite>``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tierwall.lab.addressing import CACHE_DIR

ARCHIVES = Path("var/cache/apt/archives")


def cache_dir(suite: str) -> Path:
    """One cache per release: another release's files would never match its package lists, and
    keeping only the newest version per package would let one release's files push out the other's."""
    return CACHE_DIR / f"packages-{suite}"


def lower_dirs(cache: Path, base: Path) -> str:
    """overlayfs ``lowerdir``: the package layer above the base image, when it holds packages."""
    if any((cache / ARCHIVES).glob("*.deb")):
        return f"{cache}:{base}"
    return str(base)


def _identity(deb: Path) -> tuple[str, str, str]:
    """(package, version, architecture) from apt's file name ``name_version_arch.deb``."""
    name, version, arch = deb.stem.split("_", 2)
    return name, version.replace("%3a", ":"), arch


def _newer(version: str, than: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", version, "gt", than], check=False).returncode == 0


def harvest(uppers: list[Path], cache: Path) -> int:
    """Copy the packages found in the machines' upper layers into the cache; returns how many
    were added. Call it only while no machine's overlay is mounted (the cache is their lower
    layer, which must not change under a mounted overlay)."""
    found = sorted(deb for upper in uppers for deb in (upper / ARCHIVES).glob("*.deb"))
    if not found:
        return 0
    target = cache / ARCHIVES
    target.mkdir(parents=True, exist_ok=True)
    kept = {_identity(deb)[::2]: deb for deb in target.glob("*.deb")}
    added = 0
    for deb in found:
        name, version, arch = _identity(deb)
        current = kept.get((name, arch))
        if current is not None and not _newer(version, _identity(current)[1]):
            continue
        copy = target / deb.name
        shutil.copy2(deb, copy)
        if current is not None:
            current.unlink()
        kept[(name, arch)] = copy
        added += 1
    return added
