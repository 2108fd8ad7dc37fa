"""The db lost for good - machine, disk and volume - and rebuilt from its backups, as an operator
would: a note is written through the public site and its WAL archived; the controller's secrets
and CA are wiped and taken back from the key escrow alone; `tierwall lab replace` throws the db
away and boots a fresh machine in its place; site.yml must then stop at the new, empty cluster
(never back it up over the old one) and name restore-db.yml; restore-db.yml restores the latest
backup plus every archived segment, and the public site serves the note again.

Disruptive: the db is gone for minutes; it runs alone, before the parallel pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from public_site import RECAP, Api, converge

from tierwall import escrow
from tierwall.lab.inventory import INVENTORY
from tierwall.paths import ANSIBLE_DIR, LAB_DIR
from tierwall.topology import DB

pytestmark = [pytest.mark.lab, pytest.mark.disruptive]

IDENTITY = "SELECT system_identifier, timeline_id FROM pg_control_system(), pg_control_checkpoint()"
PSQL = "sudo -n -u postgres psql -X -A -t -v ON_ERROR_STOP=1 -d postgres -c"


def _sql(lab: Any, db: str, query: str) -> str:
    done = lab.ssh(db, f'{PSQL} "{query}"')
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _archive_now(lab: Any, db: str) -> None:
    """Close the segment holding what was just committed and wait until it is archived."""
    segment = _sql(lab, db, "SELECT pg_walfile_name(pg_switch_wal())")
    waited = lab.ssh(
        db,
        f"for i in $(seq 90); do {PSQL} \"SELECT last_archived_wal >= '{segment}' FROM pg_stat_archiver\""
        " | grep -qx t && exit 0; sleep 1; done; exit 1",
        timeout=120,
    )
    assert waited.returncode == 0, f"segment {segment} was not archived within 90 s"


def _tierwall(*args: str) -> None:
    argv = [sys.executable, "-m", "tierwall.cli", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"tierwall {' '.join(args)}: {done.stdout}{done.stderr}"


def _from_the_escrow(saved: Path) -> dict[str, bytes]:
    """Export the escrow, move the secrets and the CA off the controller (to ``saved``), recover
    them from the escrow alone; what came back."""
    _tierwall("escrow", "export", "--lab")
    # Each member's name is its place under .lab (secrets/NAME, pki/NAME).
    before = {m.name: m.data for m in escrow.lab_members()}
    for name in before:
        (saved / name).parent.mkdir(parents=True, exist_ok=True)
        (LAB_DIR / name).rename(saved / name)
    _tierwall("escrow", "recover", str(escrow.LAB_ESCROW), "-i", str(escrow.LAB_IDENTITY), "--lab")
    after = {name: (LAB_DIR / name).read_bytes() for name in before if (LAB_DIR / name).is_file()}
    differs = {name: after.get(name, b"(missing)") for name in before if after.get(name) != before[name]}
    if not differs:
        shutil.rmtree(saved)
    return differs


def _put_back(saved: Path) -> None:
    """After a failed or wrong recovery: the moved files go back where they were."""
    for path in sorted(p for p in saved.rglob("*") if p.is_file()) if saved.exists() else []:
        target = LAB_DIR / path.relative_to(saved)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)


def _site_yml(playbook: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(INVENTORY),
         str(ANSIBLE_DIR / "playbooks" / playbook)],
        capture_output=True, text=True, env=env, timeout=1500, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def disaster(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    (db,) = lab.names(DB)
    workdir = tmp_path_factory.mktemp("disaster")
    workdir.chmod(0o700)
    api = Api(lab, workdir)
    api.healthy()
    text = f"written before the db was lost {uuid.uuid4().hex}"
    ref, note_id = api.client_with_note(text)
    before = _sql(lab, db, IDENTITY)
    _archive_now(lab, db)
    saved = workdir / "moved-off-the-controller"
    try:
        escrow_differs = _from_the_escrow(saved)
    finally:
        _put_back(saved)
    _tierwall("lab", "replace", db)
    plain = _site_yml("site.yml")
    converge(lab, "restore-db.yml", timeout=1500)
    api.healthy()
    result = {
        "db": db, "api": api, "ref": ref, "note_id": note_id, "text": text, "before": before.split("|"),
        "plain": plain, "after": _sql(lab, db, IDENTITY).split("|"),
        "restore_command": _sql(lab, db, "SHOW restore_command"),
        "escrow_differs": escrow_differs,
    }  # fmt: skip
    yield result
    api.handover(ref)


@pytest.mark.control("BAK-03")
def test_a_plain_converge_refuses_to_back_up_the_rebuilt_empty_db(disaster: dict[str, Any]) -> None:
    """site.yml on the fresh db stops at the backup role, naming restore-db.yml: it never lets a
    new, empty cluster take the old one's place in the repositories unnoticed."""
    plain = disaster["plain"]
    recap = {m["host"]: int(m["f"]) for m in RECAP.finditer(plain.stdout)}
    assert recap.get(disaster["db"]) == 1, plain.stdout[-3000:]
    assert [h for h, failed in recap.items() if failed and h != disaster["db"]] == []
    assert re.search(r"not the one stanza \S+ backs up.*restore-db\.yml", plain.stdout.replace("\n", " "))


@pytest.mark.control("BAK-03")
def test_the_rebuilt_db_serves_every_note_archived_before_the_loss(disaster: dict[str, Any]) -> None:
    """The note written through the public site before the loss reads back through it after the
    restore: the backup plus the WAL archived up to the loss, replayed on the fresh machine."""
    assert disaster["api"].note_text(disaster["ref"], disaster["note_id"]) == disaster["text"]


@pytest.mark.control("BAK-03")
def test_the_restored_cluster_is_the_lost_one_on_a_new_timeline(disaster: dict[str, Any]) -> None:
    """Same system identifier (the lost cluster, not a new one with the data copied in), promoted
    onto a later timeline, and the replay's restore_command is not left in its configuration."""
    (system_id, timeline), (now_id, now_timeline) = disaster["before"], disaster["after"]
    assert now_id == system_id
    assert int(now_timeline) > int(timeline)
    assert disaster["restore_command"] == ""


@pytest.mark.control("BAK-04")
def test_the_secrets_and_ca_come_back_from_the_escrow_alone(disaster: dict[str, Any]) -> None:
    """Every secret and CA file, moved off the controller before the restore, came back from the
    escrow byte for byte; the restore above ran with them, and the note read back."""
    assert disaster["escrow_differs"] == {}
    assert disaster["api"].note_text(disaster["ref"], disaster["note_id"]) == disaster["text"]
