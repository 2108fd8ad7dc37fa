"""Read a live (or freshly loaded) nftables ruleset back into flows of the matrix.

Both the firewall template's tests (which load the rendered file into a throw-away network
namespace) and the testinfra suites (which read `nft -j list ruleset` on a host) use this to
answer one question: which (source, destination, port, protocol) flows does this host accept?

The reader is conservative. It evaluates the ruleset as the kernel does, over sets of packets
rather than rule by rule:

- every base chain hooked at input, forward or output, in every ip/ip6/inet table, counts: a
  packet is accepted at a hook only if EVERY base chain of that hook accepts it (an accept ends
  one chain; a drop anywhere is final), and an ip-only table lets IPv6 through untouched;
- rules are taken in order with first-match semantics; ==, !=, <, >, sets, ranges, prefixes,
  `ct state` sets, vmap, jump, goto and return are followed exactly (goto's return skips the
  chain that went to it); counter and log change nothing; a rate limit may or may not match;
- anything else (a named set, a wildcard interface name, a mark, NAT, a chain at another hook
  that does more than count, an unknown field or statement) is listed in ``not_understood``.

What the hook accepts is then split into packet classes. Each class is either infrastructure of
a known, narrow shape (loopback, established/related, on-link ICMPv6 neighbour discovery, the
DHCP lease exchange) or exactly one flow: one interface, one protocol, one port, this host's
own address and exactly one tier's addresses (or the admin CIDRs, or any address on the public
interface). Any other accepted class is a problem, so a hand-added hole cannot hide.

Standard library only: the live suites import it on the operator's machine as it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

INTERNET, ADMIN, PUBLIC = "internet", "admin", "public"
TABLE = ("inet", "tierwall")
HOOKS = ("input", "forward", "output")
FlowKey = tuple[str, str, int, str]
Span = tuple[int, int]


# -- sets of integers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Values:
    """A set of integers as sorted, disjoint, non-adjacent closed intervals."""

    spans: tuple[Span, ...]

    @classmethod
    def of(cls, spans: Iterable[Span]) -> Values:
        merged: list[list[int]] = []
        for low, high in sorted(s for s in spans if s[0] <= s[1]):
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        return cls(tuple((a, b) for a, b in merged))

    @classmethod
    def one(cls, value: int) -> Values:
        return cls(((value, value),))

    def __bool__(self) -> bool:
        return bool(self.spans)

    def __or__(self, other: Values) -> Values:
        return Values.of(self.spans + other.spans)

    def __and__(self, other: Values) -> Values:
        out = []
        for a, b in self.spans:
            for c, d in other.spans:
                if max(a, c) <= min(b, d):
                    out.append((max(a, c), min(b, d)))
        return Values.of(out)

    def __sub__(self, other: Values) -> Values:
        out = list(self.spans)
        for c, d in other.spans:
            out = [piece for a, b in out for piece in ((a, min(b, c - 1)), (max(a, d + 1), b))]
        return Values.of(out)

    def __le__(self, other: Values) -> bool:
        return not (self - other)

    def single(self) -> int | None:
        """The one value of the set, or None when it holds none or several."""
        if len(self.spans) == 1 and self.spans[0][0] == self.spans[0][1]:
            return self.spans[0][0]
        return None


def _span(low: int, high: int) -> Values:
    return Values.of([(low, high)])


# -- the packet space ----------------------------------------------------------------------------
# Addresses of both families share one line: IPv4 first, IPv6 after it, so one interval set can
# say "IPv4 only". -1 is the value of a field the packet does not have (the port of an ICMP
# packet, the hop limit of an IPv4 one): `tcp dport != 22` must not match an ICMP packet.

V4 = _span(0, 2**32 - 1)
V6 = _span(2**32, 2**32 + 2**128 - 1)
ABSENT = Values.one(-1)
IP, IP6 = 0, 1
NAME_IDS = 2**31  # interface names and ICMP types are interned to ids below this
CT_STATES = {"new": 0, "established": 1, "related": 2, "invalid": 3, "untracked": 4}
PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "esp": 50, "ah": 51,
             "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "udplite": 136}
PORTED = Values.of([(6, 6), (17, 17), (33, 33), (132, 132), (136, 136)])
ND_TYPES = ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert", "nd-router-solicit")

DOMAINS: dict[str, Values] = {
    "family": _span(IP, IP6),
    "saddr": V4 | V6,
    "daddr": V4 | V6,
    "l4proto": _span(0, 255),
    "sport": _span(-1, 65535),
    "dport": _span(-1, 65535),
    "ct state": _span(0, len(CT_STATES) - 1),
    "iifname": _span(0, NAME_IDS),
    "oifname": _span(0, NAME_IDS),
    "icmp type": _span(-1, NAME_IDS),
    "icmpv6 type": _span(-1, NAME_IDS),
    "ip ttl": _span(-1, 255),
    "ip6 hoplimit": _span(-1, 255),
}
# A field exists only when another dimension has these values (the field, that dimension, values).
PRESENCE = (
    ("sport", "l4proto", PORTED),
    ("dport", "l4proto", PORTED),
    ("icmp type", "l4proto", Values.one(1)),
    ("icmpv6 type", "l4proto", Values.one(58)),
    ("ip ttl", "family", Values.one(IP)),
    ("ip6 hoplimit", "family", Values.one(IP6)),
)

# Splitting on the interface first keeps what the next rule (usually on another interface or
# port) matches in one piece, so an accepted flow comes out as one cube, not as fragments.
SPLIT_ORDER = ("iifname", "oifname", "family", "l4proto", "dport", "sport", "icmp type", "icmpv6 type",
               "saddr", "daddr", "ip ttl", "ip6 hoplimit", "ct state")
Cube = dict[str, Values]  # a set of packets: one value set per dimension; a missing one is the domain


def _get(cube: Cube, dim: str) -> Values:
    return cube.get(dim, DOMAINS[dim])


def _family_rules(c: dict[str, Values]) -> None:
    for dim in ("saddr", "daddr"):
        if c["family"] == Values.one(IP):
            c[dim] &= V4
        elif c["family"] == Values.one(IP6):
            c[dim] &= V6
        if c[dim] <= V4:
            c["family"] &= Values.one(IP)
        if c[dim] <= V6:
            c["family"] &= Values.one(IP6)


def _presence_rules(c: dict[str, Values]) -> None:
    for dim, cond, present in PRESENCE:
        if not (c[cond] & present):
            c[dim] &= ABSENT
        elif c[cond] <= present:
            c[dim] -= ABSENT
        if not (c[dim] & ABSENT):
            c[cond] &= present
        elif c[dim] <= ABSENT:
            c[cond] -= present


def normal(cube: Cube) -> Cube | None:
    """``cube`` with the dependencies between fields applied, or None when no packet is in it."""
    c = {dim: _get(cube, dim) for dim in DOMAINS}
    for _ in range(4):
        before = dict(c)
        _family_rules(c)
        _presence_rules(c)
        if any(not v for v in c.values()):
            return None
        if c == before:
            break
    return {dim: v for dim, v in c.items() if v != DOMAINS[dim]}


def meet(a: Cube, b: Cube) -> Cube | None:
    """The packets in both ``a`` and ``b``."""
    return normal({dim: _get(a, dim) & _get(b, dim) for dim in set(a) | set(b)})


def minus(a: Cube, b: Cube) -> list[Cube]:
    """The packets of ``a`` not in ``b``, as disjoint cubes."""
    if meet(a, b) is None:
        return [a]
    pieces, prefix = [], dict(a)
    for dim in sorted(b, key=SPLIT_ORDER.index):
        piece = normal({**prefix, dim: _get(prefix, dim) - b[dim]})
        if piece is not None:
            pieces.append(piece)
        prefix[dim] = _get(prefix, dim) & b[dim]
    return pieces


def _merge_one(cubes: list[Cube]) -> list[Cube] | None:
    for i, a in enumerate(cubes):
        for j in range(i + 1, len(cubes)):
            b = cubes[j]
            differ = [d for d in set(a) | set(b) if _get(a, d) != _get(b, d)]
            if len(differ) <= 1:
                union = normal({**a, **{d: _get(a, d) | _get(b, d) for d in differ}})
                rest = cubes[:i] + cubes[i + 1:j] + cubes[j + 1:]
                return [*rest, union] if union is not None else rest
    return None


def merged(cubes: list[Cube]) -> list[Cube]:
    """The same packets in fewer cubes: two cubes that differ in one dimension become one."""
    while (fewer := _merge_one(cubes)) is not None:
        cubes = fewer
    return cubes


def within(a: Cube, b: Cube) -> bool:
    """Every packet of ``a`` is in ``b``."""
    return all(_get(a, dim) <= values for dim, values in b.items())


# -- rules as packet sets ----------------------------------------------------------------------


class NotUnderstood(Exception):
    """A rule uses something this reader does not model exactly."""


class Names:
    """Interns interface names and ICMP type names to integers, so they fit interval sets."""

    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}

    def id(self, value: Any) -> int:
        return self.ids.setdefault(value, len(self.ids) + 1)

    def name(self, ident: int) -> Any:
        return next((k for k, v in self.ids.items() if v == ident), f"<other {ident}>")


# (protocol, field) of a payload -> (dimension, what the match implies about the packet)
PAYLOADS: dict[tuple[str, str], tuple[str, Cube]] = {
    ("ip", "saddr"): ("saddr", {"family": Values.one(IP)}),
    ("ip", "daddr"): ("daddr", {"family": Values.one(IP)}),
    ("ip6", "saddr"): ("saddr", {"family": Values.one(IP6)}),
    ("ip6", "daddr"): ("daddr", {"family": Values.one(IP6)}),
    ("ip", "protocol"): ("l4proto", {"family": Values.one(IP)}),
    ("ip", "ttl"): ("ip ttl", {"family": Values.one(IP)}),
    ("ip6", "hoplimit"): ("ip6 hoplimit", {"family": Values.one(IP6)}),
    ("icmp", "type"): ("icmp type", {"l4proto": Values.one(1), "family": Values.one(IP)}),
    ("icmpv6", "type"): ("icmpv6 type", {"l4proto": Values.one(58), "family": Values.one(IP6)}),
    **{
        (proto, port): (port, {"l4proto": PORTED if proto == "th" else Values.one(PROTOCOLS[proto])})
        for proto in ("tcp", "udp", "sctp", "dccp", "udplite", "th")
        for port in ("sport", "dport")
    },
}
METAS = {"iifname": "iifname", "iif": "iifname", "oifname": "oifname", "oif": "oifname",
         "l4proto": "l4proto", "nfproto": "family"}


def _left(left: Any) -> tuple[str, Cube]:
    """The dimension an nft JSON left-hand side reads, and what reading it implies."""
    if isinstance(left, Mapping) and "meta" in left and left["meta"].get("key") in METAS:
        return METAS[left["meta"]["key"]], {}
    if isinstance(left, Mapping) and "payload" in left:
        key = (left["payload"].get("protocol"), left["payload"].get("field"))
        if key in PAYLOADS:
            return PAYLOADS[key]
    if isinstance(left, Mapping) and left.get("ct") == {"key": "state"}:
        return "ct state", {}
    raise NotUnderstood(f"cannot model the field {left}")


def _address(value: Any, family: int) -> Values:
    if isinstance(value, Mapping) and "prefix" in value:
        net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}", strict=False)
        low, high = int(net.network_address), int(net.broadcast_address)
    elif isinstance(value, Mapping) and "range" in value:
        low, high = (int(ipaddress.ip_address(v)) for v in value["range"])
    elif isinstance(value, str) and not value.startswith("@"):
        low = high = int(ipaddress.ip_address(value))
    else:
        raise NotUnderstood(f"cannot model the address {value!r}")
    offset = V6.spans[0][0] if family == IP6 else 0
    return _span(low + offset, high + offset) & (V6 if family == IP6 else V4)


def _scalar(dim: str, value: Any, names: Names) -> int:
    if dim in ("iifname", "oifname"):
        if not isinstance(value, str) or value.startswith("@") or value.endswith("*"):
            raise NotUnderstood(f"cannot model the interface {value!r} (named set or wildcard)")
        return names.id(value)
    if dim in ("icmp type", "icmpv6 type"):
        if isinstance(value, str) and value.startswith("@"):
            raise NotUnderstood(f"cannot model the named set {value}")
        return names.id(value)
    tables = {"ct state": CT_STATES, "l4proto": PROTOCOLS, "family": {"ipv4": IP, "ipv6": IP6}}
    if isinstance(value, str) and value in tables.get(dim, {}):
        return tables[dim][value]
    if isinstance(value, int) and not isinstance(value, bool) and dim not in ("ct state", "family"):
        return value
    raise NotUnderstood(f"cannot model {dim} {value!r}")


def _elements(right: Any) -> list[Any]:
    """The elements a right-hand side lists: an anonymous set, a flag list, or one value."""
    if isinstance(right, Mapping) and "set" in right:
        return list(right["set"])
    if isinstance(right, Mapping) and "|" in right:
        return list(right["|"])
    return list(right) if isinstance(right, list) else [right]


def _values(dim: str, right: Any, family: int | None, names: Names) -> Values:
    """The values of ``dim`` that an nft JSON right-hand side names."""
    out = Values(())
    for element in _elements(right):
        if dim in ("saddr", "daddr"):
            if family is None:
                raise NotUnderstood("an address without its family")
            out |= _address(element, family)
        elif isinstance(element, Mapping) and "range" in element:
            low, high = (_scalar(dim, v, names) for v in element["range"])
            out |= _span(low, high)
        else:
            out |= Values.one(_scalar(dim, element, names))
    return out


def _present(dim: str, family: int | None) -> Values:
    if dim in ("saddr", "daddr"):
        return V6 if family == IP6 else V4
    return DOMAINS[dim] - ABSENT


def _compare(op: str, dim: str, value: Values, family: int | None) -> Values:
    """The values of ``dim`` for which `<dim> <op> <value>` holds."""
    present = _present(dim, family)
    if op in ("==", "in"):
        return value
    if op == "!=":
        return present - value
    bound = value.single()
    if bound is None or op not in ("<", "<=", ">", ">="):
        raise NotUnderstood(f"cannot model the comparison {op} {value}")
    low, high = present.spans[0][0], present.spans[-1][1]
    limits = {"<": (low, bound - 1), "<=": (low, bound), ">": (bound + 1, high), ">=": (bound, high)}
    return present & _span(*limits[op])


def condition(match: Mapping[str, Any], names: Names) -> Cube:
    """The packets one `match` expression lets through."""
    dim, implied = _left(match["left"])
    family = implied["family"].single() if "family" in implied else None
    values = _values(dim, match["right"], family, names)
    return {**implied, dim: _compare(match["op"], dim, values, family)}


# -- chains --------------------------------------------------------------------------------------

VERDICTS = ("accept", "drop", "reject", "return", "continue", "jump", "goto")
NO_OPS = ("counter", "log")


@dataclass
class Step:
    """One rule, reduced to the packets it matches and what it does with them."""

    label: str
    cube: Cube | None  # None: the rule's matches exclude each other, so it never matches
    verdict: str | None = None
    target: str = ""
    maybe: bool = False  # a rate limit: the rule matches some of these packets, not all
    vmap: list[tuple[Cube, str, str]] = field(default_factory=list)  # (packets, verdict, target)


def _verdict(expr: Mapping[str, Any]) -> tuple[str, str] | None:
    for word in VERDICTS:
        if word in expr:
            target = expr[word].get("target", "") if isinstance(expr[word], Mapping) else ""
            return word, str(target)
    return None


def _vmap(expr: Mapping[str, Any], names: Names) -> list[tuple[Cube, str, str]]:
    dim, implied = _left(expr["key"])
    data = expr["data"]
    if not isinstance(data, Mapping) or "set" not in data:
        raise NotUnderstood(f"cannot model the verdict map {data!r}")
    family = implied["family"].single() if "family" in implied else None
    out = []
    for key, verdict in data["set"]:
        word = _verdict(verdict)
        if word is None:
            raise NotUnderstood(f"cannot model the verdict {verdict!r}")
        out.append(({**implied, dim: _values(dim, key, family, names)}, *word))
    return out


def step_of(rule: Mapping[str, Any], names: Names, label: str) -> Step:
    """Reduce one rule of `nft -j list ruleset`; raises NotUnderstood for anything not modelled."""
    step, cube = Step(label, {}), {}
    for expr in rule.get("expr", []):
        if "match" in expr:
            cube = meet(cube, condition(expr["match"], names)) if cube is not None else None
        elif "limit" in expr:
            step.maybe = True
        elif "vmap" in expr:
            step.vmap = _vmap(expr["vmap"], names)
        elif _verdict(expr):
            step.verdict, step.target = _verdict(expr)
        elif not any(word in expr for word in NO_OPS):
            raise NotUnderstood(f"cannot model the statement {expr}")
    step.cube = cube
    return step


@dataclass
class Table:
    """The chains of one table, their rules reduced to steps, and the rules not understood."""

    family: str
    name: str
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: dict[str, list[Step]] = field(default_factory=dict)
    not_understood: dict[str, list[str]] = field(default_factory=dict)


def _label(rule: Mapping[str, Any]) -> str:
    comment = f" ({rule['comment']!r})" if rule.get("comment") else ""
    return f"{rule['family']} {rule['table']} {rule['chain']} rule {rule.get('handle', '?')}{comment}"


def tables_of(ruleset: Mapping[str, Any], names: Names) -> dict[tuple[str, str], Table]:
    """Every table of an `nft -j list ruleset` document, with its rules as steps."""
    tables: dict[tuple[str, str], Table] = {}
    for item in ruleset.get("nftables", []):
        for kind in ("chain", "rule"):
            if kind not in item:
                continue
            body = item[kind]
            table = tables.setdefault((body["family"], body["table"]), Table(body["family"], body["table"]))
            if kind == "chain":
                table.chains[body["name"]] = body
                table.steps.setdefault(body["name"], [])
                continue
            label = _label(body)
            try:
                table.steps.setdefault(body["chain"], []).append(step_of(body, names, label))
            except (NotUnderstood, ValueError, KeyError, TypeError) as error:
                table.not_understood.setdefault(body["chain"], []).append(f"{label}: {error}")
                # Read conservatively: a rule we cannot model may accept any packet that reaches it.
                surrogate = Step(f"{label} (not understood)", {}, "accept", maybe=True)
                table.steps.setdefault(body["chain"], []).append(surrogate)
    return tables


@dataclass
class Run:
    """The packets a chain accepted, and those it hands back to whoever called it."""

    accepted: list[tuple[Cube, str]] = field(default_factory=list)
    back: list[Cube] = field(default_factory=list)


def _split(packets: list[Cube], cube: Cube | None) -> tuple[list[Cube], list[Cube]]:
    """(the packets that match ``cube``, those that do not)."""
    if cube is None:
        return [], packets
    hit = [m for p in packets if (m := meet(p, cube)) is not None]
    miss = [piece for p in packets for piece in minus(p, cube)]
    return hit, miss


def _apply(table: Table, step: Step, hit: list[Cube], run: Run, depth: int) -> list[Cube]:
    """Do ``step``'s verdict to ``hit``; returns the packets that go on to the next rule."""
    verdict = step.verdict
    if verdict == "accept":
        run.accepted.extend((p, step.label) for p in hit)
    elif verdict in ("jump", "goto"):
        called = run_chain(table, step.target, hit, depth + 1)
        run.accepted.extend(called.accepted)
        if verdict == "jump":
            return called.back
        # A goto does not come back here: what the target returns goes to whoever called us.
        run.back.extend(called.back)
    elif verdict == "return":
        run.back.extend(hit)
    elif verdict in (None, "continue"):
        return hit
    return []


