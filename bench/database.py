"""What encryption costs the database tier, measured with pgbench (tpcb-like, read-write).

    sudo .venv/bin/python bench/database.py [--scale 40] [--tls-scale 10] [--clients 4]
                                            [--duration 60] [--rounds 2] [--max-wal-size 256MB]
                                            [--part rest|tls|both]

rest  Encryption at rest: a temporary cluster in a new directory inside the fscrypt-encrypted
      /srv/pgdata-volume/postgresql (it inherits the policy; checked and reported) against one in a
      plain directory on the same ext4 volume. Both are initdb'd fresh for every run with the real
      cluster's settings (shared_buffers, work_mem, max_connections, pgAudit, ... everything its
      configuration files set, except the network, TLS and file locations), socket only
      (listen_addresses = ''), their own port, run as transient systemd units, and are stopped and
      deleted after the run. The scale should exceed shared_buffers so the run reads and writes
      through the encrypted files; the host's page cache is dropped before each run. Runs
      alternate (ABBA). Target: encrypted >= 0.9 x plain TPS.
      The volume is 4 GiB and holds the real data: --max-wal-size (default 256MB) caps the
      temporary clusters' WAL (both alike), and a run that would not fit is refused.
tls   TLS from the app server against the local socket, on the real cluster: a temporary role and
      database tierwall_bench, a temporary pg_hba line (hostssl from the app's backend address,
      scram-sha-256) before the final reject lines. pgbench runs from the app's network namespace
      with sslmode=verify-full against the db's certificate, and on the db through its unix socket
      (as the same role), same database and settings, alternating. pg_hba.conf is restored
      byte-identical and reloaded, role and database dropped, in any case.

A run with failed transactions is invalid (exit 3). Results: a table on stdout and
.lab/reports/bench/database.json.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import re
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from _common import (
    BenchError,
    Figure,
    Lab,
    cleanup,
    drop_caches,
    main,
    netns,
    print_table,
    ratio,
    run,
    verdict,
    warn_if_busy,
    write_report,
)

from tierwall.paths import LAB_DIR

REST_TARGET = 0.9
PG_VERSION = "15"
PG_BIN = f"/usr/lib/postgresql/{PG_VERSION}/bin"
CONF_DIR = f"/etc/postgresql/{PG_VERSION}/main"
PG_HBA = f"{CONF_DIR}/pg_hba.conf"
PG_HBA_BACKUP = "/root/tierwall-bench-pg_hba.conf.orig"
SOCKET_DIR = "/var/run/postgresql"
VOLUME = "/srv/pgdata-volume"
ENCRYPTED_DIR = f"{VOLUME}/postgresql"
TEMP_DIRS = {
    "encrypted": f"{ENCRYPTED_DIR}/tierwall-bench-encrypted",
    "plain": f"{VOLUME}/tierwall-bench-plain",
}
TEMP_PORT = 54329
TEMP_UNIT = "tierwall-bench-pg"
# Settings of the real cluster a socket-only temporary cluster must not copy.
NOT_COPIED = (
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "external_pid_file",
    "cluster_name",
    "data_directory",
    "hba_file",
    "ident_file",
    "max_wal_size",
)
MB_PER_SCALE = 16  # pgbench: ~15 MB of tables and indexes per scale unit
BENCH = "tierwall_bench"  # role and database of the TLS comparison
MARKER = "# tierwall bench (temporary)"  # the comment above the temporary pg_hba line
CA = LAB_DIR / "pki" / "ca.crt"


@dataclass(frozen=True)
class Run:
    variant: str
    tps: float
    latency_ms: float
    processed: int
    failed: int
    exit_code: int

    @property
    def valid(self) -> bool:
        return self.exit_code == 0 and self.failed == 0 and self.processed > 0


def parse_pgbench(variant: str, done: Any) -> Run:
    text = done.stdout

    def number(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, text)
        if match is None:
            if default is not None:
                return default
            raise BenchError(
                f"pgbench ({variant}) exit {done.returncode}, no {pattern!r}:\n{text}\n{done.stderr}"
            )
        return match.group(1)

    return Run(
        variant=variant,
        tps=float(number(r"tps = ([\d.]+) \(without initial connection time\)")),
        latency_ms=float(number(r"latency average = ([\d.]+) ms")),
        processed=int(number(r"number of transactions actually processed: (\d+)")),
        failed=int(number(r"number of failed transactions: (\d+)", "0")),
        exit_code=done.returncode,
    )


def pgbench_options(args: argparse.Namespace) -> str:
    return f"--client={args.clients} --jobs={min(args.clients, 2)} --time={args.duration}"


def q(value: object) -> str:
    return shlex.quote(str(value))


def psql(sql: str, database: str = "postgres") -> str:
    """A shell snippet running ``sql`` as postgres on the real cluster's socket (peer)."""
    return (
        f"runuser -u postgres -- psql -X -q -A -t -F '|' -v ON_ERROR_STOP=1 -d {q(database)} "
        f"-h {SOCKET_DIR} <<'SQL'\n{sql}\nSQL\n"
    )


