"""Reading the audit trail archive's lines; no lab needed (the integration test uses it too)."""

from __future__ import annotations


def first_deliveries(lines: list[str]) -> list[str]:
    """The entries' numbers in the order they first arrived. RELP delivers at least once: after a
    broken session the entry in flight may come again, later; a repeat must be that same entry
    (the same host, program and time written at the source), never a different one."""
    first: dict[str, str] = {}
    for line in lines:
        number, written = line.rsplit("-", 1)[-1], line.split(" ", 2)[2]
        assert first.setdefault(number, written) == written, f"{number} arrived twice, differently: {lines}"
    return list(first)
