"""The cost of the public edge: the app through the proxy vs the app directly, measured with wrk.

    sudo .venv/bin/python bench/edge.py [--duration 30] [--connections 16] [--threads 2]
                                        [--path /healthz --path /client/notes]

Two clients, the same wrk settings, in the same run, for each path:

* proxy:  from the sentinel ("the internet", its network namespace) to https://<domain><path> on the
          proxy's public address: TLS at nginx, then TLS again to the app (upstream keepalive);
* direct: from the proxy's network namespace straight to https://<app frontend>:<app port><path>.

Target: proxy requests/s >= 0.8 x direct. Paths other than /healthz carry the API token and the
``Tierwall-Client-Ref`` of a client this script registers (with one note) and hands over at the end.

For the run the proxy's per-client limits are raised through the project's own playbook
(ansible/playbooks/edge.yml with -e @overrides.json) and restored in any case by running it again
without them; the live limit lines must then equal the ones before the run. wrk resolves the site's
name through a temporary /etc/netns/<sentinel>/hosts, removed at the end. A measurement with any
socket error or any non-2xx/3xx answer (e.g. 429) is invalid (exit 3), not a figure.
Results: a table on stdout and .lab/reports/bench/edge.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (
    ANSIBLE_ENV,
    BenchError,
    Figure,
    Lab,
    cleanup,
    main,
    netns,
    playbook_argv,
    print_table,
    ratio,
    run,
    verdict,
    warn_if_busy,
    write_report,
)

from tierwall.paths import LAB_DIR, REPO

TARGET = 0.8
CA = LAB_DIR / "pki" / "ca.crt"
TOKEN_FILE = LAB_DIR / "secrets" / "app-api-token"
CLIENT_HEADER = "Tierwall-Client-Ref"
NETNS_ETC = Path("/etc/netns")
# Large enough never to bite during a run; the playbook run without them restores the real ones.
OVERRIDES = {
    "nginx_rate_limit_rate": "1000000r/s",
    "nginx_rate_limit_burst": 1000000,
    "nginx_conn_limit_per_client": 60000,  # nginx refuses 65536 or more
}
LIMIT_LINES = "grep -rn -e 'rate=' -e 'limit_req ' -e 'limit_conn ' /etc/nginx | sort"
PLAYBOOK_TIMEOUT = 900
WARMUP_SECONDS = 3
# wrk's done() hook prints its summary as one JSON line (latencies in microseconds).
DONE_HOOK = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"timeout":%d,"status":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout,
    e.status, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Result:
    requests: int
    duration_us: int
    bytes: int
    connect: int
    read: int
    write: int
    timeout: int
    status: int  # answers with status >= 400 (wrk's "Non-2xx or 3xx responses")
    p50_us: int
    p99_us: int
    mean_us: float
    max_us: int

    @property
    def rps(self) -> float:
        return ratio(self.requests, self.duration_us / 1e6)

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.socket_errors == 0 and self.status == 0


@dataclass(frozen=True)
class Site:
    lab: Lab
    proxy: str
    sentinel_ns: str
    proxy_ns: str
    domain: str
    public_address: str
    direct_base: str  # https://<app frontend address>:<app port>
    token: str
    workdir: Path

    @property
    def public_base(self) -> str:
        return f"https://{self.domain}"

    def curl(self, namespace: str, method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
        """One verified request (headers and body through 0600 files, never the command line)."""
        config = self.workdir / f"curl-{uuid.uuid4().hex}.conf"
        lines = ['header = "Content-Type: application/json"']
        lines += [f'header = "{name}: {value}"' for name, value in headers.items()]
        _private(config, "\n".join(lines) + "\n")
        argv = ["curl", "--silent", "--show-error", "--max-time", "20", "--cacert", str(CA)]
        argv += ["--request", method, "--config", str(config), "--output", "-"]
        argv += ["--write-out", "\n%{http_code}"]
        files = [config]
        if body is not None:
            files.append(self.workdir / f"body-{uuid.uuid4().hex}.json")
            _private(files[-1], json.dumps(body))
            argv += ["--data-binary", f"@{files[-1]}"]
        try:
            done = run(netns(namespace, [*argv, url]), timeout=40)
        finally:
            for path in files:
                path.unlink(missing_ok=True)
        payload, _, status = done.stdout.rpartition("\n")
        return int(status), json.loads(payload) if payload.strip() else None

    def require_created(self, method: str, path: str, client: str, body: Any, what: str) -> None:
        """One API call through the proxy, from the sentinel, that must answer 201 Created."""
        status, _ = self.curl(
            self.sentinel_ns, method, self.public_base + path, self.auth_headers(client), body
        )
        if status != 201:
            raise BenchError(f"{what} answered {status}, not 201")

    def auth_headers(self, client: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", CLIENT_HEADER: client}


def _private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk (apt-get install -y wrk)")
    if run(["apt-get", "install", "-y", "wrk"], timeout=600, check=False).returncode != 0:
        run(["apt-get", "update"], timeout=600)
        run(["apt-get", "install", "-y", "wrk"], timeout=600)


class HostsFile:
    """/etc/netns/<ns>/hosts naming the site (ip netns exec bind-mounts it over /etc/hosts); removed
    with the directories this created. An existing file is never touched."""

    def __init__(self, namespace: str, line: str) -> None:
        self.directory = NETNS_ETC / namespace
        self.file = self.directory / "hosts"
        self.line = line
        self.created: list[Path] = []
        self.written = False

    def create(self) -> None:
        if self.file.exists():
            raise BenchError(f"{self.file} already exists (not this script's): remove it or move it away")
        for directory in (NETNS_ETC, self.directory):
            if not directory.exists():
                directory.mkdir(mode=0o755)
                self.created.append(directory)
        self.written = True
        self.file.write_text(f"127.0.0.1 localhost\n{self.line}\n")

    def remove(self) -> None:
        if self.written:
            self.file.unlink(missing_ok=True)
        for directory in reversed(self.created):
            directory.rmdir()


def limit_lines(site: Site) -> str:
    return site.lab.ssh(site.proxy, LIMIT_LINES)


def converge_edge(extra: list[str]) -> None:
    """ansible/playbooks/edge.yml, the proxy tier's own playbook, with ``extra`` arguments."""
    argv = playbook_argv(REPO / "ansible" / "playbooks" / "edge.yml", *extra)
    done = run(argv, timeout=PLAYBOOK_TIMEOUT, check=False, env=ANSIBLE_ENV)
    if done.returncode != 0:
        tail = done.stdout[-3000:]
        raise BenchError(f"edge.yml {shlex.join(extra)} failed (exit {done.returncode}):\n{tail}")


