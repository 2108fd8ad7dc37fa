"""The whole path, as the platform promises it: internet -> proxy -> app -> PostgreSQL and back.

"The internet" is the lab's sentinel host: every request runs inside its network namespace with
curl, over HTTPS to the proxy's public address, trusting exactly the lab's CA, with the API token
the app role provisioned (the shared secret in .lab/secrets). What arrived is then checked where it
lives: on the db, with pg_dump and psql as the postgres user (read-only, except the restart of
PostgreSQL that the availability check needs), and in the proxy's and the app's logs.

Each test registers its own client with a random opaque reference, a unique name and unique note
text, so the checks on the dumps cannot be fooled by other data, and it leaves nothing behind
(the handover removes the client).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Inventory, connect, is_verify
from sealed_rows import SELECT_SEALED, TABLES, platform_keyring, unreadable

from tierwall.paths import LAB_DIR

LAB_CA = Path(os.environ.get("TIERWALL_LAB_CA", LAB_DIR / "pki" / "ca.crt"))
TOKEN_FILE = Path(os.environ.get("TIERWALL_APP_API_TOKEN_FILE", LAB_DIR / "secrets" / "app-api-token"))
CLIENT_HEADER = "Tierwall-Client-Ref"

pytestmark = [pytest.mark.lab]
# What the read-only verify account may never do (docs/operations/verification.md).
SUPERUSER = pytest.mark.verify_never(
    "reads the databases as PostgreSQL's superuser (runuser -u postgres): root in effect"
)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, list[str]]
    body: Any


@dataclass
class Site:
    """The public site as a browser on the internet reaches it (the sentinel in the lab)."""

    domain: str
    public_address: str
    namespace: str | None
    token: str
    workdir: Path
    set_cookies: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, *, client: str | None = None,
             headers: dict[str, str] | None = None, auth: bool = True) -> Response:  # fmt: skip
        """One HTTPS request through the proxy. The token and the body go through files (mode
        0600), never the command line."""
        lines = ['header = "Content-Type: application/json"']
        if auth:
            lines.append(f'header = "Authorization: Bearer {self.token}"')
        if client is not None:
            lines.append(f'header = "{CLIENT_HEADER}: {client}"')
        for name, value in (headers or {}).items():
            lines.append(f'header = "{name}: {value}"')
        config = self.workdir / f"curl-{uuid.uuid4().hex}.conf"
        config.touch(mode=0o600)
        config.write_text("\n".join(lines) + "\n")
        argv = [
            "curl", "--silent", "--show-error", "--max-time", "20", "--request", method,
            "--config", str(config), "--dump-header", "-", "--output", "-",
            "--resolve", f"{self.domain}:443:{self.public_address}",
        ]  # fmt: skip
        if LAB_CA.exists() and self.namespace:
            argv += ["--cacert", str(LAB_CA)]
        if body is not None:
            data = self.workdir / f"body-{uuid.uuid4().hex}.json"
            data.touch(mode=0o600)
            data.write_text(json.dumps(body))
            argv += ["--data-binary", f"@{data}"]
        argv.append(f"https://{self.domain}{path}")
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        try:
            done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=40, check=False)
        finally:
            for leftover in self.workdir.glob("*-*.*"):
                leftover.unlink(missing_ok=True)
        assert done.returncode == 0, f"{method} {path}: curl exit {done.returncode}: {done.stderr}"
        # text mode has turned the CRLFs into newlines
        head, _, payload = done.stdout.partition("\n\n")
        status_line, *header_lines = head.splitlines()
        headers: dict[str, list[str]] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        self.set_cookies += headers.get("set-cookie", [])
        status = int(status_line.split()[1])
        return Response(status, headers, json.loads(payload) if payload.strip() else None)

    def new_client(self, name: str) -> str:
        ref = f"e2e-{uuid.uuid4().hex[:16]}"
        response = self.call("PUT", "/client", {"name": name}, client=ref)
        assert response.status == 201, response
        return ref


@dataclass(frozen=True)
class Database:
    """Read-only looks at the db host as the postgres superuser (peer authentication)."""

    host: Any

    def dump(self, database: str) -> str:
        done = self.host.run("runuser -u postgres -- pg_dump --no-password --dbname=%s", database)
        assert done.rc == 0, done.stderr
        assert "CREATE TABLE" in done.stdout, f"the dump of {database} holds no table: is the schema applied?"
        return done.stdout

    def scalar(self, database: str, query: str) -> str:
        done = self.host.run(
            "runuser -u postgres -- psql --no-psqlrc --no-password -X -A -t -v ON_ERROR_STOP=1 -d %s -c %s",
            database, query,
        )  # fmt: skip
        assert done.rc == 0, done.stderr
        return done.stdout.strip()

    def file_id(self, ref: str) -> str:
        assert re.fullmatch(r"e2e-[0-9a-f]{16}", ref)  # safe to quote: generated here
        return self.scalar("identity", f"SELECT file_id FROM clients WHERE client_ref = '{ref}'")

    def restart(self) -> None:
        units = self.host.run("systemctl list-units --plain --no-legend --type=service 'postgresql@*'")
        names = [line.split()[0] for line in units.stdout.splitlines() if line.strip()]
        assert len(names) == 1, f"expected one PostgreSQL cluster unit, found {names}"
        done = self.host.run("systemctl restart %s", names[0])
        assert done.rc == 0, done.stderr
        assert self.host.service(names[0]).is_running


@pytest.fixture(scope="module")
def site(inventory: Inventory, tmp_path_factory: pytest.TempPathFactory) -> Site:
    proxy = inventory.first("proxy")
    hostvars = inventory.hostvars(proxy)
    lab = hostvars.get("tierwall_target") == "lab"
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed on this machine: apt-get install curl")
    if lab and not LAB_CA.exists():
        pytest.fail(f"the lab CA {LAB_CA} is missing: converge the lab (the pki role creates it)")
    if not TOKEN_FILE.exists():
        if is_verify(inventory.all_vars):
            # The scheduled check's runner is not given the token: whoever holds it writes notes.
            pytest.skip(f"the API token {TOKEN_FILE} is not given to the verify account's runner "
                        "(docs/operations/verification.md)")
        pytest.fail(f"the API token {TOKEN_FILE} is missing: converge the app tier (application.yml)")
    workdir = tmp_path_factory.mktemp("e2e")
    workdir.chmod(0o700)
    site = Site(
        domain=hostvars["tierwall_domain"],
        public_address=hostvars["tierwall_public_address"],
        namespace=hostvars.get("tierwall_lab_namespaces", {}).get("sentinel") if lab else None,
        token=TOKEN_FILE.read_text().strip(),
        workdir=workdir,
    )
    for _ in range(30):  # the pools connect in the background after a (re)start
        if site.call("GET", "/healthz", auth=False).status == 200:
            return site
        time.sleep(1)
    pytest.fail("the application behind the proxy does not report both databases healthy (/healthz)")


@pytest.fixture(scope="module")
def db(inventory: Inventory) -> Database:
    return Database(connect(inventory, inventory.first("db")))


@pytest.fixture(scope="module")
def proxy_host(inventory: Inventory) -> Any:
    return connect(inventory, inventory.first("proxy"))


@pytest.fixture(scope="module")
def app_host(inventory: Inventory) -> Any:
    return connect(inventory, inventory.first("app"))


def _unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def _handover(site: Site, ref: str) -> Response:
    response = site.call("POST", "/client/handover", client=ref)
    assert response.status == 200, response
    return response


# -- APP-01: written through the proxy, stored encrypted and pseudonymised ------------------------


@pytest.mark.control("APP-01")
def test_a_note_written_through_the_proxy_reads_back(site: Site) -> None:
    """A psychologist's note goes in over HTTPS through the proxy and comes back intact, alone."""
    ref = site.new_client(_unique("Erika Muster"))
    text = _unique("Session: the client talked about sleeping badly since the move;")
    created = site.call("POST", "/client/notes", {"text": text}, client=ref)
    assert created.status == 201, created
    note_id = created.body["note_id"]
    one = site.call("GET", "/client/note", client=ref, headers={"Tierwall-Note-Id": note_id})
    assert (one.status, one.body["text"]) == (200, text)
    listed = site.call("GET", "/client/notes", client=ref)
    assert [n["text"] for n in listed.body] == [text]
    assert listed.headers["cache-control"] == ["no-store"]
    _handover(site, ref)


