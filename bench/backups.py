"""What the backups cost and how fast they restore: pgBackRest against pg_basebackup, the restore
drill at about 1 GB, the app's throughput while a full backup runs.

    sudo .venv/bin/python bench/backups.py [--scale 70] [--duration 30] [--connections 16]
                                           [--threads 2] [--path /client/notes]

On a converged lab (``sudo make converge`` first), in one run:

1. data: a database ``bench`` on the db (as postgres over the unix socket, marked by a comment as
   this script's), filled with ``pgbench -i -s <scale>`` (70: about 1 GB) beside the app's own
   databases. The db's volume is 4 GiB: the load is refused without room for it, checkpoints are
   forced while free space runs low and the load is stopped below 200 MB free. Then the time the
   WAL archive takes to catch up, and every database's size;
2. a full backup now: ``systemctl start tierwall-backup-full.service`` (every repository in turn),
   timed by systemd; each repository's new backup from ``pgbackrest info --output=json`` (the
   command line read from ``SHOW archive_command``, as restore-drill.yml does): its time, the
   database's size, its size in the repository, MB/s;
3. the same cluster by ``pg_basebackup -Ft -X stream -c fast`` as postgres, on the db into
   /run/tierwall-bench-basebackup (nothing leaves the db), timed on the db; it needs a replication
   line in pg_hba.conf, added for that step before the final reject lines and restored
   byte-identical (and reloaded) in any case; the copy is removed. Figure: each repository's MB/s
   against pg_basebackup's (no target);
4. the restore drill: ``ansible-playbook -i .lab/inventory.yml ansible/playbooks/restore-drill.yml``
   and its .lab/reports/restore-drill.json: RTO, restore time and restored bytes per repository,
   RPO. Target: RTO <= 180 s per repository, with >= 1 GB (10^9 bytes) restored, and the drill passed;
5. the app under load (bench/edge.py's way: wrk from the sentinel to https://<domain><path> through
   the proxy, the proxy's per-client limits raised through edge.yml and restored, a bench client
   registered and handed over): requests/s for --duration seconds without a backup, then for
   --duration seconds while tierwall-backup-full.service runs (started with --no-block; the run
   waits for it to end afterwards). Target: during >= 0.9 x without;
6. the ``bench`` database is dropped, in any case. The repositories keep the bench data until
   their retention expires (a new full backup is not taken).

Right before anything is sent to a lab address (each ssh, each playbook, each curl and wrk run)
the lab must be up, its network healthy and the proxy's public address routed to the lab's
bridge (bench/baseline.py's check); otherwise the run stops with nothing sent. A load measurement
with a socket error or a non-2xx/3xx answer, or whose backup ended before the measurement did,
is invalid (exit 3). Results: a table on stdout and .lab/reports/bench/backups.json.
MB are 10^6 bytes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
import uuid
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
    playbook_argv,
    print_table,
    ratio,
    run,
    verdict,
    warn_if_busy,
    write_report,
)
from baseline import contained
from database import PgHba
from edge import (
    CA,
    TOKEN_FILE,
    WARMUP_SECONDS,
    Result,
    Site,
    edge_site,
    ensure_wrk,
    loaded_site,
    wrk,
)

from tierwall.paths import LAB_DIR, REPO

RTO_TARGET_S = 180.0
RTO_MIN_BYTES = 10**9  # the RTO target holds at this restored size or more
LOAD_TARGET = 0.9  # requests/s during a full backup >= 0.9 x without
DB_NAME = "bench"
DB_COMMENT = "tierwall bench/backups.py (temporary)"
SOCKET_DIR = "/run/postgresql"
VOLUME = "/srv/pgdata-volume"
MB_PER_SCALE = 16  # pgbench: ~15 MB of tables and indexes per scale unit
WAL_ROOM_MB = 256  # WAL of the load not yet archived and recycled (checkpoints forced meanwhile)
MIN_FREE_MB = 200  # the load is stopped below this on the volume
CHECKPOINT_BELOW_MB = 1024  # checkpoints forced during the load below this much free
BASEBACKUP_DIR = "/run/tierwall-bench-basebackup"
FULL_UNIT = "tierwall-backup-full.service"
BACKUP_UNITS = (FULL_UNIT, "tierwall-backup-diff.service")
UNIT_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "Result",
    "ConditionResult",
    "ExecMainStatus",
    "ExecMainStartTimestampMonotonic",
    "ExecMainExitTimestampMonotonic",
)
HBA_LINE = "local    replication    postgres    peer"
HBA_MARKER = "# tierwall bench backups (temporary)"
HBA_BACKUP = "/root/tierwall-bench-backups-pg_hba.conf.orig"
DRILL_PLAYBOOK = REPO / "ansible" / "playbooks" / "restore-drill.yml"
DRILL_REPORT = LAB_DIR / "reports" / "restore-drill.json"
DRILL_TIMEOUT = 3600
BACKUP_TIMEOUT = 7200


def q(value: object) -> str:
    return shlex.quote(str(value))


def mb(value: float) -> float:
    return value / 1e6


# -- the db ---------------------------------------------------------------------------------------


@dataclass
class Db:
    """The db host, reached only after the containment check; its cluster's facts."""

    lab: Lab
    host: str
    bastion: str  # the proxy's public address: routed to the lab's bridge, or nothing is sent
    port: int
    major: int = 0
    hba_file: str = ""
    pgbackrest: str = ""  # the command line archive_command runs, without ``archive-push %p``

    def sh(self, script: str, *, timeout: float = 120) -> str:
        contained(self.bastion)
        return self.lab.ssh(self.host, script, timeout=timeout)

    def psql_command(self, database: str = "postgres") -> str:
        return (
            f"runuser -u postgres -- psql -X -q -A -t -F '|' -v ON_ERROR_STOP=1 -h {SOCKET_DIR} "
            f"-p {self.port} -d {q(database)}"
        )

    def psql(self, sql: str, database: str = "postgres", *, timeout: float = 120) -> str:
        return self.sh(f"{self.psql_command(database)} <<'SQL'\n{sql}\nSQL\n", timeout=timeout)

    def bin(self, name: str) -> str:
        return f"/usr/lib/postgresql/{self.major}/bin/{name}"

    def discover(self) -> None:
        rows = self.psql("SHOW server_version_num;\nSHOW hba_file;\nSHOW archive_command;").splitlines()
        if len(rows) != 3:
            raise BenchError(f"unexpected answer to SHOW on {self.host}: {rows}")
        self.major, self.hba_file = int(rows[0]) // 10000, rows[1]
        command = rows[2].strip()
        if not command.endswith(" archive-push %p"):
            raise BenchError(f"archive_command is {command!r}, not pgBackRest's: converge the lab")
        argv = shlex.split(command.removesuffix(" archive-push %p"))
        if not argv or Path(argv[0]).name != "pgbackrest":
            raise BenchError(f"archive_command is {command!r}, not pgBackRest's: converge the lab")
        self.pgbackrest = shlex.join(argv)

    def info(self) -> dict[str, Any]:
        """pgBackRest's view of the stanza in every repository."""
        text = self.sh(f"runuser -u postgres -- {self.pgbackrest} info --output=json", timeout=300)
        stanzas = json.loads(text)
        if not stanzas or not stanzas[0].get("repo"):
            raise BenchError(f"pgbackrest info shows no stanza or no repository: {text[:500]}")
        return stanzas[0]

    def free_mb(self, path: str) -> int:
        return int(self.sh(f"df -Pm {q(path)} | awk 'NR==2 {{print $4}}'").strip())

    def unit(self, unit: str = FULL_UNIT) -> dict[str, str]:
        props = " ".join(f"-p {p}" for p in UNIT_PROPERTIES)
        text = self.sh(f"systemctl show {props} {q(unit)}")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def archiver(self) -> dict[str, int]:
        row = self.psql("SELECT archived_count, failed_count FROM pg_stat_archiver").strip()
        archived, failed = row.split("|")
        return {"archived_count": int(archived), "failed_count": int(failed)}


