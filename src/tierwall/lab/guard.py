"""The lab's gate for SSH: every connection from this machine to a lab machine passes here.

The lab's addresses are documentation and private ranges that this machine routes to its uplink
whenever the lab is down. So a connection is opened only when the kernel routes its address to
the lab's own internet bridge, checked right before connecting, and every chunk is relayed only
while that bridge still exists: a lab torn down in the middle of a run cuts the connection here
instead of letting its packets leave through the uplink.

Used as SSH's ProxyCommand for the first hop of the lab's inventory (``python -m
tierwall.lab.guard %h %p``); the hops behind it travel inside that connection.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
from pathlib import Path

from tierwall.lab.addressing import INTERNET_BRIDGE

CHUNK = 65536
CONNECT_TIMEOUT = 10


class Uncontained(RuntimeError):
    """The address would leave this machine by another way than the lab's bridge."""


def bridge_present() -> bool:
    return Path("/sys/class/net", INTERNET_BRIDGE).exists()


def route_device(address: str) -> str | None:
    """The device the kernel would send ``address`` through (a lookup: nothing is sent)."""
    done = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    routes = json.loads(done.stdout or "[]")
    return routes[0].get("dev") if routes else None


def require_contained(address: str) -> None:
    """Raise unless ``address`` is routed to the lab's bridge right now."""
    device = route_device(address)
    if device != INTERNET_BRIDGE or not bridge_present():
        raise Uncontained(
            f"{address} is routed via {device or 'nothing'}, not the lab's {INTERNET_BRIDGE}: "
            "the lab is down or being torn down; nothing was sent (bring it up: tierwall lab up)"
        )


def relay(sock: socket.socket, stdin: int = 0, stdout: int = 1) -> None:
    """Copy stdin to the socket and the socket to stdout until either side ends."""
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, "in")
    selector.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _ in selector.select():
            if key.data == "in":
                data = os.read(stdin, CHUNK)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    selector.unregister(stdin)
                    continue
                if not bridge_present():
                    raise Uncontained(f"the lab's {INTERNET_BRIDGE} vanished: connection cut, nothing sent")
                sock.sendall(data)
            else:
                data = sock.recv(CHUNK)
                if not data:
                    return
                os.write(stdout, data)


def main(argv: list[str] | None = None) -> int:
    host, port = (argv if argv is not None else sys.argv[1:])[:2]
    try:
        require_contained(host)
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT) as sock:
            sock.settimeout(None)
            relay(sock)
    except (Uncontained, OSError) as exc:
        print(f"tierwall lab guard: {exc}", file=sys.stderr)
        return 255
    return 0


if __name__ == "__main__":
    sys.exit(main())