@pytest.mark.control("APP-01")
@SUPERUSER
def test_the_databases_hold_only_ciphertext_and_pseudonyms(site: Site, db: Database) -> None:
    """A full dump of the notes database contains neither the note's text nor the client's name
    or reference (only the random file id), and the identity database holds no note content."""
    name, text = _unique("Zoë Vertraulich"), _unique("Nightmares about the accident, third time this month")
    ref = site.new_client(name)
    assert site.call("POST", "/client/notes", {"text": text}, client=ref).status == 201
    assert (
        site.call("POST", "/client/chat", {"sender": "client", "text": "chat: " + text}, client=ref).status
        == 201
    )
    file_id = db.file_id(ref)
    notes_dump = db.dump("notes")
    assert file_id in notes_dump, "the dump does not hold this client's rows: the check would prove nothing"
    for secret, what in ((text, "note text"), ("Nightmares", "a word of the note"), (name, "client name"),
                         (ref, "client reference")):  # fmt: skip
        assert secret not in notes_dump, f"the notes database dump contains the {what}"
    identity_dump = db.dump("identity")
    assert name in identity_dump, "the identity dump does not hold the client: the check would prove nothing"
    assert text not in identity_dump
    assert "Nightmares" not in identity_dump
    _handover(site, ref)


@pytest.mark.control("APP-01")
@SUPERUSER
def test_every_stored_note_and_message_authenticates_in_its_own_context(site: Site, db: Database) -> None:
    """Every row of notes and chat_messages, not only this test's: its stored bytes (not a dump's
    rendering) open under the platform's keyring, bound to the row's own kind, file and id. A row
    stored as plaintext, written past the app, or moved from another file or table fails GCM's tag.
    This test's own note and message, sent through the proxy, must be among the rows read."""
    keyring = platform_keyring()
    ref = site.new_client(_unique("Alle Zeilen"))
    assert site.call("POST", "/client/notes", {"text": _unique("every row")}, client=ref).status == 201
    message = {"sender": "client", "text": "every row"}
    assert site.call("POST", "/client/chat", message, client=ref).status == 201
    file_id = db.file_id(ref)
    try:
        for table, (id_column, kind) in TABLES.items():
            listing = db.scalar("notes", SELECT_SEALED.format(id=id_column, table=table))
            assert f"|{file_id}|" in listing, f"{table}: this test's row is not among those read"
            bad = unreadable(keyring, kind, listing)
            assert bad == [], (
                f"{table}: {len(bad)} of {len(listing.splitlines())} rows are no ciphertext "
                f"of the platform's: {bad[:10]}"
            )
    finally:
        _handover(site, ref)


