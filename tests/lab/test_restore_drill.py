"""The restore drill, run as an operator runs it (restore-drill.yml), with a note written through the
public site first: every repository must give back, at the drill's target time, the marker
committed before it and not the one after, pass pg_amcheck, and return notes the app's keyring
opens - the note written here among them.

Disruptive: the drill installs the server packages on the first app server and maps the
repositories' names there while it runs; it runs alone, before the parallel pass.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from public_site import Api, converge

from tierwall.paths import LAB_DIR
from tierwall.topology import APP, DB

pytestmark = [pytest.mark.lab, pytest.mark.disruptive]

REPORT = LAB_DIR / "reports" / "restore-drill.json"
# archive_timeout (60 s) and the time to push a segment to every repository.
RPO_BOUND_S = 90


@pytest.fixture(scope="module")
def drill(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("drill")
    workdir.chmod(0o700)
    api = Api(lab, workdir)
    api.healthy()
    ref, _ = api.client_with_note(f"written before the restore drill {uuid.uuid4().hex}")
    for stale in (REPORT, REPORT.with_suffix(".md")):
        stale.unlink(missing_ok=True)
    try:
        # The drill's hosts: the live db and the drill host (the first app server).
        converge(lab, "restore-drill.yml", timeout=900, hosts={*lab.names(DB), lab.names(APP)[0]})
    finally:
        api.handover(ref)
    return json.loads(Path(REPORT).read_text())


@pytest.mark.control("BAK-03")
def test_every_repository_restores_to_the_target_time(lab: Any, drill: dict[str, Any]) -> None:
    """Each repository of the stack was restored, from the backup plus its WAL, to exactly the
    target time: the marker committed before it is back, the one after it is not."""
    repositories = {r["name"] for r in lab.vars["tierwall_backup_repositories"]}
    assert {r["repository"] for r in drill["repositories"]} == repositories
    assert drill["passed"], drill["failures"]
    assert all(r["markers"] == "before" for r in drill["repositories"]), drill["repositories"]


@pytest.mark.control("BAK-03")
def test_a_table_dropped_after_the_target_time_is_back_whole(drill: dict[str, Any]) -> None:
    """The drill drops a table it filled before the target time; every restore has all its rows."""
    written = drill["dropped_table_rows_written"]
    assert written > 0
    assert [r["dropped_table_rows"] for r in drill["repositories"]] == [written] * len(drill["repositories"])


@pytest.mark.control("BAK-03")
def test_the_restored_data_is_sound_and_the_notes_open(drill: dict[str, Any]) -> None:
    """pg_amcheck finds every table and index of every restored database sound, and the app's
    keyring opens every restored note and chat message, at least the one written before the drill."""
    for repository in drill["repositories"]:
        assert repository["amcheck_rc"] == 0, repository["amcheck_output"]
        assert repository["notes"].get("unreadable") == 0, repository["notes"]
        assert repository["notes"].get("note", 0) >= 1, repository["notes"]
        assert repository["restored_bytes"] > 0


@pytest.mark.control("BAK-01")
def test_the_drill_measured_an_rpo_within_the_archive_timeout(drill: dict[str, Any]) -> None:
    """The commit the drill made reached the archive by itself, without a forced switch, within
    archive_timeout and the time to push it."""
    assert 0 <= drill["rpo_seconds"] <= RPO_BOUND_S, drill["rpo_seconds"]


@pytest.mark.control("BAK-03")
def test_the_restore_reaches_back_past_a_backup_taken_after_the_target_time(drill: dict[str, Any]) -> None:
    """The drill takes a backup after the target time: each restore names the set it started from,
    an older one than the repository's newest, and still ends exactly at the target (the markers)."""
    for repository in drill["repositories"]:
        restored, newest = repository["restored_set"], repository["newest_set"]
        assert restored, f"{repository['repository']}: the restore named no backup set"
        assert newest > restored, f"{repository['repository']}: restored {restored}, newest {newest}"
        assert repository["crossed_backup"] is True
        assert repository["markers"] == "before"
