"""What the host looks like, for "down leaves no trace": compared before ``up`` and after ``down``.

Only stable facts are kept (names, not ifindexes or counters), so two snapshots of an
unchanged host are equal.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tierwall.lab.machines import CGROUP_DIR, cgroup_roots


def _out(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result.stdout


def _nspawn_processes() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if "systemd-nspawn" in cmdline or "tw-sentinel" in cmdline or "/var/lib/tierwall" in cmdline:
            found.append(cmdline)
    return sorted(found)


def take() -> dict[str, object]:
    links = sorted(
        re.sub(r"@\S+", "", line.split()[0]) + " " + line.split()[1]
        for line in _out(["ip", "-br", "link"]).splitlines()
        if line.strip()
    )
    ruleset = re.sub(r"counter packets \d+ bytes \d+", "counter", _out(["nft", "list", "ruleset"]))
    return {
        "netns": sorted(
            line.split()[0] for line in _out(["ip", "netns", "list"]).splitlines() if line.strip()
        ),
        "links": links,
        "loops": sorted(_out(["losetup", "-a"]).splitlines()),
        "mounts": sorted(_out(["findmnt", "-rn", "-o", "TARGET,SOURCE,FSTYPE"]).splitlines()),
        "nft": ruleset,
        "iptables_nat": _out(["iptables-save", "-t", "nat"])
        if _out(["sh", "-c", "command -v iptables-save"])
        else "",
        "routes": sorted(_out(["ip", "route", "show", "table", "all"]).splitlines()),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "processes": _nspawn_processes(),
        "cgroups": sorted(str(root / CGROUP_DIR) for root in cgroup_roots() if (root / CGROUP_DIR).exists()),
    }


def diff(before: dict, after: dict) -> list[str]:
    problems = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            added = sorted(set(b) - set(a))
            removed = sorted(set(a) - set(b))
            problems.append(f"{key}: added {added}, removed {removed}")
        else:
            problems.append(f"{key}: before {a!r}, after {b!r}")
    return problems


def save(path: Path, snap: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(snap, indent=1))


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