def kernel_driver(algorithm: str = "xts(aes)") -> str:
    """The kernel's implementation of ``algorithm`` (the lab's machines share this kernel): fscrypt's
    speed depends on it (e.g. aes-fixed-time is generic C, aesni/vaes use the CPU's AES units)."""
    best: tuple[int, str] = (-1, "none")
    for block in Path("/proc/crypto").read_text().split("\n\n"):
        pairs = (line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in pairs}
        if fields.get("name") == algorithm and int(fields.get("priority", 0)) > best[0]:
            best = (int(fields["priority"]), fields.get("driver", "?"))
    return best[1]


# -- encryption at rest ------------------------------------------------------------------------------


def real_settings(lab: Lab, db: str) -> list[tuple[str, str]]:
    sql = "SELECT name, current_setting(name) FROM pg_settings WHERE source = 'configuration file' ORDER BY 1"
    rows = [line.split("|", 1) for line in lab.ssh(db, psql(sql)).splitlines() if "|" in line]
    return [(n, v) for n, v in rows if n not in NOT_COPIED and not n.startswith("ssl")]


def temp_config(settings: list[tuple[str, str]], directory: str, max_wal_size: str) -> str:
    lines = ["# tierwall bench: the real cluster's settings, socket only"]
    lines += [f"{name} = '{value.replace(chr(39), chr(39) * 2)}'" for name, value in settings]
    lines += [
        "listen_addresses = ''",
        f"port = {TEMP_PORT}",
        f"unix_socket_directories = '{directory}'",
        "ssl = off",
        f"max_wal_size = '{max_wal_size}'",
    ]
    return "\n".join(lines) + "\n"


def remove_temp_clusters(lab: Lab, db: str) -> None:
    """Stop the transient unit and delete both temporary directories (idempotent)."""
    dirs = " ".join(q(d) for d in TEMP_DIRS.values())
    lab.ssh(
        db,
        f"""
systemctl stop {TEMP_UNIT}.service 2>/dev/null || true
systemctl reset-failed {TEMP_UNIT}.service 2>/dev/null || true
if pgrep -f -- '-D {VOLUME}/.*tierwall-bench' >/dev/null; then
  echo "a bench postgres still runs" >&2; exit 1
fi
rm -rf {dirs}
for d in {dirs}; do test ! -e "$d"; done
""",
    )


