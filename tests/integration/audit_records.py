"""The kernel's audit records as they happen, read from its multicast group (what journald reads):
no audit daemon is needed, and one that runs keeps its own copy. Root only (CAP_AUDIT_READ)."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

NETLINK_AUDIT = 9
READLOG_GROUP = 1  # AUDIT_NLGRP_READLOG, as a bit mask
SYSCALL, EXECVE, PATH = 1300, 1309, 1302
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_SERIAL = re.compile(r"^audit\([0-9.]+:(\d+)\): ")
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


@dataclass
class Event:
    """The records of one system call: its SYSCALL fields, the names of its PATH records and the
    arguments of its EXECVE record."""

    fields: dict[str, str] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.fields.get("key", "").strip('"')


def _fields(text: str) -> dict[str, str]:
    return {name: value.strip('"') if name != "key" else value for name, value in _FIELD.findall(text)}


class Reader:
    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        self._socket.bind((0, READLOG_GROUP))
        self._socket.settimeout(0.2)
        self.events: dict[str, Event] = {}

    def close(self) -> None:
        self._socket.close()

    def _take(self, data: bytes) -> None:
        length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data)
        text = data[_HEADER.size : length].rstrip(b"\0").decode(errors="replace")
        serial = _SERIAL.match(text)
        if not serial:
            return
        event = self.events.setdefault(serial.group(1), Event())
        found = _fields(text[serial.end() :])
        if kind == SYSCALL:
            event.fields = found
        elif kind == PATH and "name" in found:
            event.names.append(found["name"])
        elif kind == EXECVE:
            event.argv = [found[f"a{i}"] for i in range(int(found.get("argc", 0))) if f"a{i}" in found]

    def wait_for(self, wanted: Callable[[Event], bool], seconds: float = 5.0) -> list[Event]:
        """Read until an event satisfies ``wanted`` (or the time is up); the events that do."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                self._take(self._socket.recv(65536))
            found = [event for event in self.events.values() if wanted(event)]
            if found:
                return found
        return []