def unit_seconds(state: dict[str, str]) -> float:
    """The run time of a oneshot unit's last run, by systemd's monotonic clock (microseconds)."""
    start = int(state.get("ExecMainStartTimestampMonotonic") or 0)
    end = int(state.get("ExecMainExitTimestampMonotonic") or 0)
    if not start or end < start:
        raise BenchError(f"{FULL_UNIT} has no complete run to time: {state}")
    return (end - start) / 1e6


def require_success(state: dict[str, str], what: str) -> None:
    if state.get("ConditionResult") != "yes":
        raise BenchError(f"{what}: {FULL_UNIT} was skipped (its condition failed: is the db unlocked?)")
    if state.get("Result") != "success" or state.get("ExecMainStatus") != "0":
        raise BenchError(f"{what}: {FULL_UNIT} failed: {state} (journalctl -u {FULL_UNIT} on the db)")


def full_backups(stanza: dict[str, Any]) -> set[tuple[int, str]]:
    return {(b["database"]["repo-key"], b["label"]) for b in stanza.get("backup", []) if b["type"] == "full"}


def new_fulls(stanza: dict[str, Any], known: set[tuple[int, str]], what: str) -> list[dict[str, Any]]:
    """The full backup each repository got since ``known`` (exactly one each): time, sizes, MB/s."""
    found = []
    for repo in stanza["repo"]:
        key = repo["key"]
        new = [
            b
            for b in stanza.get("backup", [])
            if b["type"] == "full" and b["database"]["repo-key"] == key and (key, b["label"]) not in known
        ]
        if len(new) != 1:
            raise BenchError(f"{what}: {len(new)} new full backups in repo{key}, not 1")
        backup = new[0]
        seconds = backup["timestamp"]["stop"] - backup["timestamp"]["start"]
        size, stored = backup["info"]["size"], backup["info"]["repository"]
        found.append(
            {
                "repository": f"repo{key}",
                "label": backup["label"],
                "seconds": seconds,
                "database_bytes": size,
                # With bundles (and block incremental) pgBackRest reports only what this backup
                # stored: the delta, which for a full backup is its whole size in the repository.
                "repository_bytes": stored.get("size", stored["delta"]),
                "mb_per_s": round(ratio(mb(size), seconds), 1),
            }
        )
    return found


