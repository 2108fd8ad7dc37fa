"""The grades external auditors give the lab: Lynis in every machine, ssh-audit against the bastion.

    sudo .venv/bin/python bench/baseline.py [--rate-test] [--keep-lynis]

Lynis (the Debian package, installed in each machine through its own apt path: the proxy direct,
the app through the squid, the db through the app's apt-cacher-ng) audits the machine; its
hardening index and findings are recorded. Skipped: its check for a newer Lynis and the tests that
query name servers or refresh apt's lists (they would send traffic beyond the lab's own flows); a
package that was not there before is purged afterwards, unless --keep-lynis.

ssh-audit (the dev dependency) audits the bastion's sshd from the operator's address, the way an
external auditor's client meets it. Its connections pass a local gate (127.0.0.1 -> the bastion's
public address, port 22) that opens each one only after the containment check, and relays only
while the lab's bridge exists. Its DHEat connection-rate test is skipped unless --rate-test: the
per-connection check slows the rate the test measures, so it would understate what it looks for.

Before every connection (each ssh into a machine, each of ssh-audit's connections) the lab must be
up, its network healthy (the unreachable routes for its private ranges, its nftables table) and the
bastion's address routed to the lab's bridge (tierwall.lab.guard.require_contained); otherwise the
run stops with nothing sent. Targets: Lynis hardening index >= 80 on every machine, no ssh-audit
failure. Writes .lab/reports/bench/baseline.json.
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _common import BIN, BenchError, Figure, Lab, main, print_table, run, verdict, write_report

from tierwall.lab.guard import Uncontained, bridge_present, require_contained
from tierwall.lab.inventory import lab_config
from tierwall.lab.network import network_healthy
from tierwall.lab.state import State

HARDENING_TARGET = 80
SSH_PORT = 22
# Lynis tests that would send traffic beyond the lab's flows: name server queries, apt's list refresh.
LYNIS_SKIPPED = ("NETW-2704", "NETW-2705", "PKGS-7392")
CHUNK = 65536


# -- containment -----------------------------------------------------------------------------------


def contained(bastion: str) -> None:
    """Raise unless the lab is up, its network healthy and ``bastion`` routed to its bridge, now."""
    state = State.load()
    if state is None or state.phase != "up":
        raise BenchError("the lab is not up: nothing was sent (tierwall lab up, make converge)")
    topology = lab_config(None, state.app_count, state.image).topology()
    problems = network_healthy(state, topology)
    if problems:
        raise BenchError(f"the lab's containment is not in place ({'; '.join(problems)}): nothing was sent")
    try:
        require_contained(bastion)
    except Uncontained as exc:
        raise BenchError(str(exc)) from None


def on_machine(lab: Lab, bastion: str, host: str, script: str, timeout: float = 600) -> str:
    contained(bastion)
    return lab.ssh(host, script, timeout=timeout)


# -- Lynis -----------------------------------------------------------------------------------------

INSTALLED = "dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n' | awk '$1 == \"ii\" { print $2 }' | sort"
INSTALL = f"""
{INSTALLED} > /root/tierwall-baseline.before
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lynis >/dev/null
{INSTALLED} | comm -13 /root/tierwall-baseline.before -
rm -f /root/tierwall-baseline.before
"""
AUDIT = """
work=$(mktemp -d -p /root tierwall-lynis.XXXXXX)
printf '%s\\n' skip-upgrade-test=yes {skips} > "$work/tierwall.prf"
lynis audit system --quick --no-colors --profile "$work/tierwall.prf" \\
  --report-file "$work/report.dat" --logfile "$work/lynis.log" >/dev/null 2>&1 || true
cat "$work/report.dat"
echo "{separator}"
grep -E 'Performing test ID|Hardening: assigned partial' "$work/lynis.log" || true
rm -rf "$work"
"""
# Between the report file and the lines of Lynis's log that name where points were lost.
LOG_SEPARATOR = "--- tierwall: lynis.log ---"
PARTIAL = re.compile(r"assigned partial number of hardening points \((\d+) of (\d+)\)")
TEST_ID = re.compile(r"Performing test ID (\S+) \((.*)\)$")


@dataclass
class LynisResult:
    host: str
    hardening_index: int | None = None
    version: str = ""
    warnings: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    # Each test that earned fewer hardening points than it could: "ID assigned/max description".
    shortfalls: list[str] = field(default_factory=list)


def parse_shortfalls(log: str) -> list[str]:
    """From Lynis's log: every partial award of hardening points, with the test that made it."""
    found, test = [], "?"
    for line in log.splitlines():
        if started := TEST_ID.search(line):
            test = f"{started[1]} ({started[2]})"
        elif partial := PARTIAL.search(line):
            found.append(f"{test} {partial[1]}/{partial[2]}")
    return found


def parse_report(host: str, output: str) -> LynisResult:
    """Lynis's report file: key=value lines, findings as warning[]=ID|text|details|solution and
    suggestion[]=...; after LOG_SEPARATOR, the log lines parse_shortfalls reads."""
    report, _, log = output.partition(LOG_SEPARATOR)
    result = LynisResult(host, shortfalls=parse_shortfalls(log))
    for line in report.splitlines():
        key, _, value = line.partition("=")
        if key == "hardening_index" and value.strip().isdigit():
            result.hardening_index = int(value)
        elif key == "lynis_version":
            result.version = value.strip()
        elif key in ("warning[]", "suggestion[]"):
            test, text, details = [*value.split("|"), "", "", ""][:3]
            details = "" if details in ("", "-") else f" [{details}]"
            found = result.warnings if key == "warning[]" else result.suggestions
            found.append(f"{test} {text}{details}".strip())
    return result