def _dispatch(table: Table, step: Step, hit: list[Cube], run: Run, depth: int) -> list[Cube]:
    """Apply a plain verdict, or a verdict map entry by entry (what no entry matches goes on)."""
    if not step.vmap:
        return _apply(table, step, hit, run, depth)
    kept: list[Cube] = []
    for cube, verdict, target in step.vmap:
        entry, hit = _split(hit, cube)
        kept += _apply(table, Step(step.label, cube, verdict, target), entry, run, depth)
    return kept + hit


def run_chain(table: Table, name: str, packets: list[Cube], depth: int = 0) -> Run:
    """Send ``packets`` through chain ``name`` of ``table``, rule by rule, first match wins."""
    if depth > 16 or name not in table.steps:
        raise NotUnderstood(f"chain {name!r} of {table.family} {table.name} is missing or nested too deep")
    run = Run()
    for step in table.steps[name]:
        hit, miss = _split(packets, step.cube)
        kept = _dispatch(table, step, hit, run, depth)
        # Under a rate limit a matching packet may also not match: it may go on as well.
        packets = miss + (hit if step.maybe else kept)
    run.back.extend(packets)
    return run


# -- hooks ---------------------------------------------------------------------------------------

FAMILIES = {"inet": None, "ip": IP, "ip6": IP6}  # the tables whose filter chains see IP traffic
CONNTRACK_PRIORITY = -200  # before this, on output, a packet has no connection-tracking state yet