def replication_line(db: Db) -> PgHba:
    """pg_hba.conf with a temporary replication line for pg_basebackup (bench/database.py's PgHba,
    on the path the running cluster names; containment re-checked before each command)."""
    return PgHba(db.sh, db.psql, HBA_LINE, db.host, path=db.hba_file, backup=HBA_BACKUP, marker=HBA_MARKER)


# -- 1. data ----------------------------------------------------------------------------------------


def drop_bench(db: Db) -> None:
    db.psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE);")


def clear_leftovers(db: Db, hba: PgHba) -> None:
    """What an interrupted run left: this script's database, pg_hba line and pg_basebackup copy."""
    hba.recover()
    db.sh(f"rm -rf {BASEBACKUP_DIR}")
    comment = db.psql(
        f"SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
        f"WHERE datname = '{DB_NAME}';"
    ).strip()
    if not comment:
        exists = db.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DB_NAME}';").strip()
        if exists == "0":
            return
    if comment != DB_COMMENT:
        raise BenchError(f"a database {DB_NAME!r} exists on {db.host} and is not this script's: move it away")
    print(f"dropping the {DB_NAME} database an interrupted run left")
    drop_bench(db)


def database_sizes(db: Db) -> dict[str, int]:
    rows = db.psql(
        "SELECT datname, pg_database_size(datname) FROM pg_database WHERE datallowconn ORDER BY 1;"
    )
    return {name: int(size) for name, size in (line.split("|") for line in rows.splitlines() if "|" in line)}


