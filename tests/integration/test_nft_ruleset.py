"""The live FW-01 reader (tests/testinfra/nft_ruleset.py) against real `nft -j` output.

The firewall role's ruleset for db-1 is rendered as Ansible renders it, loaded into a throw-away
network namespace (`unshare --net`: nothing on this machine changes), then changed the way an
intruder or a hurried admin would change it, and read back with `nft -j list ruleset`. Each
change that opens the host must show as a problem or as a rule the reader does not understand;
each change that does not open it (an accept in another table while ours still drops, a jump to
a chain that returns) must not raise a false alarm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
    reason="loading a ruleset needs root, nft and unshare (a private network namespace per test)",
)


# The template test renders exactly as Ansible does; reuse it rather than render a second way.
sys.path.insert(0, str(REPO / "tests" / "unit"))
import test_firewall_render as render_module  # noqa: E402

nft_ruleset = render_module.nft_ruleset
TOPOLOGY = render_module.TOPOLOGIES["3apps"]
HOST = "db-1"
POSTGRES = ("app", "db", 5432, "tcp")
SSH = ("app", "db", 22, "tcp")


def read_after(tmp_path: Path, commands: list[str]) -> Any:
    """Load db-1's rendered ruleset, apply ``commands`` (nft -f syntax), read it back."""
    text, info = render_module.render(TOPOLOGY, HOST)
    base, change = tmp_path / "nftables.conf", tmp_path / "change.nft"
    base.write_text(text)
    change.write_text("".join(f"{c}\n" for c in commands))
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", 'nft -f "$1" && nft -f "$2" && nft -j list ruleset', "sh",
         str(base), str(change)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, f"nft refused:\n{done.stderr}\n{commands}"
    ruleset: dict[str, Any] = json.loads(done.stdout)
    return nft_ruleset.read_flows(ruleset, TOPOLOGY, info["tier"], info["addresses"], info["interfaces"])


def test_rendered_ruleset_reads_back_as_the_matrix(tmp_path: Path) -> None:
    """No false alarm: the role's own ruleset is exactly the db's flows, every rule understood."""
    reading = read_after(tmp_path, [])
    assert reading.not_understood == []
    assert reading.problems == []
    assert reading.policies == {"input": "drop", "forward": "drop", "output": "drop"}
    assert reading.flows == nft_ruleset.matrix_flows(TOPOLOGY, "db")


OPENINGS = {
    # The classic: read naively, this looks like the established rule; it accepts every new packet.
    "ct-state-not-established": (
        ["insert rule inet tierwall input ct state != established,related accept"],
        "input accepts ct state {new, invalid, untracked} ",
    ),
    "vmap-accept": (
        ["insert rule inet tierwall input tcp dport vmap { 5432 : accept }"],
        "input accepts dport {5432} l4proto {tcp} ",
    ),
    "jump-to-accepting-chain": (
        ["add chain inet tierwall sneak", "add rule inet tierwall sneak tcp dport 6432 accept",
         "insert rule inet tierwall input jump sneak"],
        "input accepts dport {6432} l4proto {tcp} ",
    ),
    "goto-to-accepting-chain": (
        ["add chain inet tierwall sneak", "add rule inet tierwall sneak udp dport 161 accept",
         'insert rule inet tierwall input iifname "ens11" goto sneak'],
        "input accepts dport {161} iifname {ens11} l4proto {udp} ",
    ),
    "any-ipv4-source": (
        ["insert rule inet tierwall input ip saddr 0.0.0.0/0 accept"],
        "input accepts family {ip} ",
    ),
    "any-tcp": (
        ["insert rule inet tierwall input meta l4proto tcp accept"],
        "input accepts l4proto {tcp} ",
    ),
    "rate-limited-accept": (
        ["insert rule inet tierwall input limit rate 1/second accept"],
        "input accepts every packet ",
    ),
    "flow-widened-to-all-sources": (
        ['insert rule inet tierwall input iifname "ens11" ip daddr 10.10.2.30 tcp dport 5432 accept'],
        "input accepts daddr {10.10.2.30/32} dport {5432} family {ip} iifname {ens11} l4proto {tcp} ",
    ),
    "output-to-anywhere": (
        ['insert rule inet tierwall output oifname "ens11" accept'],
        "output accepts oifname {ens11} ",
    ),
    "forward-opened": (
        ["insert rule inet tierwall forward ct state new accept"],
        "forward accepts ct state {new} ",
    ),
}


@pytest.mark.parametrize("case", sorted(OPENINGS))
def test_an_opening_is_reported(tmp_path: Path, case: str) -> None:
    """Each hole shows as a problem naming exactly the packets it lets through."""
    commands, expected = OPENINGS[case]
    reading = read_after(tmp_path, commands)
    assert reading.not_understood == []
    assert any(p.startswith(expected) for p in reading.problems), reading.problems


