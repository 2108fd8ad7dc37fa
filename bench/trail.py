"""How long an entry of the audit trail takes from a host's journal to the archive.

    .venv/bin/python bench/trail.py [--entries 100]

Every host writes numbered entries to its journal (``logger``, ten per second); the archive on the
management host files each with the time it was written at the source and the time it arrived
(rsyslog's timereported and timegenerated, both microseconds). The lab's machines share this
machine's clock, so the difference is the delivery time: journal, rsyslog's queue, RELP in TLS
(through the app's relay for the db), the archive's file. Target: p99 <= 5 s. The management host
files its own trail without sending it and is not timed. The lab must be up
and converged; nothing leaves the lab.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
import uuid
from datetime import datetime

from _common import BenchError, Figure, Lab, main, print_table, verdict, warn_if_busy, write_report

ARCHIVE = "/var/log/tierwall-archive"
TARGET_P99 = 5.0
WAIT_SECONDS = 120
LINE = re.compile(r"^(\S+) peer=\S+ (\S+) (\S+) tierwall-bench-trail(?:\[[^]]*\])?: (\S+)-(\d+)$")


def write_entries(lab: Lab, host: str, marker: str, entries: int) -> None:
    script = f"for i in $(seq 1 {entries}); do logger -t tierwall-bench-trail {marker}-$i; sleep 0.1; done"
    lab.ssh(host, script, timeout=entries + 60)


def archived(lab: Lab, archive_host: str, marker: str) -> list[str]:
    out = lab.ssh(archive_host, f"grep -rhF -- {marker}- {ARCHIVE}/ || true", timeout=60)
    return [line for line in out.splitlines() if LINE.match(line)]


def wait_for(lab: Lab, archive_host: str, marker: str, expected: int) -> list[str]:
    deadline = time.monotonic() + WAIT_SECONDS
    lines = archived(lab, archive_host, marker)
    while len(lines) < expected and time.monotonic() < deadline:
        time.sleep(2)
        lines = archived(lab, archive_host, marker)
    return lines


def delays(lines: list[str]) -> dict[str, list[float]]:
    by_host: dict[str, list[float]] = {}
    for line in lines:
        match = LINE.match(line)
        if match:
            received, written = (datetime.fromisoformat(match[i]) for i in (1, 2))
            by_host.setdefault(match[3], []).append((received - written).total_seconds())
    return by_host


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def body() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100, help="entries per host (default 100)")
    args = parser.parse_args()
    lab = Lab()
    busy = warn_if_busy()
    archive_host, marker = lab.first("mgmt"), f"tierwall-bench-{uuid.uuid4().hex[:12]}"
    # The archive host files its own trail without sending it: rsyslog stamps those entries'
    # arrival with the journal's own time, so there is no delivery to time.
    hosts = sorted(h for h in lab.hosts if h != archive_host)
    for host in hosts:
        print(f"{host}: writing {args.entries} entries")
        write_entries(lab, host, marker, args.entries)
    lines = wait_for(lab, archive_host, marker, args.entries * len(hosts))
    by_host = delays(lines)
    counts = {h: len(by_host.get(h, [])) for h in hosts}
    missing = {h: args.entries - n for h, n in counts.items() if n < args.entries}
    if missing:
        raise BenchError(f"entries missing in the archive after {WAIT_SECONDS} s: {missing}")
    every = [d for values in by_host.values() for d in values]
    figures = []
    for host, values in sorted(by_host.items()):
        p50, high = statistics.median(values), percentile(values, 0.99)
        figures.append(Figure(f"{host}: p50 / p99 / max", f"{p50:.3f} / {high:.3f} / {max(values):.3f} s"))
    p99 = percentile(every, 0.99)
    figures.append(Figure("all hosts: p99", f"{p99:.3f} s", f"<= {TARGET_P99:.0f} s", p99 <= TARGET_P99))
    print_table(figures)
    write_report("trail", {
        "entries_per_host": args.entries, "concurrent_playbooks": busy,
        "seconds": {h: {"p50": statistics.median(v), "p99": percentile(v, 0.99), "max": max(v)}
                    for h, v in by_host.items()},
        "p99_all": p99, "target_p99": TARGET_P99,
    })  # fmt: skip
    return verdict(
        not busy,
        "an ansible-playbook ran beside the measurement",
        f"p99 <= {TARGET_P99:.0f} s",
        p99 <= TARGET_P99,
    )


if __name__ == "__main__":
    main(body)