def load_data(db: Db, scale: int) -> dict[str, Any]:
    free = db.free_mb(VOLUME)
    needed = scale * MB_PER_SCALE + WAL_ROOM_MB + MIN_FREE_MB
    print(f"   volume {VOLUME}: {free} MB free, the load needs ~{needed} MB")
    if needed > free:
        raise BenchError(f"~{needed} MB needed, {VOLUME} has {free} MB free: lower --scale")
    psql = db.psql_command()
    started = time.monotonic()
    db.sh(
        f"""
{psql} -c "CREATE DATABASE {DB_NAME}" -c "COMMENT ON DATABASE {DB_NAME} IS '{DB_COMMENT}'"
log=$(mktemp)
runuser -u postgres -- {db.bin("pgbench")} -h {SOCKET_DIR} -p {db.port} --initialize --scale={scale} \\
  --quiet {DB_NAME} >"$log" 2>&1 &
pid=$!
low=""
while kill -0 "$pid" 2>/dev/null; do
  free=$(df -Pm {VOLUME} | awk 'NR==2 {{print $4}}')
  if [ "$free" -lt {MIN_FREE_MB} ]; then low=$free; kill "$pid" || true; break; fi
  if [ "$free" -lt {CHECKPOINT_BELOW_MB} ]; then {psql} -c CHECKPOINT >/dev/null || true; fi
  sleep 5
done
status=0
wait "$pid" || status=$?
if [ -n "$low" ]; then
  rm -f "$log"; echo "only $low MB left on {VOLUME}: the load was stopped (lower --scale)" >&2; exit 1
fi
if [ "$status" -ne 0 ]; then tail -n 20 "$log" >&2; rm -f "$log"; exit 1; fi
rm -f "$log"
""",
        timeout=3600,
    )
    load_s = time.monotonic() - started
    # The backup is timed on a caught-up archive: every segment of the load pushed first.
    caught_up = db.sh(
        f"""
{psql} -c CHECKPOINT >/dev/null
segment=$({psql} -c "SELECT pg_walfile_name(pg_switch_wal())")
SECONDS=0
until [ "$({psql} -c "SELECT coalesce(last_archived_wal, '') >= '$segment' FROM pg_stat_archiver")" = t ]; do
  if [ "$SECONDS" -gt 1800 ]; then echo "WAL up to $segment not archived after 30 min" >&2; exit 1; fi
  sleep 1
done
echo "$SECONDS"
""",
        timeout=1900,
    )
    return {
        "scale": scale,
        "load_s": round(load_s, 1),
        "archive_catch_up_s": int(caught_up.strip()),
        "database_bytes": database_sizes(db),
        "volume_free_mb_after": db.free_mb(VOLUME),
    }


# -- 2. a full backup now -----------------------------------------------------------------------------


def require_idle(db: Db) -> None:
    for unit in BACKUP_UNITS:
        state = db.unit(unit)
        if state.get("LoadState") != "loaded":
            raise BenchError(f"{unit} is not installed on {db.host}: converge the lab (backups)")
        if state.get("ActiveState") in ("activating", "active", "deactivating"):
            raise BenchError(f"{unit} is running on {db.host}: wait for it to end, then run again")


def full_backup(db: Db) -> dict[str, Any]:
    require_idle(db)
    known = full_backups(db.info())
    db.sh(f"systemctl start {FULL_UNIT}", timeout=BACKUP_TIMEOUT)
    state = db.unit()
    require_success(state, "the full backup")
    return {
        "job_s": round(unit_seconds(state), 1),
        "repositories": new_fulls(db.info(), known, "full backup"),
    }


# -- 3. pg_basebackup, for comparison ----------------------------------------------------------------


def basebackup(db: Db, hba: PgHba, cluster_bytes: int) -> dict[str, Any]:
    free = db.free_mb("/run")
    needed = int(mb(cluster_bytes) * 1.1) + 256
    print(f"   /run on {db.host}: {free} MB free, the copy needs ~{needed} MB")
    if needed > free:
        raise BenchError(f"~{needed} MB needed in /run on {db.host}, {free} MB free: lower --scale")
    out = f"{BASEBACKUP_DIR}/copy"
    try:
        hba.add()
        text = db.sh(
            f"""
install -d -o postgres -g postgres -m 700 {BASEBACKUP_DIR}
t0=$(date +%s.%N)
runuser -u postgres -- {db.bin("pg_basebackup")} -h {SOCKET_DIR} -p {db.port} -D {out} -Ft -X stream -c fast
t1=$(date +%s.%N)
echo "$t0 $t1 $(du -sb {out} | cut -f1)"
""",
            timeout=3600,
        )
    finally:
        failures = cleanup(
            [
                ("restore pg_hba.conf", hba.restore),
                (
                    f"remove {BASEBACKUP_DIR}",
                    lambda: db.sh(f"rm -rf {BASEBACKUP_DIR}; test ! -e {BASEBACKUP_DIR}"),
                ),
            ]
        )
    if failures:  # reached only without another error in flight (that one is not hidden)
        raise BenchError("cleanup failed: " + "; ".join(failures))
    t0, t1, size = text.split()
    seconds = float(t1) - float(t0)
    return {
        "seconds": round(seconds, 1),
        "bytes": int(size),
        "mb_per_s": round(ratio(mb(int(size)), seconds), 1),
    }


