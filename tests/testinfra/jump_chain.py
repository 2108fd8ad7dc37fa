"""The SSH jump chain as the topology declares it: where each tier may open SSH to."""

from __future__ import annotations

from typing import Any


def next_hops(topology: dict[str, Any], tier: str) -> list[str]:
    """HOST:PORT of every host the flow matrix lets ``tier`` open SSH to, on the flow's network
    (the proxy: the apps' frontend addresses; an app: the db's backend address; the db: none)."""
    ssh = topology["ports"]["ssh"]
    return [
        f"{host['addresses'][flow['network']]}:{ssh}"
        for flow in topology["flows"]
        if flow["source"] == tier and flow["port"] == ssh and flow["protocol"] == "tcp"
        for host in topology["hosts"].values()
        if host["tier"] == flow["destination"]
    ]
