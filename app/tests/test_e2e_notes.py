"""v2 notes and chat: the server stores the clients' envelopes as sent and refuses the wrong caller.

Every text is encrypted and decrypted by tierwall_notes_client; the server only sees envelopes.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from dump_attack import attack, parse_targets
from e2e_testkit import File, Person, assign, dumped_bytea, open_file, open_record, post, psychologist, read
from notes_testkit import Api, PgCluster
from tierwall_notes_client import (
    NoteContext,
    PinStore,
    PublicIdentity,
    decrypt_note,
    encrypt_note,
)
from tierwall_notes_client.errors import DecryptionError, NotARecipientError, PinMismatchError

NOTE = "Séance 3: the client spoke about the accident for the first time."


def test_note_is_stored_and_returned_as_sent_and_decrypts_for_its_author(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy)
    note_id, sent = post(v2, psy, file, NOTE, [psy.public])
    [record] = read(v2, psy, file)
    assert record["note_id"] == str(note_id)
    assert record["file_id"] == str(file.file_id)  # the ids it was bound to, kept by the server
    assert record["envelope"] == sent.to_json()
    assert open_record(psy, file.file_id, record, []) == NOTE
    status, headers, one = v2.call(
        "GET", "/v2/client/note", client=file.ref, token=psy.token, headers={"Tierwall-Note-Id": str(note_id)}
    )
    assert (status, one) == (200, record)
    assert "set-cookie" not in headers
    assert headers["cache-control"] == "no-store"
    stored = pg.execute("notes", "SELECT file_id, ciphertext FROM e2e.notes WHERE note_id = %s", (note_id,))
    assert stored == [(file.file_id, sent.ciphertext)]


def test_another_psychologist_gets_403_and_cannot_decrypt_a_dump(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    a, b = psychologist(v2, pg, tmp_path), psychologist(v2, pg, tmp_path)
    file = open_file(v2, a)
    note_id, sent = post(v2, a, file, NOTE, [a.public])
    calls = [
        ("GET", "/v2/client", None),
        ("GET", "/v2/client/notes", None),
        ("GET", "/v2/client/chat", None),
        ("GET", "/v2/client/contracts", None),
        ("GET", "/v2/client/data-export", None),
        ("PUT", "/v2/client/identity", {"name": "Hijacked"}),
        ("PUT", "/v2/client", {"name": "Hijacked"}),
        ("POST", "/v2/client/handover", None),
        ("POST", "/v2/client/erase", None),
        ("POST", "/v2/client/release", None),
        ("POST", "/v2/client/rewrap", {"to": b.id, "notes": []}),
    ]
    for method, path, body in calls:
        status, _, payload = v2.call(method, path, body, client=file.ref, token=b.token)
        assert status == 403, (method, path, payload)
    own = {"Tierwall-Note-Id": str(note_id)}
    assert v2.call("GET", "/v2/client/note", client=file.ref, token=b.token, headers=own)[0] == 403
    _, b_note = post_as_stranger(v2, b, file)
    assert b_note == 403
    assert v2.call("GET", "/v2/client/notes", client="c-does-not-exist", token=b.token)[0] == 403
    assert read(v2, a, file)[0]["envelope"] == sent.to_json()  # nothing changed
    # B with a dump of the notes database: A's record is in it as sent, B's key opens none of it.
    dump = pg.dump("notes")
    targets = parse_targets(dump)
    assert (targets[note_id].nonce, targets[note_id].ciphertext) == (sent.nonce, sent.ciphertext)
    assert attack([targets[note_id]], {b.identity.encryption_secret}, dumped_bytea(dump)) == {}
    assert attack([targets[note_id]], {a.identity.encryption_secret}, dumped_bytea(dump)) == {note_id: NOTE}
    with pytest.raises(NotARecipientError):
        decrypt_note(sent, NoteContext(file.file_id, note_id), b.identity, [a.public])


def post_as_stranger(v2: Api, stranger: Person, file: File) -> tuple[uuid.UUID, int]:
    note_id = uuid.uuid4()
    envelope = encrypt_note("x", NoteContext(file.file_id, note_id), stranger.identity, [])
    body = {"note_id": str(note_id), "envelope": envelope.to_json()}
    return note_id, v2.call("POST", "/v2/client/notes", body, client=file.ref, token=stranger.token)[0]


def test_a_ciphertext_moved_to_another_file_or_kind_does_not_decrypt(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    psy = psychologist(v2, pg, tmp_path)
    victim, other = open_file(v2, psy), open_file(v2, psy)
    note_id, _ = post(v2, psy, victim, NOTE, [psy.public])
    pg.execute("notes", "UPDATE e2e.notes SET file_id = %s WHERE note_id = %s", (other.file_id, note_id))
    [moved] = read(v2, psy, other)
    with pytest.raises(DecryptionError):
        open_record(psy, other.file_id, moved, [])
    # A chat message read as a note of the same id (same file): refused too.
    assert victim.client is not None
    message_id, chat = post(v2, psy, victim, NOTE, [psy.public, victim.client.public], kind="chat")
    with pytest.raises(DecryptionError):
        decrypt_note(chat, NoteContext(victim.file_id, message_id, "note"), psy.identity, [])
    assert decrypt_note(chat, NoteContext(victim.file_id, message_id, "chat"), psy.identity, []) == NOTE


def test_envelopes_not_signed_by_the_caller_or_not_wrapped_to_the_file_are_refused(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    a, b = psychologist(v2, pg, tmp_path), psychologist(v2, pg, tmp_path)
    file = open_file(v2, a)
    note_id = uuid.uuid4()
    forged = encrypt_note(NOTE, NoteContext(file.file_id, note_id), b.identity, [a.public])  # B's signature
    body = {"note_id": str(note_id), "envelope": forged.to_json()}
    status, _, payload = v2.call("POST", "/v2/client/notes", body, client=file.ref, token=a.token)
    assert status == 400, payload
    to_b = encrypt_note(NOTE, NoteContext(file.file_id, note_id), a.identity, [b.public])  # B not assigned
    body = {"note_id": str(note_id), "envelope": to_b.to_json()}
    assert v2.call("POST", "/v2/client/notes", body, client=file.ref, token=a.token)[0] == 400
    wrong_id = encrypt_note(NOTE, NoteContext(file.file_id, uuid.uuid4()), a.identity, [])  # bound elsewhere
    body = {"note_id": str(note_id), "envelope": wrong_id.to_json()}
    assert v2.call("POST", "/v2/client/notes", body, client=file.ref, token=a.token)[0] == 400
    body = {"note_id": str(note_id), "envelope": {"format": "something-else"}}
    assert v2.call("POST", "/v2/client/notes", body, client=file.ref, token=a.token)[0] == 400
    assert pg.execute("notes", "SELECT count(*) FROM e2e.notes WHERE note_id = %s", (note_id,)) == [(0,)]
    good_id, _ = post(v2, a, file, NOTE, [a.public])
    again = encrypt_note(NOTE, NoteContext(file.file_id, good_id), a.identity, [])
    body = {"note_id": str(good_id), "envelope": again.to_json()}
    assert v2.call("POST", "/v2/client/notes", body, client=file.ref, token=a.token)[0] == 409


def test_chat_is_encrypted_to_both_participants(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy)
    client = file.client
    assert client is not None
    both = [psy.public, client.public]
    post(v2, client, file, "Can we move Thursday's session?", both, kind="chat")
    post(v2, psy, file, "Yes, Friday 10:00.", both, kind="chat")
    for reader, other in ((psy, client), (client, psy)):
        messages = read(v2, reader, file, kind="chat")
        assert [m["sender"] for m in messages] == ["client", "psychologist"]
        texts = [open_record(reader, file.file_id, m, [other.public], kind="chat") for m in messages]
        assert texts == ["Can we move Thursday's session?", "Yes, Friday 10:00."]
    # The client's account reads its chat, never the psychologist's notes; chat to one side only is refused.
    assert v2.call("GET", "/v2/client/notes", client=file.ref, token=client.token)[0] == 403
    message_id = uuid.uuid4()
    one_sided = encrypt_note("hi", NoteContext(file.file_id, message_id, "chat"), psy.identity, [])
    body = {"message_id": str(message_id), "envelope": one_sided.to_json()}
    assert v2.call("POST", "/v2/client/chat", body, client=file.ref, token=psy.token)[0] == 400


def test_a_changed_public_key_is_refused_by_the_clients_pins(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    a, b = psychologist(v2, pg, tmp_path), psychologist(v2, pg, tmp_path)
    file = open_file(v2, a)
    assign(pg, file.ref, b.id)
    pins = PinStore(tmp_path / "pins.json")
    pins.pin(b.public)  # after comparing B's fingerprint out of band
    # The platform (or whoever controls it) swaps B's key for its own in the identity database.
    rogue = PublicIdentity(b.id, bytes(32 * [7]), b.public.signing_key)
    pg.execute(
        "identity",
        "UPDATE e2e.accounts SET encryption_key = %s, fingerprint = %s WHERE account_id = %s",
        (rogue.encryption_key, rogue.fingerprint, b.id),
    )
    _, _, body = v2.call("GET", "/v2/client", client=file.ref, token=a.token)
    served = [PublicIdentity.from_json(p) for p in body["psychologists"]]
    assert rogue in served  # the server really offers the substituted key
    offered_b = next(p for p in served if p.psychologist_id == b.id)
    with pytest.raises(PinMismatchError, match="changed"):
        pins.check(offered_b)
    assert pins.require(b.id) == b.public  # still the pinned key, not the offered one


def test_v2_refuses_query_strings_and_logs_routes_only(
    v2: Api, pg: PgCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tierwall_notes.access")
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy)
    status, _, body = v2.call(
        "GET", f"/v2/client/notes?client_ref={file.ref}", client=file.ref, token=psy.token
    )
    assert status == 400
    assert "query" in body["error"]
    post(v2, psy, file, NOTE, [psy.public])
    lines = [r.getMessage() for r in caplog.records if r.name == "tierwall_notes.access"]
    assert any(line.startswith("POST /v2/client/notes 201") for line in lines)
    assert any(line.startswith("POST /v2/auth/token 200") for line in lines)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (file.ref, psy.id, psy.token, str(file.file_id), NOTE):
        assert secret not in logged
