"""The firewall role's ruleset, rendered for every tier and loaded into a real (throw-away) kernel.

The promise (FW-01): each host's nftables drops everything on input, forward and output, and
accepts exactly the flows of the matrix that its tier takes part in, from and to exactly the
declared hosts' addresses. The template is rendered as Ansible renders it (same Jinja settings,
the role's own filter plugin), then loaded with `nft -f` inside `unshare --net` (a network
namespace that dies with the command: nothing on this machine changes) and read back with
`nft -j list ruleset`, so the assertions are about what the kernel accepted, not about text.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jinja2
import pytest
import yaml

from tierwall.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "firewall"
ADMIN_CIDRS = ["203.0.113.1/32", "2001:db8:a::/48"]
PUBLIC = {"proxy-1": "203.0.113.10", "proxy-2": "203.0.113.11"}

# Deliberately different interface names per host: the role must find them by address.
IFNAMES = {
    "proxy": {"public": "eth0", "frontend": "enp7s0"},
    "app": {"frontend": "ens10", "backend": "enp8s0"},
    "db": {"backend": "ens11"},
    "mgmt": {"frontend": "ens12"},
}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


plugin = _load("tierwall_firewall_rules", ROLE / "filter_plugins" / "firewall_rules.py")
nft_ruleset = _load("tierwall_nft_ruleset", REPO / "tests" / "testinfra" / "nft_ruleset.py")


def fake_facts(tier: str, addresses: dict[str, str], public: str | None) -> dict[str, Any]:
    """ansible_facts as the setup module reports them, for the interfaces of one host."""
    facts: dict[str, Any] = {"interfaces": ["lo"], "lo": {"ipv4": {"address": "127.0.0.1"}}}
    held = dict(addresses)
    if public:
        held["public"] = public
    for network, address in held.items():
        ifname = IFNAMES[tier][network]
        facts["interfaces"].append(ifname)
        facts[ifname] = {"device": ifname, "ipv4": {"address": address, "netmask": "255.255.255.0"}}
    return facts


def _role_vars() -> dict[str, Any]:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    internal = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    return {**defaults, **internal}


def render(topology: dict[str, Any], host: str, *, dhcp: bool = False) -> tuple[str, dict[str, Any]]:
    """Render templates/nftables.conf.j2 for ``host`` with Ansible's Jinja settings."""
    info = topology["hosts"][host]
    tier, addresses = info["tier"], info["addresses"]
    public = PUBLIC.get(host)
    facts = fake_facts(tier, addresses, public)
    context = {
        **_role_vars(),
        "ansible_managed": "Ansible managed",
        "inventory_hostname": host,
        "firewall_topology": topology,
        "firewall_tier": tier,
        "firewall_addresses": addresses,
        "firewall_public_address": public or "",
        "firewall_public_address6": "",
        "firewall_admin_cidrs": ADMIN_CIDRS,
        "firewall_dhcp_client": dhcp,
    }
    context["__firewall_interfaces"] = plugin.firewall_interfaces(facts, addresses, public)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,  # Ansible's template module default
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(plugin.FilterModule().filters())
    text = env.get_template("nftables.conf.j2").render(context)
    return text, {"tier": tier, "addresses": addresses, "public": public,
                  "interfaces": context["__firewall_interfaces"]}


def _primer_from_role() -> str:
    """The conntrack primer exactly as tasks/ruleset.yml loads it on a first converge."""
    tasks = yaml.safe_load((ROLE / "tasks" / "ruleset.yml").read_text())
    (task,) = [t for t in tasks if t["name"].startswith("Start connection tracking")]
    primer = task["ansible.builtin.command"]["stdin"]
    return primer.replace("{{ __firewall_primer_table }}", _role_vars()["__firewall_primer_table"])


needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
    reason="loading a ruleset needs root, nft and unshare (a private network namespace per test)",
)


def load_and_list(tmp_path: Path, text: str) -> dict[str, Any]:
    """nft -c, then nft -f and nft -j list ruleset, all inside a private, throw-away netns."""
    path = tmp_path / "nftables.conf"
    path.write_text(text)
    check = subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, f"nft -c refused the ruleset:\n{check.stderr}\n{text}"
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", 'nft -f "$1" && nft -j list ruleset', "sh", str(path)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, f"nft -f failed:\n{done.stderr}"
    return json.loads(done.stdout)


TOPOLOGIES = {
    "1app": build_topology(app_count=1).as_dict(),
    "3apps": build_topology(app_count=3).as_dict(),
    "2proxies": build_topology(proxy_count=2, app_count=2).as_dict(),
}
CASES = [(name, host) for name, topo in TOPOLOGIES.items() for host in topo["hosts"]]


@pytest.mark.control("FW-01")
@needs_netns
@pytest.mark.parametrize(("topology_name", "host"), CASES, ids=[f"{t}-{h}" for t, h in CASES])
def test_ruleset_accepts_exactly_the_matrix(tmp_path: Path, topology_name: str, host: str) -> None:
    """Default deny in, out and forward; the accepted flows are exactly this tier's flows of the matrix."""
    topology = TOPOLOGIES[topology_name]
    text, info = render(topology, host)
    ruleset = load_and_list(tmp_path, text)
    reading = nft_ruleset.read_flows(
        ruleset, topology, info["tier"], info["addresses"], info["interfaces"],
        public_address=info["public"], admin_cidrs=ADMIN_CIDRS,
    )
    assert reading.policies == {"input": "drop", "forward": "drop", "output": "drop"}
    assert reading.problems == []
    assert reading.flows == nft_ruleset.matrix_flows(topology, info["tier"])