NOT_UNDERSTOOD = {
    "wildcard-interface": ['insert rule inet tierwall input iifname "eth*" accept'],
    "named-set": ["add set inet tierwall peers { type ipv4_addr; }",
                  "insert rule inet tierwall input ip saddr @peers accept"],
    "mark": ["insert rule inet tierwall input meta mark set 1"],
    "tcp-flags": ["insert rule inet tierwall input tcp flags syn accept"],
    "dnat-before-filter": [
        "add table ip nat",
        "add chain ip nat prerouting { type nat hook prerouting priority dstnat; policy accept; }",
        "add rule ip nat prerouting tcp dport 8080 dnat to 10.10.2.30:5432",
    ],
}


@pytest.mark.parametrize("case", sorted(NOT_UNDERSTOOD))
def test_a_rule_the_reader_cannot_model_is_reported(tmp_path: Path, case: str) -> None:
    """What the reader cannot evaluate exactly is named, so FW-01 fails instead of guessing."""
    reading = read_after(tmp_path, NOT_UNDERSTOOD[case])
    assert len(reading.not_understood) == 1, reading.not_understood


def test_not_understood_accept_is_also_read_as_accepting_everything(tmp_path: Path) -> None:
    """An accept rule the reader cannot model counts as possibly accepting any packet reaching it."""
    reading = read_after(tmp_path, NOT_UNDERSTOOD["wildcard-interface"])
    assert any(p.startswith("input accepts every packet ") for p in reading.problems), reading.problems


OTHER_TABLE = "add chain inet other input {{ type filter hook input priority 10; policy {policy}; }}"


def test_accept_in_another_table_does_not_open_while_ours_drops(tmp_path: Path) -> None:
    """A packet must pass every base chain of its hook: another table's accept bypasses nothing."""
    reading = read_after(tmp_path, [
        "add table inet other", OTHER_TABLE.format(policy="accept"),
        "add rule inet other input tcp dport 5432 accept",
    ])
    assert reading.not_understood == []
    assert reading.problems == []
    assert reading.flows == nft_ruleset.matrix_flows(TOPOLOGY, "db")


def test_drop_in_another_table_closes_a_flow(tmp_path: Path) -> None:
    """Another table's drop is final: the flow it drops is no longer read as accepted."""
    reading = read_after(tmp_path, [
        "add table inet other", OTHER_TABLE.format(policy="accept"),
        "add rule inet other input tcp dport 5432 drop",
    ])
    assert reading.problems == []
    assert reading.flows == nft_ruleset.matrix_flows(TOPOLOGY, "db") - {POSTGRES}


def test_another_table_opens_when_it_is_the_only_base_chain(tmp_path: Path) -> None:
    """With our input chain gone, the other table's chain alone decides: its accept opens the port."""
    reading = read_after(tmp_path, [
        "flush chain inet tierwall input", "delete chain inet tierwall input",
        "add table inet other", OTHER_TABLE.format(policy="drop"),
        "add rule inet other input tcp dport 5432 accept",
    ])
    assert "input" not in reading.policies
    assert any(p.startswith("input accepts dport {5432} l4proto {tcp} ") for p in reading.problems), \
        reading.problems
    assert SSH not in reading.flows


def test_ip_only_table_leaves_ipv6_to_the_others(tmp_path: Path) -> None:
    """An ip table's policy accept never sees IPv6; with our chain gone, IPv6 is wide open, IPv4 is not."""
    reading = read_after(tmp_path, [
        "flush chain inet tierwall input", "delete chain inet tierwall input",
        "add table ip other",
        "add chain ip other input { type filter hook input priority 0; policy drop; }",
    ])
    assert [p for p in reading.problems if p.startswith("input accepts")] == [
        p for p in reading.problems if p.startswith("input accepts family {ip6} ")
    ]
    assert any(p.startswith("input accepts family {ip6} ") for p in reading.problems), reading.problems


def test_verdict_map_drop_and_return_are_followed(tmp_path: Path) -> None:
    """vmap drop closes what it names; a chain that returns first hands packets back unaccepted."""
    reading = read_after(tmp_path, [
        "insert rule inet tierwall input tcp dport vmap { 22 : drop }",
        "add chain inet tierwall detour", "add rule inet tierwall detour return",
        "add rule inet tierwall detour tcp dport 6432 accept",
        "insert rule inet tierwall input jump detour",
    ])
    assert reading.not_understood == []
    assert reading.problems == []
    assert reading.flows == nft_ruleset.matrix_flows(TOPOLOGY, "db") - {SSH}


def test_goto_never_comes_back_to_the_chain_that_went(tmp_path: Path) -> None:
    """After a goto, the target's end is the calling chain's end: the rules after the goto never run."""
    reading = read_after(tmp_path, [
        "add chain inet tierwall detour",
        'insert rule inet tierwall input iifname "ens11" goto detour',
    ])
    assert reading.problems == []
    assert reading.flows == nft_ruleset.matrix_flows(TOPOLOGY, "db") - {SSH, POSTGRES}