# -- 4. the restore drill ---------------------------------------------------------------------------


def restore_drill(bastion: str) -> dict[str, Any]:
    started = time.time()
    contained(bastion)
    clock = time.monotonic()
    done = run(playbook_argv(DRILL_PLAYBOOK), timeout=DRILL_TIMEOUT, check=False, env=ANSIBLE_ENV)
    seconds = time.monotonic() - clock
    report = json.loads(DRILL_REPORT.read_text()) if DRILL_REPORT.is_file() else {}
    if float(report.get("started_at", 0)) < started - 1:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise BenchError(f"restore-drill.yml (exit {done.returncode}) wrote no new {DRILL_REPORT}:\n{tail}")
    if done.returncode != 0:
        print(f"   the drill FAILED (exit {done.returncode}): {report.get('failures')}")
    return {"playbook_s": round(seconds, 1), "exit": done.returncode, "report": report}


# -- 5. the app while a full backup runs ------------------------------------------------------------


def start_backup(db: Db) -> None:
    """Start the full backup without waiting for it; return once its process has started."""
    db.sh(
        f"""
started() {{ systemctl show -p ExecMainStartTimestampMonotonic --value {FULL_UNIT}; }}
before=$(started)
systemctl start --no-block {FULL_UNIT}
for _ in $(seq 120); do
  if [ "$(started)" != "$before" ]; then exit 0; fi
  sleep 0.5
done
state=$(systemctl show -p ActiveState -p ConditionResult {FULL_UNIT} | tr '\\n' ' ')
echo "{FULL_UNIT} did not start within 60 s: $state" >&2
exit 1
"""
    )


def wait_backup(db: Db) -> dict[str, str]:
    db.sh(
        f'while [ "$(systemctl show -p ActiveState --value {FULL_UNIT})" = activating ]; do sleep 2; done',
        timeout=BACKUP_TIMEOUT,
    )
    return db.unit()


def authenticated(path: str) -> bool:
    return not path.endswith("/healthz")  # bench/edge.py's rule: every other path carries the token


def measure_load(db: Db, site: Site, args: argparse.Namespace, client: str) -> dict[str, Any]:
    url = site.public_base + args.path
    headers = site.auth_headers(client) if authenticated(args.path) else {}
    contained(db.bastion)
    status, _ = site.curl(site.sentinel_ns, "GET", url, headers)
    if status != 200:
        raise BenchError(f"GET {url} from the sentinel answered {status}, not 200")
    contained(db.bastion)
    wrk(site, site.sentinel_ns, url, args, WARMUP_SECONDS, client)  # TLS sessions, pools, caches
    print(f"   wrk without a backup: {url} ({args.duration}s, {args.connections} connections)")
    contained(db.bastion)
    without = wrk(site, site.sentinel_ns, url, args, args.duration, client)
    require_idle(db)
    known = full_backups(db.info())
    start_backup(db)
    print(f"   wrk while {FULL_UNIT} runs ({args.duration}s)")
    contained(db.bastion)
    during = wrk(site, site.sentinel_ns, url, args, args.duration, client)
    running = db.unit().get("ActiveState") == "activating"
    print("   waiting for the full backup to end")
    state = wait_backup(db)
    require_success(state, "the full backup under load")
    return {
        "url": url,
        "without": without,
        "during": during,
        "backup_ran_throughout": running,
        "backup_job_s": round(unit_seconds(state), 1),
        "backups": new_fulls(db.info(), known, "full backup under load"),
    }