def _reachable(table: Table, name: str) -> list[str]:
    seen: list[str] = []
    todo = [name]
    while todo:
        chain = todo.pop()
        if chain in seen:
            continue
        seen.append(chain)
        for step in table.steps.get(chain, []):
            todo += [step.target] if step.target else []
            todo += [target for _, _, target in step.vmap if target]
    return seen


def _modelled(table: Table, chain: Mapping[str, Any]) -> bool:
    return table.family in FAMILIES and chain.get("type") == "filter" and chain.get("hook") in HOOKS


def _uses_ct(step: Step) -> bool:
    cubes = [step.cube or {}] + [cube for cube, _, _ in step.vmap]
    return any("ct state" in cube for cube in cubes)


def _outside_model(table: Table, chain: Mapping[str, Any], reachable: list[str]) -> list[str]:
    """Why a base chain this reader does not evaluate might still change what is accepted."""
    where = f"{table.family} {table.name} chain {chain['name']} (hook {chain.get('hook')})"
    found = [] if chain.get("policy", "accept") == "accept" else [f"{where}: policy {chain['policy']}"]
    for name in reachable:
        for step in table.steps.get(name, []):
            if step.vmap or step.verdict not in (None, "continue", "accept"):
                found.append(f"{step.label}: {step.verdict or 'a verdict map'} at a hook outside the model")
    return found