def audit_machine(lab: Lab, bastion: str, host: str, keep: bool) -> LynisResult:
    print(f"{host}: installing Lynis through its own apt path ...")
    added = on_machine(lab, bastion, host, INSTALL).split()
    try:
        print(f"{host}: running Lynis ...")
        skips = " ".join(f"skip-test={test}" for test in LYNIS_SKIPPED)
        script = AUDIT.format(skips=skips, separator=LOG_SEPARATOR)
        report = on_machine(lab, bastion, host, script, timeout=1200)
    finally:
        if added and not keep:
            # Debian 13 marks e2fsprogs, which Lynis pulls in, Protected; it was not there before.
            on_machine(lab, bastion, host, "DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "
                       "--allow-remove-essential " + " ".join(added) + " >/dev/null")  # fmt: skip
    result = parse_report(host, report)
    if result.hardening_index is None:
        raise BenchError(f"{host}: Lynis wrote no hardening index (report: {report[:300]!r})")
    return result


# -- ssh-audit through the gate ----------------------------------------------------------------------


class Gate:
    """127.0.0.1:<port> -> ``address``:``port``: each client gets its own upstream connection, opened
    only after ``check`` passes and relayed only while the lab's bridge exists."""

    def __init__(self, check: Callable[[], None], address: str, port: int) -> None:
        self.check, self.address, self.upstream_port = check, address, port
        self.errors: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, name="baseline-gate", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            try:
                self.check()
                upstream = socket.create_connection((self.address, self.upstream_port), timeout=10)
            except (BenchError, OSError) as exc:
                self.errors.append(str(exc))
                return
            with upstream:
                self._relay(client, upstream)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        while True:
            for key, _ in selector.select(timeout=60):
                try:
                    data = key.fileobj.recv(CHUNK)  # type: ignore[union-attr]
                except OSError:
                    return
                if not data:
                    return
                if key.fileobj is client and not bridge_present():
                    self.errors.append("the lab's bridge vanished: connection cut, nothing more sent")
                    return
                key.data.sendall(data)

    def close(self) -> None:
        self.server.close()


def findings(report: dict[str, Any], level: str) -> list[str]:
    """ssh-audit's notes of ``level`` (fail, warn) on every algorithm it was offered."""
    found = []
    for section in ("kex", "key", "enc", "mac"):
        for entry in report.get(section) or []:
            for note in (entry.get("notes") or {}).get(level) or []:
                found.append(f"{section} {entry.get('algorithm')}: {note}")
    if level == "fail":
        found += [f"CVE {c.get('name')}: {c.get('description')}" for c in report.get("cves") or []]
    else:  # the DHEat rate test's verdict, when it ran
        found += [f"note: {note}" for note in report.get("additional_notes") or []]
    return found


def audit_bastion(bastion: str, rate_test: bool) -> dict[str, Any]:
    gate = Gate(lambda: contained(bastion), bastion, SSH_PORT)
    try:
        contained(bastion)
        skip = [] if rate_test else ["--skip-rate-test"]
        argv = [str(BIN / "ssh-audit"), "-j", "-p", str(gate.port), *skip, "127.0.0.1"]
        done = run(argv, timeout=600, check=False)
    finally:
        gate.close()
    if gate.errors:
        raise BenchError(f"the gate refused or cut a connection: {gate.errors[0]}")
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"ssh-audit gave no JSON (exit {done.returncode}): {done.stderr[-500:]}") from None
    return {"target": f"{bastion}:{SSH_PORT}", "exit": done.returncode, "rate_test": rate_test,
            "banner": (report.get("banner") or {}).get("raw"), "fail": findings(report, "fail"),
            "warn": findings(report, "warn"), "raw": report}  # fmt: skip


# -- the run ---------------------------------------------------------------------------------------


def figures(lynis: list[LynisResult], ssh: dict[str, Any]) -> list[Figure]:
    rows = [
        Figure(f"Lynis hardening index, {r.host}", str(r.hardening_index), f">= {HARDENING_TARGET}",
               (r.hardening_index or 0) >= HARDENING_TARGET)
        for r in lynis
    ]  # fmt: skip
    rows.append(Figure("ssh-audit failures, bastion", str(len(ssh["fail"])), "0", not ssh["fail"]))
    rows.append(Figure("ssh-audit warnings, bastion", str(len(ssh["warn"]))))
    return rows


def body(args: argparse.Namespace) -> int:
    lab = Lab()
    bastion = str(lab.hosts[lab.first("proxy")]["tierwall_public_address"])
    contained(bastion)
    results: list[LynisResult] = []
    for host in lab.hosts:
        results.append(audit_machine(lab, bastion, host, args.keep_lynis))
    print("bastion: running ssh-audit from the operator's address ...")
    ssh = audit_bastion(bastion, args.rate_test)
    rows = figures(results, ssh)
    print_table(rows)
    for finding in ssh["fail"] + ssh["warn"]:
        print(f"  ssh-audit: {finding}")
    for result in results:
        for warning in result.warnings:
            print(f"  lynis {result.host} warning: {warning}")
        for shortfall in result.shortfalls:
            print(f"  lynis {result.host} points lost: {shortfall}")
    write_report("baseline", {
        "lynis": [vars(r) for r in results], "lynis_skipped_tests": list(LYNIS_SKIPPED), "ssh_audit": ssh,
        "figures": [vars(f) for f in rows],
    })  # fmt: skip
    holds = all(f.holds for f in rows if f.holds is not None)
    return verdict(True, "", f"Lynis >= {HARDENING_TARGET} everywhere, ssh-audit without failure", holds)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate-test", action="store_true", help="run ssh-audit's DHEat connection-rate test")
    parser.add_argument("--keep-lynis", action="store_true", help="leave the Lynis package in the machines")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    main(lambda: body(arguments))