@pytest.mark.control("APP-01")
def test_no_identifier_reaches_the_logs(site: Site, proxy_host: Any, app_host: Any) -> None:
    """The proxy logs request paths and the app logs routes: neither may name the client, a note
    or its text, because identifiers travel in headers and bodies only."""
    name, text = _unique("Logan Nichtimlog"), _unique("Note that must not be logged")
    ref = site.new_client(name)
    note_id = site.call("POST", "/client/notes", {"text": text}, client=ref).body["note_id"]
    site.call("GET", "/client/note", client=ref, headers={"Tierwall-Note-Id": note_id})
    _handover(site, ref)
    time.sleep(1)  # nginx writes the line after the response
    assert proxy_host.run("grep -c -F /client/note /var/log/nginx/access.log").stdout.strip() != "0"
    for secret in (ref, name, note_id, text):
        found = proxy_host.run("zgrep -F -l -- %s /var/log/nginx/*.log*", secret)
        assert found.rc == 1, f"{secret!r} is in the proxy's logs: {found.stdout}"
        journal = app_host.run(
            "journalctl -u tierwall-notes --since -10min --no-pager | grep -c -F -- %s", secret
        )
        assert journal.stdout.strip() == "0", f"{secret!r} is in the app's journal"


@pytest.mark.control("APP-01")
@pytest.mark.disruptive  # PostgreSQL restarts under the app
def test_a_postgresql_restart_is_survived(site: Site, db: Database) -> None:
    """PostgreSQL restarts while the app serves; the very next request succeeds on a fresh
    connection (the pool checks each connection it hands out)."""
    text = _unique("Written before the database restarted")
    ref = site.new_client(_unique("Rita Neustart"))
    assert site.call("POST", "/client/notes", {"text": text}, client=ref).status == 201
    db.restart()
    after = site.call("GET", "/client/notes", client=ref)
    assert after.status == 200, f"the first request after the restart failed: {after}"
    assert [n["text"] for n in after.body] == [text]
    _handover(site, ref)