def _early_ct(table: Table, chain: Mapping[str, Any], reachable: list[str]) -> list[str]:
    if chain.get("hook") != "output" or chain.get("prio", 0) > CONNTRACK_PRIORITY:
        return []
    return [f"{step.label}: ct state before connection tracking (priority {chain.get('prio')})"
            for name in reachable for step in table.steps.get(name, []) if _uses_ct(step)]


@dataclass
class Hooks:
    """Per hook, what each of its base chains accepts; and what the reader could not model."""

    accepted: dict[str, list[list[tuple[Cube, str]]]] = field(default_factory=dict)
    not_understood: list[str] = field(default_factory=list)


def _base_chain(table: Table, chain: Mapping[str, Any], hooks: Hooks) -> None:
    family = FAMILIES[table.family]
    seen = [] if family is None else [{"family": Values.one(family)}]
    try:
        run = run_chain(table, chain["name"], seen or [{}])
    except NotUnderstood as error:
        hooks.not_understood.append(str(error))
        run = Run(accepted=[({}, f"{chain['name']} (not understood)")])
    accepted = list(run.accepted)
    if chain.get("policy", "accept") == "accept":
        accepted += [(p, f"{table.family} {table.name} {chain['name']} policy accept") for p in run.back]
    if family is not None:  # an ip table never sees IPv6 packets, nor an ip6 table IPv4 ones
        accepted.append(({"family": Values.one(1 - family)}, f"{table.family} {table.name} (other family)"))
    hooks.accepted.setdefault(chain["hook"], []).append(accepted)