def rest_run(lab: Lab, db: str, variant: str, config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Create a fresh cluster for ``variant``, load it, drop the caches, run pgbench, delete it."""
    directory = TEMP_DIRS[variant]
    pg = f"runuser -u postgres -- {PG_BIN}"
    connect = f"-h {q(directory)} -p {TEMP_PORT}"
    started = time.monotonic()
    try:
        facts = lab.ssh(
            db,
            f"""
test ! -e {q(directory)} || {{ echo "{directory} exists: a leftover? remove it" >&2; exit 1; }}
install -d -o postgres -g postgres -m 700 {q(directory)}
{pg}/initdb -D {q(directory)} --auth=peer --encoding=UTF8 --locale=C.UTF-8 >/dev/null
cat >> {q(directory)}/postgresql.conf <<'CONF'
{config}CONF
systemd-run --quiet --unit={TEMP_UNIT} --uid=postgres --gid=postgres -p Type=notify \\
  -p TimeoutStartSec=120 -p TimeoutStopSec=120 -p KillMode=mixed -p KillSignal=SIGINT \\
  {PG_BIN}/postgres -D {q(directory)}
out=$({pg}/pgbench {connect} --initialize --scale={args.scale} --quiet postgres 2>&1) \\
  || {{ echo "$out" >&2; exit 1; }}
{pg}/psql -X -q {connect} -d postgres -c CHECKPOINT
echo "lsattr: $(lsattr -d {q(directory)} | cut -d' ' -f1)"
echo "size: $(du -sm {q(directory)} | cut -f1)"
fscrypt status {q(directory)} 2>&1 | sed 's/^/fscrypt: /' || true
""",
            timeout=1800,
        )
        prepared = time.monotonic() - started
        drop_caches()
        done = remote_pgbench(lab, db, f"{pg}/pgbench {connect} {pgbench_options(args)} postgres", args)
    finally:
        failures = cleanup([("stop and delete the temporary cluster", lambda: remove_temp_clusters(lab, db))])
    if failures:  # reached only without another error in flight (that one is not hidden)
        raise BenchError("cleanup failed: " + "; ".join(failures))
    result = parse_pgbench(variant, done)
    print(f"  {variant}: {result.tps:.1f} TPS, {result.latency_ms:.2f} ms (initdb and load {prepared:.0f}s)")
    return {"run": result, "facts": facts, "prepare_s": round(prepared, 1)}


@dataclass(frozen=True)
class _Done:
    """pgbench's output captured through ssh by :func:`remote_pgbench` (stderr merged)."""

    stdout: str
    stderr: str = ""

    @property
    def returncode(self) -> int:
        match = re.search(r"^BENCH_EXIT=(\d+)$", self.stdout, re.M)
        return int(match.group(1)) if match else 255


def remote_pgbench(lab: Lab, db: str, command: str, args: argparse.Namespace) -> _Done:
    script = f"{command} 2>&1 && echo BENCH_EXIT=0 || echo BENCH_EXIT=$?"
    return _Done(lab.ssh(db, script, timeout=args.duration + 600))


def policy_of(facts: str) -> dict[str, Any]:
    flags = re.search(r"^lsattr: (\S+)", facts, re.M)
    policy = re.search(r"^fscrypt: Policy:\s+(\S+)", facts, re.M)
    options = re.search(r"^fscrypt: Options:\s+(.+)$", facts, re.M)
    size = re.search(r"^size: (\d+)", facts, re.M)
    return {
        "encrypted": bool(flags and "E" in flags.group(1)),
        "policy": policy.group(1) if policy else None,
        "options": options.group(1).strip() if options else None,
        "size_mb": int(size.group(1)) if size else None,
    }


def check_space(lab: Lab, db: str, needed_mb: int, lower: str) -> None:
    """Refuse a run that could fill the volume: the real cluster lives on it too."""
    free_mb = int(lab.ssh(db, f"df -Pm {VOLUME} | awk 'NR==2 {{print $4}}'").strip())
    print(f"  volume {VOLUME}: {free_mb} MB free, this part needs ~{needed_mb} MB")
    if needed_mb > free_mb:
        raise BenchError(f"~{needed_mb} MB needed, {VOLUME} has {free_mb} MB free: lower {lower}")


def measure_rest(lab: Lab, db: str, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any], bool]:
    parent = lab.ssh(db, f"fscrypt status {q(ENCRYPTED_DIR)}")
    parent_policy = re.search(r"^Policy:\s+(\S+)", parent, re.M)
    if not parent_policy:
        raise BenchError(f"{ENCRYPTED_DIR} is not fscrypt-encrypted (or locked):\n{parent}")
    settings = real_settings(lab, db)
    shared_buffers = dict(settings).get("shared_buffers", "?")
    print(f"at rest: scale {args.scale}, shared_buffers {shared_buffers}, {pgbench_options(args)}")
    remove_temp_clusters(lab, db)  # leftovers of an interrupted run
    wal_mb = int(args.max_wal_size.removesuffix("MB"))
    # data, its WAL (max_wal_size is a soft limit), initdb's files, and room for the real cluster
    check_space(lab, db, args.scale * MB_PER_SCALE + wal_mb * 3 // 2 + 250, "--scale or --max-wal-size")
    order = [
        v
        for r in range(args.rounds)
        for v in (("encrypted", "plain") if r % 2 == 0 else ("plain", "encrypted"))
    ]
    runs: dict[str, list[Run]] = {"encrypted": [], "plain": []}
    layout: dict[str, dict[str, Any]] = {}
    for variant in order:
        config = temp_config(settings, TEMP_DIRS[variant], args.max_wal_size)
        outcome = rest_run(lab, db, variant, config, args)
        runs[variant].append(outcome["run"])
        layout[variant] = {**policy_of(outcome["facts"]), "prepare_s": outcome["prepare_s"]}
    enc, plain = layout["encrypted"], layout["plain"]
    inherited = enc["encrypted"] and enc["policy"] == parent_policy.group(1)
    cipher = re.search(r"contents:(\S+)", enc["options"] or "")
    contents = cipher.group(1) if cipher else "?"
    valid = all(r.valid for rs in runs.values() for r in rs)
    tps = {v: mean(r.tps for r in rs) for v, rs in runs.items()}
    share = ratio(tps["encrypted"], tps["plain"])
    driver = kernel_driver()
    figures = [
        Figure(
            "rest: encrypted dir policy",
            f"{(enc['policy'] or '-')[:12]} {contents}",
            f"parent's {parent_policy.group(1)[:12]}",
            inherited,
        ),
        Figure(
            "rest: plain dir",
            "encrypted" if plain["encrypted"] else "not encrypted",
            "not encrypted",
            not plain["encrypted"],
        ),
        Figure("rest: cluster on disk / shared_buffers", f"{enc['size_mb']} MB / {shared_buffers}"),
        Figure("rest: kernel xts(aes) driver", driver),
    ]
    for variant in ("encrypted", "plain"):
        values = ", ".join(f"{r.tps:.0f}" for r in runs[variant])
        figures.append(
            Figure(f"rest: {variant} TPS (runs)", f"{tps[variant]:.0f} ({values})" if valid else "INVALID")
        )
        figures.append(
            Figure(f"rest: {variant} latency avg", f"{mean(r.latency_ms for r in runs[variant]):.2f} ms")
        )
    figures.append(
        Figure(
            "rest: encrypted/plain",
            f"{share:.2f}x" if valid else "INVALID",
            f">= {REST_TARGET:.2f}x",
            share >= REST_TARGET if valid else None,
        )
    )
    if not inherited or plain["encrypted"]:
        raise BenchError(f"the temporary directories are not what they must be: {layout}")
    result = {
        "scale": args.scale,
        "shared_buffers": shared_buffers,
        "max_wal_size": args.max_wal_size,
        "parent_policy": parent_policy.group(1),
        "layout": layout,
        "kernel_xts_aes_driver": driver,
        "runs": [asdict(r) for rs in runs.values() for r in rs],
        "order": order,
        "tps": tps,
        "ratio": share if valid else None,
        "target": f"encrypted >= {REST_TARGET}x plain",
        "holds": share >= REST_TARGET if valid else None,
    }
    return figures, result, valid


# -- TLS from the app server vs the local socket -------------------------------------------------------


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores: only this reaches the server (and pgAudit's log)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


class PgHba:
    """A live pg_hba.conf with one temporary line before its final reject lines, restored
    byte-identical (and reloaded). ``sh`` runs a shell script on the db host, ``sql`` runs SQL
    there as postgres; ``path`` is the file the running cluster reads, ``backup`` where the
    original waits meanwhile, ``marker`` the comment that tells the temporary line apart."""

    def __init__(
        self, sh: Callable[[str], str], sql: Callable[[str], str], line: str, host: str, *,
        path: str = PG_HBA, backup: str = PG_HBA_BACKUP, marker: str = MARKER,
    ) -> None:  # fmt: skip
        self.sh, self.sql, self.line, self.host = sh, sql, line, host
        self.path, self.backup, self.marker = path, backup, marker
        self.digest: str | None = None

    def fingerprint(self) -> str:
        return self.sh(f"sha256sum {q(self.path)} | cut -d' ' -f1; stat -c '%a %U %G %s' {q(self.path)}")

    def recover(self) -> None:
        """After an interrupted run: put back the backup if the live file still has the bench line."""
        path = q(self.path)
        restored = self.sh(
            f"""
if test -e {self.backup}; then
  if grep -qF {q(self.marker)} {path}; then cp -p {self.backup} {path}; echo restored; fi
  rm -f {self.backup}
fi
"""
        )
        if "restored" in restored:
            print(f"recovered {self.path} from an interrupted run's backup")
            self.reload()

    def add(self) -> None:
        path = q(self.path)
        self.sh(f"cp -p {path} {self.backup}")
        self.digest = self.fingerprint()
        self.sh(
            f"""
line={q(self.line)}
new=$(mktemp)
awk -v l="$line" '!done && $1 == "local" && $2 == "all" && $3 == "all" && $4 == "reject" {{
  print "{self.marker}"; print l; done = 1 }} {{ print }}' {path} > "$new"
grep -qxF "$line" "$new" || {{ rm -f "$new"; echo "no final reject lines in {self.path}" >&2; exit 1; }}
cat "$new" > {path}
rm -f "$new"
"""
        )
        self.reload()

    def reload(self) -> None:
        errors = self.sql(
            "SELECT pg_reload_conf();\nSELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL;"
        )
        if errors.split()[-1] != "0":
            raise BenchError(f"pg_hba.conf has errors after the reload: {errors}")

    def restore(self) -> None:
        if self.digest is None:
            return
        self.sh(f"cp -p {self.backup} {q(self.path)}")
        self.reload()
        after = self.fingerprint()
        if after != self.digest:
            raise BenchError(
                f"pg_hba.conf is not what it was: {self.digest!r} != {after!r}; "
                f"the original is kept in {self.backup} on {self.host}"
            )
        self.sh(f"rm -f {self.backup}")


def drop_bench(lab: Lab, db: str) -> None:
    lab.ssh(db, psql(f"DROP DATABASE IF EXISTS {BENCH} WITH (FORCE);\nDROP ROLE IF EXISTS {BENCH};"))


def measure_tls(lab: Lab, db: str, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any], bool]:
    app = lab.first("app")
    db_address, app_address = lab.address(db, "backend"), lab.address(app, "backend")
    port = lab.ports["postgres"]
    password = secrets.token_urlsafe(24)
    hba = PgHba(
        lambda script: lab.ssh(db, script), lambda sql: lab.ssh(db, psql(sql)),
        f"hostssl  {BENCH}  {BENCH}  {app_address}/32  scram-sha-256", db,
    )  # fmt: skip
    conninfo = (
        f"host={db_address} port={port} dbname={BENCH} user={BENCH} sslmode=verify-full "
        f"sslrootcert={CA} connect_timeout=10"
    )
    env = {"PGPASSWORD": password}
    app_ns = lab.namespace(app)
    local = (
        f"runuser -u postgres -- env PGOPTIONS='-c role={BENCH}' {PG_BIN}/pgbench -h {SOCKET_DIR} "
        f"-p {port} {pgbench_options(args)} {BENCH}"
    )
    runs: dict[str, list[Run]] = {"tls": [], "local": []}
    order = [v for r in range(args.rounds) for v in (("tls", "local") if r % 2 == 0 else ("local", "tls"))]
    print(f"TLS: scale {args.tls_scale}, {pgbench_options(args)}, app {app_address} -> {db_address}")
    hba.recover()  # leftovers of an interrupted run
    drop_bench(lab, db)
    check_space(lab, db, args.tls_scale * MB_PER_SCALE * 2 + 250, "--tls-scale")  # data and its WAL
    try:
        lab.ssh(
            db,
            psql(
                f"CREATE ROLE {BENCH} LOGIN PASSWORD '{scram_verifier(password)}' CONNECTION LIMIT 20;\n"
                f"CREATE DATABASE {BENCH} OWNER {BENCH};"
            ),
        )
        hba.add()
        tls_version = run(
            netns(
                app_ns,
                [
                    "psql",
                    "-X",
                    "-A",
                    "-t",
                    conninfo,
                    "-c",
                    "SELECT version || ' ' || cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                ],
            ),
            timeout=60,
            env=env,
        ).stdout.strip()
        run(
            netns(app_ns, ["pgbench", "--initialize", f"--scale={args.tls_scale}", "--quiet", conninfo]),
            timeout=1800,
            env=env,
        )
        for variant in order:
            if variant == "tls":
                argv = netns(app_ns, ["pgbench", *pgbench_options(args).split(), conninfo])
                done: Any = run(argv, timeout=args.duration + 600, check=False, env=env)
            else:
                done = remote_pgbench(lab, db, local, args)
            result = parse_pgbench(variant, done)
            print(f"  {variant}: {result.tps:.1f} TPS, {result.latency_ms:.2f} ms")
            runs[variant].append(result)
    finally:
        failures = cleanup(
            [("restore pg_hba.conf", hba.restore), (f"drop {BENCH}", lambda: drop_bench(lab, db))]
        )
    if failures:  # reached only without another error in flight (that one is not hidden)
        raise BenchError("cleanup failed: " + "; ".join(failures))
    valid = all(r.valid for rs in runs.values() for r in rs)
    tps = {v: mean(r.tps for r in rs) for v, rs in runs.items()}
    share = ratio(tps["tls"], tps["local"])
    figures = [Figure("tls: connection", tls_version)]
    for variant, label in (("tls", "app->db TLS verify-full"), ("local", "db local socket")):
        values = ", ".join(f"{r.tps:.0f}" for r in runs[variant])
        figures.append(
            Figure(f"tls: {label} TPS (runs)", f"{tps[variant]:.0f} ({values})" if valid else "INVALID")
        )
        figures.append(
            Figure(f"tls: {label} latency avg", f"{mean(r.latency_ms for r in runs[variant]):.2f} ms")
        )
    figures.append(Figure("tls: TLS/local", f"{share:.2f}x" if valid else "INVALID"))
    result = {
        "scale": args.tls_scale,
        "connection": tls_version,
        "runs": [asdict(r) for rs in runs.values() for r in rs],
        "order": order,
        "tps": tps,
        "ratio": share if valid else None,
    }
    return figures, result, valid


def body(args: argparse.Namespace) -> int:
    lab = Lab()
    db = lab.first("db")
    if not CA.is_file():
        raise BenchError(f"{CA} is missing: converge the lab (make converge)")
    busy = warn_if_busy()
    figures: list[Figure] = []
    results: dict[str, Any] = {}
    valid = True
    if args.part in ("rest", "both"):
        part_figures, results["rest"], part_valid = measure_rest(lab, db, args)
        figures += part_figures
        valid = valid and part_valid
    if args.part in ("tls", "both"):
        part_figures, results["tls"], part_valid = measure_tls(lab, db, args)
        figures += part_figures
        valid = valid and part_valid
    print()
    print_table(figures)
    settings = {
        "clients": args.clients,
        "jobs": min(args.clients, 2),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "mode": "tpcb-like",
    }
    write_report(
        "database",
        {
            "valid": valid,
            "settings": settings,
            "results": results,
            "concurrent_activity": busy + warn_if_busy(),
        },
    )
    return verdict(
        valid,
        "a pgbench run had failed transactions or aborted",
        f"encrypted >= {REST_TARGET:.2f}x plain",
        results.get("rest", {}).get("holds"),
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=40, help="pgbench scale at rest (default 40, ~640 MB)")
    parser.add_argument(
        "--tls-scale", type=int, default=10, help="pgbench scale of the TLS test (default 10)"
    )
    parser.add_argument("--clients", type=int, default=4, help="pgbench clients (default 4)")
    parser.add_argument("--duration", type=int, default=60, help="seconds per pgbench run (default 60)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating (default 2)")
    parser.add_argument("--max-wal-size", default="256MB", help="WAL cap of the temporary clusters (NMB)")
    parser.add_argument("--part", choices=("rest", "tls", "both"), default="both")
    args = parser.parse_args()
    if min(args.scale, args.tls_scale, args.clients, args.duration, args.rounds) < 1:
        parser.error("--scale, --tls-scale, --clients, --duration and --rounds must be >= 1")
    if args.clients > 16:
        parser.error("--clients: at most 16 (the real cluster has max_connections 30 and the app's pools)")
    if not re.fullmatch(r"\d+MB", args.max_wal_size):
        parser.error("--max-wal-size: a size in MB such as 256MB")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    main(lambda: body(arguments))