def load_during_backup(db: Db, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure_load` on the site bench/edge.py prepares and puts back (its loaded_site),
    with containment re-checked before every step that sends."""
    workdir = Path(tempfile.mkdtemp(prefix="tierwall-bench-backups-"))
    site = edge_site(db.lab, workdir)
    client = f"bench-{uuid.uuid4().hex[:16]}"
    with loaded_site(site, workdir, client, register=authenticated(args.path),
                     guard=lambda: contained(db.bastion)):  # fmt: skip
        return measure_load(db, site, args, client)


# -- figures ------------------------------------------------------------------------------------------


def data_figures(data: dict[str, Any]) -> list[Figure]:
    figures = [
        Figure(f"pgbench -i -s {data['scale']} load", f"{data['load_s']:.0f} s"),
        Figure("WAL archive catch-up after the load", f"{data['archive_catch_up_s']} s"),
    ]
    for name, size in data["database_bytes"].items():
        figures.append(Figure(f"database {name}", f"{mb(size):.0f} MB"))
    return figures


def backup_figures(full: dict[str, Any], base: dict[str, Any]) -> tuple[list[Figure], dict[str, float]]:
    figures = [Figure(f"{FULL_UNIT} (every repository)", f"{full['job_s']:.1f} s")]
    ratios = {}
    for repo in full["repositories"]:
        name = repo["repository"]
        figures.append(
            Figure(
                f"{name} full backup",
                f"{repo['seconds']} s, {repo['mb_per_s']:.1f} MB/s ({mb(repo['database_bytes']):.0f} MB "
                f"-> {mb(repo['repository_bytes']):.0f} MB in the repository)",
            )
        )
        ratios[name] = round(ratio(repo["mb_per_s"], base["mb_per_s"]), 2)
    figures.append(
        Figure(
            "pg_basebackup -Ft -X stream (on the db)",
            f"{base['seconds']:.1f} s, {base['mb_per_s']:.1f} MB/s ({mb(base['bytes']):.0f} MB)",
        )
    )
    figures += [Figure(f"{name} MB/s / pg_basebackup MB/s", f"{r:.2f}x") for name, r in ratios.items()]
    return figures, ratios


def drill_figures(drill: dict[str, Any], full: dict[str, Any]) -> list[Figure]:
    report = drill["report"]
    taken = {r["repository"]: r["label"] for r in full["repositories"]}
    restored = {b["repository"]: b["label"] for b in report.get("latest_backups", [])}
    figures = [
        Figure("drill passed", "yes" if report.get("passed") else "no", "yes", bool(report.get("passed"))),
        Figure(
            "drill restored the backup just taken",
            "yes" if restored == taken else f"no: {restored}",
            "yes",
            restored == taken,
        ),
        Figure("RPO (a commit to the archive, unforced)", f"{float(report.get('rpo_seconds', 0)):.1f} s"),
        Figure("restore-drill.yml in all", f"{drill['playbook_s']:.0f} s"),
    ]
    for repo in report.get("repositories", []):
        name, size, rto = repo["repository"], int(repo["restored_bytes"]), float(repo["rto_seconds"])
        figures += [
            Figure(
                f"{name} RTO",
                f"{rto:.1f} s",
                f"<= {RTO_TARGET_S:.0f} s",
                rto <= RTO_TARGET_S,
            ),
            Figure(f"{name} restore (pgbackrest restore)", f"{float(repo['restore_seconds']):.1f} s"),
            Figure(
                f"{name} restored",
                f"{size / 1e9:.2f} GB",
                f">= {RTO_MIN_BYTES / 1e9:.0f} GB",
                size >= RTO_MIN_BYTES,
            ),
        ]
    if not report.get("repositories"):
        figures.append(Figure("repositories restored", "0", ">= 1", False))
    return figures


def load_figures(load: dict[str, Any]) -> tuple[list[Figure], float | None, bool]:
    without: Result = load["without"]
    during: Result = load["during"]
    valid = without.valid and during.valid and load["backup_ran_throughout"]
    share = ratio(during.rps, without.rps)
    figures = []
    for label, r in (("without a backup", without), ("during a full backup", during)):
        ms = f"{r.p50_us / 1000:.1f} / {r.p99_us / 1000:.1f} ms"
        figures += [
            Figure(f"{load['url']} requests/s {label}", f"{r.rps:.0f}" if r.valid else "INVALID"),
            Figure(f"{load['url']} p50 / p99 {label}", ms),
            Figure(
                f"errors {label} (socket, non-2xx/3xx)",
                f"{r.socket_errors}, {r.status}",
                "0, 0",
                r.socket_errors == 0 and r.status == 0,
            ),
        ]
    figures += [
        Figure(
            "backup ran throughout the measurement",
            "yes" if load["backup_ran_throughout"] else "no",
            "yes",
            load["backup_ran_throughout"],
        ),
        Figure(f"{FULL_UNIT} under load", f"{load['backup_job_s']:.1f} s"),
        Figure(
            "requests/s during / without",
            f"{share:.2f}x" if valid else "INVALID",
            f">= {LOAD_TARGET:.2f}x",
            share >= LOAD_TARGET if valid else None,
        ),
    ]
    return figures, share if valid else None, valid


# -- the run ----------------------------------------------------------------------------------------


def body(args: argparse.Namespace) -> int:
    lab = Lab()
    bastion = str(lab.hosts[lab.first("proxy")]["tierwall_public_address"])
    contained(bastion)
    for needed in (CA, TOKEN_FILE):
        if not needed.is_file():
            raise BenchError(f"{needed} is missing: converge the lab (make converge)")
    ensure_wrk()
    db = Db(lab=lab, host=lab.first("db"), bastion=bastion, port=int(lab.ports["postgres"]))
    db.discover()
    require_idle(db)
    hba = replication_line(db)
    clear_leftovers(db, hba)
    busy = warn_if_busy()
    archiver_before = db.archiver()
    try:
        print(f"1. the {DB_NAME} database: pgbench -i -s {args.scale} on {db.host}")
        data = load_data(db, args.scale)
        print(f"2. a full backup now ({FULL_UNIT}, every repository in turn)")
        full = full_backup(db)
        print("3. pg_basebackup -Ft -X stream -c fast, on the db")
        base = basebackup(db, hba, sum(data["database_bytes"].values()))
        print("4. the restore drill (restore-drill.yml)")
        drill = restore_drill(bastion)
        print(f"5. {args.path} through the proxy, without and during a full backup")
        load = load_during_backup(db, args)
        archiver_after = db.archiver()
    finally:
        print(f"6. dropping the {DB_NAME} database")
        failures = cleanup([(f"drop the {DB_NAME} database", lambda: drop_bench(db))])
    if failures:
        raise BenchError("cleanup failed: " + "; ".join(failures))
    busy += warn_if_busy()

    figures = data_figures(data)
    part, ratios = backup_figures(full, base)
    figures += part + drill_figures(drill, full)
    part, share, valid = load_figures(load)
    figures += part
    print()
    print_table(figures)
    holds = all(f.holds for f in figures if f.holds is not None)
    target = (
        f"RTO <= {RTO_TARGET_S:.0f} s per repository at >= {RTO_MIN_BYTES / 1e9:.0f} GB, the drill passed, "
        f"requests/s during a full backup >= {LOAD_TARGET:.2f}x without"
    )
    write_report(
        "backups",
        {
            "valid": valid,
            "target": target,
            "holds": holds if valid else None,
            "settings": {
                "scale": args.scale,
                "path": args.path,
                "threads": args.threads,
                "connections": args.connections,
                "duration_s": args.duration,
            },
            "data": data,
            "full_backup": full,
            "pg_basebackup": base,
            "throughput_vs_pg_basebackup": ratios,
            "drill": drill,
            "load": {
                **{k: v for k, v in load.items() if k not in ("without", "during")},
                "without": {**asdict(load["without"]), "rps": load["without"].rps},
                "during": {**asdict(load["during"]), "rps": load["during"].rps},
                "ratio": share,
            },
            "archiver": {"before": archiver_before, "after": archiver_after},
            "figures": [f.__dict__ for f in figures],
            "concurrent_activity": busy,
        },
    )
    return verdict(
        valid,
        "socket errors or non-2xx/3xx answers, or the backup ended before the load measurement",
        target,
        holds,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=int, default=70, help="pgbench scale of the bench database (default 70, ~1 GB)"
    )
    parser.add_argument("--duration", type=int, default=30, help="seconds per wrk run (default 30)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--path", default="/client/notes", help="path to load (default /client/notes)")
    args = parser.parse_args()
    if min(args.scale, args.duration, args.threads) < 1 or args.connections < args.threads:
        parser.error("--scale, --duration and --threads must be >= 1 and --connections >= --threads")
    if not args.path.startswith("/") or "?" in args.path:
        parser.error(f"--path {args.path!r}: a path starting with / and without a query string")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    main(lambda: body(arguments))