def evaluate(ruleset: Mapping[str, Any], names: Names) -> Hooks:
    """What every base chain of every hook accepts, and every rule the reader could not model."""
    hooks = Hooks()
    for table in tables_of(ruleset, names).values():
        for chain in table.chains.values():
            if "hook" not in chain:
                continue
            reachable = _reachable(table, chain["name"])
            hooks.not_understood += [n for name in reachable for n in table.not_understood.get(name, [])]
            if not _modelled(table, chain):
                hooks.not_understood += _outside_model(table, chain, reachable)
                continue
            hooks.not_understood += _early_ct(table, chain, reachable)
            _base_chain(table, chain, hooks)
    return hooks


def hook_accepts(chains: list[list[tuple[Cube, str]]]) -> list[tuple[Cube, str]]:
    """The packets every base chain of a hook accepts (all of them: with none, every packet)."""
    accepted: list[tuple[Cube, str]] = [({}, "no base chain at this hook")]
    for chain in chains:
        accepted = [
            (both, label if other.startswith("no base chain") else f"{other}; {label}")
            for cube, other in accepted
            for part, label in chain
            if (both := meet(cube, part)) is not None
        ]
    return accepted


# -- what is accepted, in the flow matrix's terms -----------------------------------------------


@dataclass
class Host:
    """What the reader knows of the host whose ruleset it reads."""

    tier: str
    mine: dict[str, str]  # network (or "public") -> this host's IPv4 address on it
    by_iface: dict[str, str]  # interface name -> network
    tier_sets: dict[tuple[str, str], Values]  # (tier, network) -> the addresses of its hosts
    admin: dict[int, Values]  # family -> the admin CIDRs