# -- RET-04: handover, then nothing of the client remains -----------------------------------------


@pytest.mark.control("RET-04")
@SUPERUSER
def test_after_handover_no_row_of_the_client_remains(site: Site, db: Database) -> None:
    """The handover returns every note decrypted, then no row of the client remains in either
    database: no note, no chat message, no mapping, and neither its reference, name nor file id
    anywhere in a full dump. (This client has no contract: contracts are kept 10 years by law and
    purged by the retention timer, tested with the application.)"""
    name = _unique("Hanna Übergabe")
    texts = [_unique("First session"), _unique("Second session")]
    ref = site.new_client(name)
    for text in texts:
        assert site.call("POST", "/client/notes", {"text": text}, client=ref).status == 201
    assert (
        site.call("POST", "/client/chat", {"sender": "psychologist", "text": "See you"}, client=ref).status
        == 201
    )
    file_id = db.file_id(ref)
    export = site.call("GET", "/client/export", client=ref)
    assert [n["text"] for n in export.body["notes"]] == texts

    handover = _handover(site, ref)
    assert handover.body["client_name"] == name
    assert [n["text"] for n in handover.body["notes"]] == texts
    assert handover.body["deleted"] == {"notes": 2, "chat_messages": 1, "clients": 1}

    for table in ("notes", "chat_messages"):
        assert db.scalar("notes", f"SELECT count(*) FROM {table} WHERE file_id = '{file_id}'") == "0"
    assert db.scalar("identity", f"SELECT count(*) FROM clients WHERE client_ref = '{ref}'") == "0"
    assert db.scalar("identity", f"SELECT count(*) FROM contracts WHERE client_ref = '{ref}'") == "0"
    dumps = db.dump("notes") + db.dump("identity")
    for trace in (ref, name, file_id, *texts):
        assert trace not in dumps, f"{trace!r} is still in a database after the handover"
    assert site.call("GET", "/client/notes", client=ref).status == 404


# -- COOK-01: at most one strictly necessary cookie -------------------------------------------------


@pytest.mark.control("COOK-01")
def test_at_most_one_cookie_and_only_a_strict_one(site: Site) -> None:
    """Every response of this suite (and of a fresh round trip) sets at most one cookie, and that
    one only Secure, HttpOnly and SameSite=Strict. The reference app sets none."""
    ref = site.new_client(_unique("Keks Frei"))
    site.call("POST", "/client/notes", {"text": "cookie check"}, client=ref)
    site.call("GET", "/client/notes", client=ref)
    site.call("GET", "/healthz", auth=False)
    _handover(site, ref)
    names = {c.split("=", 1)[0].strip() for c in site.set_cookies}
    assert len(names) <= 1, f"more than one cookie: {sorted(names)}"
    for cookie in site.set_cookies:
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict"} <= attributes, cookie


@pytest.mark.control("ENC-02")
@SUPERUSER
def test_the_apps_own_database_sessions_use_tls_1_3(site: Site, db: Database) -> None:
    """Not a test client: the sessions the running application itself holds (its pools, named by
    its application_name) are TLS 1.3 to both databases, as the server sees them."""
    assert site.call("GET", "/healthz", auth=False).status == 200  # both pools hold a session now
    rows = db.scalar(
        "postgres",
        "SELECT a.usename, s.ssl, coalesce(s.version, '') FROM pg_stat_activity a JOIN pg_stat_ssl s "
        "USING (pid) WHERE a.application_name = 'tierwall-notes' AND a.backend_type = 'client backend'",
    )
    sessions = [line.split("|") for line in rows.splitlines()]
    assert {user for user, _, _ in sessions} == {"notes_app", "identity_app"}, sessions
    assert all(ssl == "t" and version == "TLSv1.3" for _, ssl, version in sessions), sessions
