"""bench/baseline.py without the lab: its readers of Lynis's report and ssh-audit's JSON, and its
gate, which opens a connection only after the containment check and relays only while the lab's
bridge exists (here: a listener on this machine's loopback stands for the bastion)."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import baseline
from _common import BenchError

REPORT = """lynis_version=3.0.8
hardening_index=83
warning[]=SSH-7408|Consider hardening SSH configuration|MaxSessions (10 --> 2)|-|
suggestion[]=KRNL-5820|If not required, consider explicit disabling of core dump|-|-|
--- tierwall: lynis.log ---
2026-12-02 10:00:01 Performing test ID SSH-7408 (Check SSH specific defined options)
2026-12-02 10:00:01 Hardening: assigned partial number of hardening points (1 of 3). Currently having 10
2026-12-02 10:00:02 Performing test ID KRNL-5820 (Checking core dumps configuration)
"""


def test_the_lynis_report_is_read() -> None:
    result = baseline.parse_report("db-1", REPORT)
    assert (result.hardening_index, result.version) == (83, "3.0.8")
    assert result.warnings == ["SSH-7408 Consider hardening SSH configuration [MaxSessions (10 --> 2)]"]
    assert result.suggestions == ["KRNL-5820 If not required, consider explicit disabling of core dump"]
    assert result.shortfalls == ["SSH-7408 (Check SSH specific defined options) 1/3"]


def test_ssh_audit_findings_are_collected_by_level() -> None:
    report = {
        "kex": [{"algorithm": "sntrup761x25519-sha512", "notes": {"info": ["ok"]}},
                {"algorithm": "diffie-hellman-group14-sha1", "notes": {"fail": ["SHA-1"], "warn": ["weak"]}}],
        "key": [{"algorithm": "ssh-ed25519", "notes": {}}],
        "cves": [{"name": "CVE-2000-0001", "description": "old"}],
        "additional_notes": ["Potentially insufficient connection throttling detected"],
    }  # fmt: skip
    weak = "kex diffie-hellman-group14-sha1"
    assert baseline.findings(report, "fail") == [f"{weak}: SHA-1", "CVE CVE-2000-0001: old"]
    assert baseline.findings(report, "warn") == [
        f"{weak}: weak", "note: Potentially insufficient connection throttling detected",
    ]  # fmt: skip


def test_the_lynis_tests_that_would_leave_the_lab_are_skipped() -> None:
    assert set(baseline.LYNIS_SKIPPED) >= {"PKGS-7392", "NETW-2704", "NETW-2705"}
    assert "skip-upgrade-test=yes" in baseline.AUDIT


@pytest.fixture
def bastion() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"SSH-2.0-stand-in\r\n" + conn.recv(100))

    threading.Thread(target=answer, daemon=True).start()
    return server, server.getsockname()[1]


def test_the_gate_relays_after_the_check(bastion: tuple[socket.socket, int], monkeypatch) -> None:
    monkeypatch.setattr(baseline, "bridge_present", lambda: True)
    checks: list[str] = []
    gate = baseline.Gate(lambda: checks.append("checked"), "127.0.0.1", bastion[1])
    try:
        with socket.create_connection(("127.0.0.1", gate.port), timeout=5) as client:
            client.sendall(b"hello")
            received = b""
            while len(received) < 23:
                received += client.recv(100)
    finally:
        gate.close()
    assert received == b"SSH-2.0-stand-in\r\nhello"
    assert checks == ["checked"]
    assert gate.errors == []


def test_the_gate_opens_nothing_when_the_lab_is_not_contained(bastion: tuple[socket.socket, int]) -> None:
    def refuse() -> None:
        raise BenchError("the lab is not up: nothing was sent")

    gate = baseline.Gate(refuse, "127.0.0.1", bastion[1])
    try:
        with socket.create_connection(("127.0.0.1", gate.port), timeout=5) as client:
            client.settimeout(5)
            assert client.recv(100) == b""  # closed without a byte from the bastion
    finally:
        gate.close()
    assert gate.errors == ["the lab is not up: nothing was sent"]
    bastion[0].settimeout(0.2)
    with pytest.raises(TimeoutError):
        bastion[0].accept()  # the stand-in bastion saw no connection


def test_containment_is_required_before_anything_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseline.State, "load", classmethod(lambda cls, path=None: None))
    with pytest.raises(BenchError, match="not up"):
        baseline.contained("203.0.113.10")