def _addresses(addresses: Iterable[str]) -> dict[int, Values]:
    out = {IP: Values(()), IP6: Values(())}
    for text in addresses:
        net = ipaddress.ip_network(str(text), strict=False)
        family = IP if net.version == 4 else IP6
        out[family] |= _address({"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}, family)
    return out


def _infrastructure(hook: str, names: Names) -> list[tuple[str, Cube]]:
    """Accepted packets that are not flows but are known, narrow and necessary."""
    established = ("established", {"ct state": Values.of([(1, 2)])})
    if hook == "forward":
        return [established]
    incoming = hook == "input"
    nd = {"family": Values.one(IP6), "l4proto": Values.one(58), "ip6 hoplimit": Values.one(255),
          "icmpv6 type": Values.of((names.id(t), names.id(t)) for t in ND_TYPES)}
    sport, dport = (67, 68) if incoming else (68, 67)
    dhcp = {"l4proto": Values.one(17), "sport": Values.one(sport), "dport": Values.one(dport)}
    loopback = {("iifname" if incoming else "oifname"): Values.one(names.id("lo"))}
    return [("loopback", loopback), established, ("neighbour discovery", nd), ("dhcp", dhcp)]


def _peer(host: Host, network: str, family: int, remote: Values) -> str | None:
    if network == PUBLIC:
        if remote == (V4 if family == IP else V6):
            return INTERNET
        return ADMIN if remote and remote == host.admin[family] else None
    for (tier, peer_network), members in host.tier_sets.items():
        if peer_network == network and members == remote:
            return tier
    return None


def _flow(cube: Cube, hook: str, host: Host, names: Names) -> FlowKey | str:
    """The one flow of the matrix ``cube`` is, or why it is not one."""
    incoming = hook == "input"
    iface, local, remote = ("iifname", "daddr", "saddr") if incoming else ("oifname", "saddr", "daddr")
    ident, family, proto, port = (_get(cube, d).single() for d in (iface, "family", "l4proto", "dport"))
    if ident is None or family is None or proto not in (6, 17) or port is None:
        return "not one flow (one interface, one address family, tcp or udp, one port)"
    network = host.by_iface.get(names.name(ident))
    if network is None:
        return f"interface {names.name(ident)!r} holds none of this host's addresses"
    shape = normal({iface: _get(cube, iface), "family": Values.one(family), "l4proto": Values.one(proto),
                    "dport": Values.one(port), local: _get(cube, local), remote: _get(cube, remote)})
    if {d: v for d, v in cube.items() if d != "ct state"} != shape:
        return "matches on more than interface, addresses, protocol and port"
    here = _get(cube, local)
    if family == IP and here != _addresses([host.mine.get(network, "0.0.0.0")])[IP]:
        return f"this end is not this host's {network} address"
    if family == IP6 and here != V6 and here.single() is None:
        return "this end is neither any IPv6 address nor one"
    peer = _peer(host, network, family, _get(cube, remote))
    if peer is None:
        return f"the other end is not exactly one tier's addresses on {network}"
    name = "tcp" if proto == 6 else "udp"
    return (peer, host.tier, port, name) if incoming else (host.tier, peer, port, name)


def _show(dim: str, values: Values, names: Names) -> str:
    if dim in ("saddr", "daddr"):
        nets = [str(n) for a, b in (values & V4).spans for n in ipaddress.summarize_address_range(
            ipaddress.IPv4Address(a), ipaddress.IPv4Address(b))]
        offset = V6.spans[0][0]
        nets += [str(n) for a, b in (values & V6).spans for n in ipaddress.summarize_address_range(
            ipaddress.IPv6Address(a - offset), ipaddress.IPv6Address(b - offset))]
        return "{" + ", ".join(nets[:6]) + (", ..." if len(nets) > 6 else "") + "}"
    if dim in ("iifname", "oifname", "icmp type", "icmpv6 type"):
        shown = [str(names.name(i)) for a, b in values.spans for i in range(a, min(b, a + 6) + 1)]
        return "{" + ", ".join(shown) + "}"
    if dim == "family":
        return "{" + ", ".join(("ip", "ip6")[i] for a, b in values.spans for i in range(a, b + 1)) + "}"
    if dim == "l4proto" and values.single() in PROTOCOLS.values():
        return "{" + next(k for k, v in PROTOCOLS.items() if v == values.single()) + "}"
    if dim == "ct state":
        states = {v: k for k, v in CT_STATES.items()}
        return "{" + ", ".join(states[i] for a, b in values.spans for i in range(a, b + 1)) + "}"
    return "{" + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in values.spans) + "}"


def describe(cube: Cube, names: Names) -> str:
    """A cube in nft's words, leaving out the fields the packets do not have."""
    parts = [f"{dim} {_show(dim, v, names)}" for dim, v in sorted(cube.items())
             if v not in (ABSENT, DOMAINS[dim] - ABSENT, V4, V6)]
    return " ".join(parts) or "every packet"


@dataclass
class Reading:
    """What a ruleset accepts, in terms of the flow matrix, and what it does not explain."""

    policies: dict[str, str] = field(default_factory=dict)  # hook -> policy of the tierwall table's chain
    flows: set[FlowKey] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)  # accepted packets that are no flow of the matrix
    not_understood: list[str] = field(default_factory=list)  # rules the reader cannot evaluate exactly


