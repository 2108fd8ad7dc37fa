"""The machine-wide record of what the lab created (``/var/lib/tierwall/lab/state.json``).

Every step of ``up`` records what it is about to create *before* creating it and saves at
once, so a killed ``up`` leaves a state from which ``down`` removes exactly what exists.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tierwall.lab.addressing import STATE_FILE

# What every lab ran before the state recorded its image.
LEGACY_IMAGE = "debian-12"


@dataclass
class State:
    phase: str = "building"  # building | up
    app_count: int = 1
    # The stack image the machines run (TIERWALL_LAB_IMAGE when `up` built them). A state written
    # before the lab could build another release has no such key: those labs ran Debian 12.
    image: str = LEGACY_IMAGE
    hosts: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)  # links in the root namespace
    routes: list[str] = field(default_factory=list)  # "unreachable <cidr>" routes in the root ns
    nft_table: str | None = None
    ip_forward_before: str | None = None
    loops: dict[str, str] = field(default_factory=dict)  # /dev/loopN -> backing file
    cgroups: list[str] = field(default_factory=list)  # the lab's cgroup trees (one per hierarchy)
    mounts: list[str] = field(default_factory=list)  # overlay mount points
    pids: dict[str, int] = field(default_factory=dict)  # host or "sentinel-<port>" -> pid
    volume: dict[str, str] = field(default_factory=dict)  # host -> loop device given to it
    boot: dict[str, str] = field(default_factory=dict)  # host -> running|degraded
    run_netns_mount: bool | None = None  # True when the lab made /run/netns a mount point
    key_owner: str | None = None  # LAB_DIR of the clone whose key the machines accept
    public_key: str | None = None
    started_at: float | None = None

    def save(self, path: Path = STATE_FILE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path = STATE_FILE) -> State | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return cls(phase="corrupt")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
