"""v2 change of psychologist and end of the file.

A writes notes, the operator assigns B, A re-wraps the file's data keys for B on A's device
(tierwall_notes_client.rewrap_note) and leaves; B writes too and, as the last psychologist, takes
the encrypted bundle, which B's client decrypts, notes by A included. Then nothing of the file is
left on the platform but the contract records under their legal hold.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from e2e_testkit import (
    File,
    Person,
    assert_no_identity_rows,
    assign,
    hex_of,
    open_file,
    open_record,
    post,
    psychologist,
    read,
)
from notes_testkit import Api, PgCluster
from tierwall_notes.e2e.files import add_years
from tierwall_notes_client import NoteContext, NoteEnvelope, encrypt_note, rewrap_note
from tierwall_notes_client.errors import NotARecipientError

A_NOTES = ["Séance 1: first contact, sleep problems.", "Séance 2: work conflict, agreed on a diary."]
B_NOTE = "Séance 3 (new psychologist): read the diary together."


def _rewrapped(
    reader: Person, file: File, to: Person, records: list[dict[str, Any]], kind: str
) -> list[dict]:
    field = "note_id" if kind == "note" else "message_id"
    out = []
    for record in records:
        context = NoteContext(file.file_id, uuid.UUID(record[field]), kind)
        envelope = NoteEnvelope.from_json(record["envelope"])
        trusted = [file.client.public] if file.client else []
        new = rewrap_note(envelope, context, reader.identity, trusted, [to.public])
        out.append({field: record[field], "envelope": new.to_json()})
    return out


def _rewrap(v2: Api, a: Person, b: Person, file: File) -> dict[str, Any]:
    body = {
        "to": b.id,
        "notes": _rewrapped(a, file, b, read(v2, a, file), "note"),
        "chat": _rewrapped(a, file, b, read(v2, a, file, "chat"), "chat"),
    }
    status, _, result = v2.call("POST", "/v2/client/rewrap", body, client=file.ref, token=a.token)
    assert status == 200, result
    return result


def _start(v2: Api, pg: PgCluster, tmp_path: Path) -> tuple[Person, Person, File]:
    a, b = psychologist(v2, pg, tmp_path), psychologist(v2, pg, tmp_path)
    file = open_file(v2, a, "Hand Over")
    assert file.client is not None
    for text in A_NOTES:
        post(v2, a, file, text, [a.public])
    post(v2, file.client, file, "See you Tuesday", [a.public, file.client.public], kind="chat")
    contract = {"package": "10 sessions", "price_cents": 150000, "started_on": "2026-01-05"}
    assert v2.call("POST", "/v2/client/contracts", contract, client=file.ref, token=a.token)[0] == 201
    assign(pg, file.ref, b.id)
    return a, b, file


def test_change_of_psychologist_then_handover_leaves_nothing_of_the_file(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    a, b, file = _start(v2, pg, tmp_path)
    before = read(v2, b, file)  # assigned: B may fetch, but holds no wrapped key yet
    with pytest.raises(NotARecipientError):
        open_record(b, file.file_id, before[0], [a.public])
    status, _, body = v2.call("POST", "/v2/client/release", client=file.ref, token=a.token)
    assert (status, "rewrap" in body["error"]) == (409, True)  # nobody else could read the file
    result = _rewrap(v2, a, b, file)
    assert result == {"notes_added": 2, "chat_added": 1, "notes_missing": 0, "chat_missing": 0}
    status, _, body = v2.call("POST", "/v2/client/handover", client=file.ref, token=b.token)
    assert status == 409  # A is still assigned: the notes go to the last psychologist only
    assert v2.call("POST", "/v2/client/release", client=file.ref, token=a.token)[0] == 200
    assert v2.call("GET", "/v2/client/notes", client=file.ref, token=a.token)[0] == 403
    a_keys = pg.execute(
        "notes", "SELECT count(*) FROM e2e.note_keys WHERE fingerprint = %s", (a.public.fingerprint,)
    )
    assert a_keys == [(0,)]
    _, b_envelope = post(v2, b, file, B_NOTE, [b.public])
    ciphertexts = [NoteEnvelope.from_json(r["envelope"]).ciphertext for r in read(v2, b, file)]
    dumped = pg.dump("notes")
    assert all(hex_of(c) in dumped for c in ciphertexts)  # the check below looks for the right thing
    assert str(file.file_id) in dumped

    status, _, bundle = v2.call("POST", "/v2/client/handover", client=file.ref, token=b.token)
    assert status == 200, bundle
    texts = [open_record(b, file.file_id, n, [a.public]) for n in bundle["notes"]]
    assert texts == [*A_NOTES, B_NOTE]  # including A's notes, verified against A's key
    assert bundle["deleted"] == {
        "notes": 3,
        "chat_messages": 1,
        "clients": 1,
        "accounts": 1,
        "assignments": 1,
    }
    [kept] = bundle["kept"]["contracts"]
    today = dt.datetime.now(dt.UTC).date()
    assert kept["ended_at"] == today.isoformat()
    assert kept["hold_until"] == add_years(today, 10).isoformat()
    assert "10 years" in bundle["kept"]["legal_hold"]
    _assert_nothing_left(pg, file, [*ciphertexts, b_envelope.ciphertext])
    assert v2.call("POST", "/v2/client/handover", client=file.ref, token=b.token)[0] == 403  # gone
    assert file.client is not None
    assert v2.call("GET", "/v2/client/chat", client=file.ref, token=file.client.token)[0] == 401


def _assert_nothing_left(pg: PgCluster, file: File, ciphertexts: list[bytes]) -> None:
    for table in ("notes", "chat_messages"):
        rows = pg.execute("notes", f"SELECT count(*) FROM e2e.{table} WHERE file_id = %s", (file.file_id,))
        assert rows == [(0,)], table
    assert_no_identity_rows(pg, file)
    notes_dump, identity_dump = pg.dump("notes"), pg.dump("identity")
    assert str(file.file_id) not in notes_dump + identity_dump
    for ciphertext in ciphertexts:
        assert hex_of(ciphertext) not in notes_dump
    # What stays: the contract records (client_ref and sealed terms), under their legal hold.
    assert pg.execute(
        "identity", "SELECT count(*) FROM e2e.contracts WHERE client_ref = %s", (file.ref,)
    ) == [(1,)]


def test_a_rewrap_must_keep_the_signed_envelope(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    a, b, file = _start(v2, pg, tmp_path)
    [first, _] = _rewrapped(a, file, b, read(v2, a, file), "note")
    tampered = NoteEnvelope.from_json(first["envelope"])
    tampered = replace(tampered, ciphertext=bytes(len(tampered.ciphertext)))
    body = {"to": b.id, "notes": [{"note_id": first["note_id"], "envelope": tampered.to_json()}]}
    assert v2.call("POST", "/v2/client/rewrap", body, client=file.ref, token=a.token)[0] == 400
    stranger = psychologist(v2, pg, tmp_path)  # not assigned: no keys for them
    body = {"to": stranger.id, "notes": [first]}
    assert v2.call("POST", "/v2/client/rewrap", body, client=file.ref, token=a.token)[0] == 409
    assert (
        v2.call("POST", "/v2/client/rewrap", {"to": a.id, "notes": [first]}, client=file.ref, token=b.token)[
            0
        ]
        == 200
    )
    # B wrapped nothing new for A (A had a key already); B's own keys came from nothing: still unreadable.
    assert pg.execute(
        "notes", "SELECT count(*) FROM e2e.note_keys WHERE fingerprint = %s", (b.public.fingerprint,)
    ) == [(0,)]


def test_handover_refused_to_a_psychologist_without_the_keys(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    a, b, file = _start(v2, pg, tmp_path)
    # An operator removes A's assignment directly: B is now the only one, but holds no wrapped key.
    pg.execute("identity", "DELETE FROM e2e.assignments WHERE psychologist_id = %s", (a.id,))
    status, _, body = v2.call("POST", "/v2/client/handover", client=file.ref, token=b.token)
    assert status == 409
    assert "rewrapped" in body["error"]
    assert pg.execute("notes", "SELECT count(*) FROM e2e.notes WHERE file_id = %s", (file.file_id,)) == [(2,)]


def test_a_closing_file_refuses_writes_and_an_interrupted_handover_completes(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy)
    post(v2, psy, file, A_NOTES[0], [psy.public])
    # State after a crash between the notes delete and the identity delete:
    pg.execute("identity", "UPDATE e2e.clients SET closing_at = now() WHERE client_ref = %s", (file.ref,))
    pg.execute("notes", "DELETE FROM e2e.notes WHERE file_id = %s", (file.file_id,))
    note_id = uuid.uuid4()
    late = encrypt_note("late write", NoteContext(file.file_id, note_id), psy.identity, [])
    body = {"note_id": str(note_id), "envelope": late.to_json()}
    status, _, payload = v2.call("POST", "/v2/client/notes", body, client=file.ref, token=psy.token)
    assert (status, "being deleted" in payload["error"]) == (409, True)
    status, _, bundle = v2.call("POST", "/v2/client/handover", client=file.ref, token=psy.token)
    assert status == 200, bundle
    assert bundle["notes"] == []
    assert bundle["deleted"]["clients"] == 1
    assert pg.execute("identity", "SELECT count(*) FROM e2e.clients WHERE client_ref = %s", (file.ref,)) == [
        (0,)
    ]