def _classify(reading: Reading, hook: str, accepted: list[tuple[Cube, str]], host: Host,
              names: Names) -> None:
    infrastructure = _infrastructure(hook, names)
    by_label: dict[str, list[Cube]] = {}
    for cube, label in accepted:
        by_label.setdefault(label, []).append(cube)
    for label, cube in ((label, c) for label, cubes in by_label.items() for c in merged(cubes)):
        if any(within(cube, infra) for _, infra in infrastructure):
            continue
        flow = _flow(cube, hook, host, names) if hook != "forward" else "the host must not route"
        if isinstance(flow, tuple):
            reading.flows.add(flow)
        else:
            reading.problems.append(f"{hook} accepts {describe(cube, names)} [{label}]: {flow}")


def _host(topology: Mapping[str, Any], tier: str, addresses: Mapping[str, str],
          interfaces: Mapping[str, str], public_address: str | None, admin_cidrs: Iterable[str]) -> Host:
    mine = dict(addresses)
    if public_address:
        mine[PUBLIC] = public_address
    members: dict[tuple[str, str], list[str]] = {}
    for info in topology["hosts"].values():
        for network, address in info["addresses"].items():
            members.setdefault((info["tier"], network), []).append(str(address))
    tier_sets = {key: _addresses(found)[IP] for key, found in members.items()}
    by_iface = {iface: network for network, iface in interfaces.items()}
    return Host(tier, mine, by_iface, tier_sets, _addresses(admin_cidrs))