def wrk(site: Site, namespace: str, url: str, args: argparse.Namespace, duration: int, client: str) -> Result:
    script = site.workdir / f"wrk-{uuid.uuid4().hex}.lua"
    lines = [f"wrk.headers[{_lua(k)}] = {_lua(v)}" for k, v in site.auth_headers(client).items()]
    _private(script, ("\n".join(lines) if _authenticated(url) else "") + DONE_HOOK)
    argv = ["wrk", "--threads", str(args.threads), "--connections", str(args.connections)]
    argv += ["--duration", f"{duration}s", "--timeout", "10s", "--latency", "--script", str(script), url]
    try:
        done = run(netns(namespace, argv), timeout=duration + 120)
    finally:
        script.unlink(missing_ok=True)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return Result(**json.loads(line.removeprefix("BENCH_JSON ")))
    raise BenchError(f"wrk printed no summary for {url}:\n{done.stdout}\n{done.stderr}")


def _lua(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal for these ASCII values


def _authenticated(url: str) -> bool:
    return not url.endswith("/healthz")


def _ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.1f} ms"


def measure(site: Site, args: argparse.Namespace, client: str) -> tuple[list[Figure], dict[str, Any], bool]:
    for path in args.path:  # every route answers 200 both ways before anything is timed
        for namespace, base in ((site.sentinel_ns, site.public_base), (site.proxy_ns, site.direct_base)):
            headers = site.auth_headers(client) if _authenticated(path) else {}
            status, _ = site.curl(namespace, "GET", base + path, headers)
            if status != 200:
                raise BenchError(f"GET {base}{path} from {namespace} answered {status}, not 200")
    figures, results, valid = [], {}, True
    for path in args.path:
        targets = {
            "proxy": (site.sentinel_ns, site.public_base + path),
            "direct": (site.proxy_ns, site.direct_base + path),
        }
        for namespace, url in targets.values():
            wrk(site, namespace, url, args, WARMUP_SECONDS, client)  # TLS sessions, pools, caches
        measured = {}
        for name, (namespace, url) in targets.items():
            print(f"wrk {name}: {url} ({args.duration}s, {args.connections} connections)")
            measured[name] = wrk(site, namespace, url, args, args.duration, client)
        results[path] = {name: {**asdict(r), "rps": r.rps, "valid": r.valid} for name, r in measured.items()}
        for name, r in measured.items():
            valid = valid and r.valid
            figures += [
                Figure(f"{path} {name} requests/s", f"{r.rps:.0f}" if r.valid else "INVALID"),
                Figure(f"{path} {name} p50 / p99", f"{_ms(r.p50_us)} / {_ms(r.p99_us)}"),
                Figure(f"{path} {name} non-2xx/3xx", str(r.status), "0", r.status == 0),
                Figure(f"{path} {name} socket errors", str(r.socket_errors), "0", r.socket_errors == 0),
            ]
        share = ratio(measured["proxy"].rps, measured["direct"].rps)
        both = measured["proxy"].valid and measured["direct"].valid
        results[path]["ratio"] = share if both else None
        figures.append(
            Figure(
                f"{path} proxy/direct",
                f"{share:.2f}x" if both else "INVALID",
                f">= {TARGET:.2f}x",
                share >= TARGET if both else None,
            )
        )
    return figures, results, valid