@needs_netns
def test_only_tierwall_table_remains_and_debian_default_is_removed(tmp_path: Path) -> None:
    """Loading over Debian's default `inet filter` table and the first-run primer leaves only ours.

    Loading twice proves the file is re-loadable (the handler runs it on every change)."""
    topology = TOPOLOGIES["1app"]
    text, _ = render(topology, "db-1")
    path = tmp_path / "nftables.conf"
    path.write_text(text)
    debian_default = (
        "table inet filter {\n chain input { type filter hook input priority filter; policy accept; }\n}\n"
        + _primer_from_role()
    )
    script = 'printf %s "$1" | nft -f - && nft -f "$2" && nft -f "$2" && nft -j list tables'
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, "sh", debian_default, str(path)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["nftables"]
    tables = [(t["table"]["family"], t["table"]["name"]) for t in listed if "table" in t]
    assert tables == [("inet", "tierwall")]


@needs_netns
def test_db_never_accepts_the_proxy(tmp_path: Path) -> None:
    """The db's ruleset mentions no proxy address and no public interface: proxy -> db is impossible."""
    topology = TOPOLOGIES["3apps"]
    text, info = render(topology, "db-1")
    ruleset = load_and_list(tmp_path, text)
    proxies = {a for h in topology["hosts"].values() if h["tier"] == "proxy" for a in h["addresses"].values()}
    dumped = json.dumps(ruleset)
    assert not any(f'"{p}"' in dumped for p in proxies)
    reading = nft_ruleset.read_flows(ruleset, topology, "db", info["addresses"], info["interfaces"])
    assert all("proxy" not in key[:2] and "internet" not in key[:2] for key in reading.flows)
    # The db's only peers are app hosts, and it accepts from all of them (app_count=3).
    _, rules = nft_ruleset.rules_of(ruleset)
    sources = [r.matches.get("ip saddr") for r in rules if r.chain == "input" and r.matches.get("ip saddr")]
    apps = frozenset(h["addresses"]["backend"] for h in topology["hosts"].values() if h["tier"] == "app")
    assert sources
    assert all(s == apps for s in sources)


@needs_netns
def test_reader_catches_a_hand_added_hole(tmp_path: Path) -> None:
    """The reader used by the live suites flags an accept rule the matrix does not declare."""
    topology = TOPOLOGIES["1app"]
    text, info = render(topology, "db-1")
    hole = '        iifname "ens11" tcp dport 5432 accept\n'
    marker = (
        'ct state established,related accept comment "infra: replies and ICMP errors of accepted flows"\n'
    )
    text = text.replace(marker, marker + hole, 1)
    ruleset = load_and_list(tmp_path, text)
    reading = nft_ruleset.read_flows(ruleset, topology, "db", info["addresses"], info["interfaces"])
    assert any("5432" in p for p in reading.problems), reading.problems


def test_interfaces_are_found_by_address_not_by_name() -> None:
    """Interface names come from the facts; an address no interface holds stops the role."""
    facts = fake_facts("app", {"frontend": "10.10.1.20", "backend": "10.10.2.20"}, None)
    assert plugin.firewall_interfaces(facts, {"frontend": "10.10.1.20", "backend": "10.10.2.20"}) == {
        "frontend": "ens10",
        "backend": "enp8s0",
    }
    with pytest.raises(plugin.FirewallError, match=r"10\.10\.2\.99"):
        plugin.firewall_interfaces(facts, {"backend": "10.10.2.99"})


def test_admin_ssh_only_from_admin_cidrs_and_internet_only_on_public_interface() -> None:
    """Operator SSH is limited to the admin CIDRs (per family); internet flows use the public interface only.
    """
    topology = TOPOLOGIES["1app"]
    info = topology["hosts"]["proxy-1"]
    interfaces = {"public": "eth0", "frontend": "enp7s0"}
    rules = plugin.firewall_rules(topology, "proxy", info["addresses"], interfaces,
                                  public_address=PUBLIC["proxy-1"], admin_cidrs=ADMIN_CIDRS)
    ssh = [r for r in rules if r["chain"] == "input" and r["port"] == 22]
    assert {(r["family"], tuple(r["saddr"])) for r in ssh} == {("ip", ("203.0.113.1/32",)),
                                                               ("ip6", ("2001:db8:a::/48",))}
    assert all(r["iface"] == "eth0" for r in rules if "internet" in r["flow"] or "admin" in r["flow"])
    assert all(r["iface"] == "enp7s0" for r in rules if "app" in r["flow"])
    with pytest.raises(plugin.FirewallError, match="admin_cidrs is empty"):
        plugin.firewall_rules(topology, "proxy", info["addresses"], interfaces,
                              public_address=PUBLIC["proxy-1"], admin_cidrs=[])


@needs_netns
def test_dhcp_client_rules_are_infrastructure_only(tmp_path: Path) -> None:
    """With DHCP on (Hetzner), only the udp 68<->67 lease exchange is added; the flows stay the matrix."""
    topology = TOPOLOGIES["1app"]
    text, info = render(topology, "app-1", dhcp=True)
    ruleset = load_and_list(tmp_path, text)
    reading = nft_ruleset.read_flows(ruleset, topology, "app", info["addresses"], info["interfaces"])
    assert reading.problems == []
    assert reading.flows == nft_ruleset.matrix_flows(topology, "app")