def read_flows(
    ruleset: Mapping[str, Any],
    topology: Mapping[str, Any],
    tier: str,
    addresses: Mapping[str, str],
    interfaces: Mapping[str, str],
    public_address: str | None = None,
    admin_cidrs: Iterable[str] = (),
) -> Reading:
    """What the whole ruleset accepts at input, forward and output, as flow-matrix keys.

    ``addresses`` are this host's private addresses by network, ``interfaces`` the interface
    holding each (network name or "public" -> interface name), as found on the host.
    """
    names = Names()
    host = _host(topology, tier, addresses, interfaces, public_address, admin_cidrs)
    hooks = evaluate(ruleset, names)
    reading = Reading(not_understood=hooks.not_understood)
    for item in ruleset.get("nftables", []):
        chain = item.get("chain", {})
        if (chain.get("family"), chain.get("table")) == TABLE and "hook" in chain:
            reading.policies[chain["hook"]] = chain.get("policy", "accept")
    for hook in HOOKS:
        _classify(reading, hook, hook_accepts(hooks.accepted.get(hook, [])), host, names)
    return reading


def matrix_flows(topology: Mapping[str, Any], tier: str) -> set[FlowKey]:
    """The flows of the matrix that a host of ``tier`` takes part in."""
    return {
        (f["source"], f["destination"], int(f["port"]), f["protocol"])
        for f in topology["flows"]
        if tier in (f["source"], f["destination"])
    }


# -- a flat view, for tests that look at single rules -------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule of a chain as written: its matches (key -> value) and its verdict. Not an analysis."""

    chain: str
    verdict: str | None
    matches: dict[str, Any]
    comment: str = ""


def _plain(right: Any) -> Any:
    if isinstance(right, Mapping) and "set" in right:
        return frozenset(_plain(v) for v in right["set"])
    if isinstance(right, Mapping) and "prefix" in right:
        return f"{right['prefix']['addr']}/{right['prefix']['len']}"
    if isinstance(right, list):
        return frozenset(_plain(v) for v in right)
    return right if not isinstance(right, Mapping) else repr(right)


def _key(left: Mapping[str, Any]) -> str:
    if "meta" in left:
        return str(left["meta"]["key"])
    if "payload" in left:
        return f"{left['payload'].get('protocol')} {left['payload'].get('field')}"
    if "ct" in left:
        return f"ct {left['ct'].get('key')}"
    return repr(left)


def rules_of(
    ruleset: Mapping[str, Any], table: tuple[str, str] = TABLE
) -> tuple[dict[str, dict], list[Rule]]:
    """Chains (with hook and policy) and rules of ``table``, as written (sets as frozensets)."""
    chains: dict[str, dict] = {}
    rules: list[Rule] = []
    for item in ruleset.get("nftables", []):
        body = item.get("chain") or item.get("rule")
        if not body or (body["family"], body["table"]) != table:
            continue
        if "chain" in item:
            chains[body["name"]] = body
            continue
        exprs = body.get("expr", [])
        matches = {_key(e["match"]["left"]): _plain(e["match"]["right"]) for e in exprs if "match" in e}
        verdict = next((w for e in exprs for w in VERDICTS if w in e), None)
        rules.append(Rule(body["chain"], verdict, matches, str(body.get("comment", ""))))
    return chains, rules