def edge_site(lab: Lab, workdir: Path) -> Site:
    """The public site as the edge bench loads it: from the sentinel, through the first proxy."""
    proxy, app = lab.first("proxy"), lab.first("app")
    return Site(
        lab=lab,
        proxy=proxy,
        sentinel_ns=lab.namespace("sentinel"),
        proxy_ns=lab.namespace(proxy),
        domain=str(lab.vars["tierwall_domain"]),
        public_address=str(lab.hosts[proxy]["tierwall_public_address"]),
        direct_base=f"https://{lab.address(app, 'frontend')}:{lab.ports['app']}",
        token=TOKEN_FILE.read_text().strip(),
        workdir=workdir,
    )


@contextmanager
def loaded_site(
    site: Site, workdir: Path, client: str, register: bool = True, guard: Callable[[], None] = lambda: None
) -> Iterator[None]:
    """The public site made ready for a load and put back in any case: the sentinel's hosts entry,
    the bench client and its note (when ``register``: the measured path carries the token), the
    proxy's limits raised by edge.yml's overrides; afterwards the client handed over, the limits
    restored and checked against before, the hosts entry and ``workdir`` removed. ``guard`` runs
    right before each step that sends to the lab (a bench that re-checks containment)."""
    hosts = HostsFile(site.sentinel_ns, f"{site.public_address} {site.domain}")
    raised = str(OVERRIDES["nginx_rate_limit_rate"])
    state = {"client": False, "overridden": False}
    before = ""  # the proxy's limit lines before the run

    def handover() -> None:
        if state["client"]:
            guard()
            status, _ = site.curl(
                site.sentinel_ns, "POST", site.public_base + "/client/handover", site.auth_headers(client)
            )
            if status != 200:
                raise BenchError(f"the handover of the bench client {client} answered {status}")

    def restore_limits() -> None:
        if not state["overridden"]:
            return
        print("restoring the proxy's limits (edge.yml without overrides)")
        guard()
        converge_edge([])
        guard()
        after = limit_lines(site)
        if raised in after or (raised not in before and after != before):
            raise BenchError(f"the proxy's limit lines differ from before the run:\n{before}\n---\n{after}")

    try:
        guard()
        before = limit_lines(site)
        if raised in before:
            print("warning: the proxy still has a bench run's limits; they are restored at the end")
        hosts.create()
        if register:
            guard()
            site.require_created(
                "PUT", "/client", client, {"name": "tierwall bench client"}, "registering the bench client"
            )
            state["client"] = True
            guard()
            site.require_created(
                "POST", "/client/notes", client, {"text": "A note the benchmark reads."},
                "writing the bench client's note",
            )  # fmt: skip
        overrides = workdir / "overrides.json"
        _private(overrides, json.dumps(OVERRIDES))
        print("raising the proxy's limits for the run (edge.yml -e @overrides.json)")
        state["overridden"] = True
        guard()
        converge_edge(["-e", f"@{overrides}"])
        guard()
        if f"rate={raised}" not in limit_lines(site):
            raise BenchError("edge.yml ran with the overrides but the proxy does not show them")
        yield
    finally:
        failures = cleanup(
            [
                ("hand the bench client over (delete it)", handover),
                ("restore the proxy's limits", restore_limits),
                (f"remove {hosts.file}", hosts.remove),
                (f"remove {workdir}", lambda: shutil.rmtree(workdir)),
            ]
        )
    if failures:
        raise BenchError("cleanup failed: " + "; ".join(failures))


def body(args: argparse.Namespace) -> int:
    ensure_wrk()
    for needed in (CA, TOKEN_FILE):
        if not needed.is_file():
            raise BenchError(f"{needed} is missing: converge the lab (make converge)")
    lab = Lab()
    workdir = Path(tempfile.mkdtemp(prefix="tierwall-bench-edge-"))
    site = edge_site(lab, workdir)
    client = f"bench-{uuid.uuid4().hex[:16]}"
    with loaded_site(site, workdir, client):
        busy = warn_if_busy()
        figures, results, valid = measure(site, args, client)
        busy += warn_if_busy()
    print()
    print_table(figures)
    settings = {"threads": args.threads, "connections": args.connections, "duration_s": args.duration}
    holds = valid and all(r["ratio"] >= TARGET for r in results.values())
    write_report(
        "edge",
        {
            "valid": valid,
            "target": f"proxy >= {TARGET}x direct",
            "holds": holds if valid else None,
            "settings": settings,
            "results": results,
            "concurrent_activity": busy,
        },
    )
    return verdict(
        valid, "socket errors or non-2xx/3xx answers during a run", f"proxy >= {TARGET:.2f}x direct", holds
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=30, help="seconds per wrk run (default 30)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--path", action="append", help="path to measure (repeatable; default /healthz and /client/notes)"
    )
    args = parser.parse_args()
    args.path = args.path or ["/healthz", "/client/notes"]
    if args.duration < 1 or args.threads < 1 or args.connections < args.threads:
        parser.error("--duration and --threads must be >= 1 and --connections >= --threads")
    for path in args.path:
        if not path.startswith("/") or "?" in path:
            parser.error(f"--path {path!r}: a path starting with / and without a query string")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    main(lambda: body(arguments))
