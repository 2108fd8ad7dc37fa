"""Standard-library snippets the live suites run on the hosts (python3 is on every tierwall host).

Each one talks only to a tierwall host (a proxy, an app, the lab sentinel) and prints one line.
"""

from __future__ import annotations

import re
from typing import Any

# Send one request line to an HTTP proxy and print its status line. With a ".invalid" name the
# request can only be answered by the proxy itself: nothing can resolve or reach it.
PROXY_REQUEST = r"""
import socket, sys
proxy, port, method, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
host = target.split("/")[2] if "://" in target else target
s = socket.create_connection((proxy, port), timeout=15)
s.sendall(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
data = b""
while b"\r\n" not in data:
    chunk = s.recv(512)
    if not chunk:
        break
    data += chunk
print(data.split(b"\r\n")[0].decode(errors="replace"))
"""

# Try a TCP connection; print connected / refused / blocked (timeout, unreachable, EPERM).
CONNECT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("blocked", exc)
"""


def proxy_status(host: Any, proxy: str, port: int, method: str, target: str) -> str:
    """The proxy's status line for one request sent from ``host``."""
    result = host.run("python3 -c %s %s %s %s %s", PROXY_REQUEST, proxy, str(port), method, target)
    assert result.rc == 0, f"probe failed on the client: {result.stderr}"
    return result.stdout.strip()


def status_code(line: str) -> int:
    parts = line.split()
    assert len(parts) >= 2, f"not an HTTP status line: {line!r}"
    assert parts[0].startswith("HTTP/"), f"not an HTTP status line: {line!r}"
    return int(parts[1])


def tcp_outcome(host: Any, address: str, port: int, timeout: float = 3.0) -> str:
    result = host.run("python3 -c %s %s %s %s", CONNECT, address, str(port), str(timeout))
    assert result.rc == 0, result.stderr
    return result.stdout.split()[0]


def exposure(host: Any, unit: str) -> float:
    """systemd's score of a unit's sandbox (``systemd-analyze security``: 0 confined, 10 not at all)."""
    done = host.run("systemd-analyze security --no-pager %s", unit)
    assert done.rc == 0, done.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout[-2000:]
    return float(match.group(1))
