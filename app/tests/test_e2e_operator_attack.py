"""The operator attack on v2, at application level: everything the platform holds opens no note.

The attacker has full dumps of both databases and every secret the app server holds (the
credential directory: master keyring, API token, database passwords; the TLS key). Every 32-byte
value among them (and their plain hashes) and in the dumps is tried as an X25519 private key and as
an AES key-wrap key on every bytea value of both dumps (wherever a copy of a data key might be
kept), and it and everything so unwrapped as the content key of every note and chat message. None
opens. Controls: the same attack given the psychologist's or the client's private key opens their
records, and a data key wrapped under a master key would be found (so the harness works); the test
finds its own envelopes in the dump exactly as it sent them (so it attacks real ciphertext); the
master keyring does open the sealed identity data (the platform may read it).

Out of reach of this test (the lab-level attack is not wired yet): the machines' file systems,
backups, and anything a modified server would capture from a client in the future.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from dump_attack import attack, bytea, candidate_keys, parse_targets, rows
from e2e_testkit import dumped_bytea, hex_of, open_file, post, psychologist
from nacl.public import SealedBox
from notes_testkit import Api, PgCluster
from tierwall_notes.envelope import Context, Sealed, open_sealed
from tierwall_notes.keyring import Keyring, load_keyring

NOTES = ["Operator-attack note A: the client's brother died in March.", "Operator-attack note B: medication."]
CHAT = "Operator-attack chat: I could not sleep again."
NAME = "Operator Attack Zielperson"


def _server_secrets(app_env: dict[str, str]) -> list[Path]:
    credentials = sorted(p for p in Path(app_env["CREDENTIALS_DIRECTORY"]).iterdir() if p.is_file())
    assert {p.name for p in credentials} >= {"notes-master-key", "api-token", "notes-db-password"}
    return [*credentials, Path(app_env["TIERWALL_TLS_KEY"])]


def _tls_scalar(path: Path) -> bytes:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.private_numbers().private_value.to_bytes(32, "big")


def test_nothing_the_platform_holds_decrypts_a_note_or_chat_message(
    v2: Api, pg: PgCluster, app_env: dict[str, str], tmp_path: Path
) -> None:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy, NAME)
    assert file.client is not None
    sent = [post(v2, psy, file, text, [psy.public]) for text in NOTES]
    sent.append(post(v2, file.client, file, CHAT, [psy.public, file.client.public], kind="chat"))
    notes_dump, identity_dump = pg.dump("notes"), pg.dump("identity")

    # The dump holds our envelopes exactly as they were sent.
    targets = parse_targets(notes_dump)
    for record_id, envelope in sent:
        target = targets[record_id]
        assert (target.file_id, target.nonce, target.ciphertext) == (
            file.file_id,
            envelope.nonce,
            envelope.ciphertext,
        )
        assert sorted(target.wrapped_keys) == sorted(r.wrapped_key for r in envelope.recipients)
        assert hex_of(envelope.signature) in notes_dump
    for text in [*NOTES, CHAT, "brother died", NAME]:
        assert text not in notes_dump + identity_dump

    secrets = _server_secrets(app_env)
    keys = candidate_keys(secrets, [notes_dump, identity_dump]) | {
        _tls_scalar(Path(app_env["TIERWALL_TLS_KEY"]))
    }
    keyring = load_keyring(Path(app_env["CREDENTIALS_DIRECTORY"]) / "notes-master-key")
    assert set(keyring.keys.values()) <= keys  # the master keys themselves are among those tried
    wrapped = dumped_bytea(notes_dump) | dumped_bytea(identity_dump)
    assert {r.wrapped_key for _, e in sent for r in e.recipients} <= wrapped
    assert attack(targets.values(), keys, wrapped) == {}

    # Controls: the harness opens what a key really opens ...
    own = {record_id: text for (record_id, _), text in zip(sent, [*NOTES, CHAT], strict=True)}
    assert attack(targets.values(), keys | {psy.identity.encryption_secret}, wrapped).items() >= own.items()
    chat_id, chat = sent[2]
    assert attack([targets[chat_id]], {file.client.identity.encryption_secret}, wrapped) == {chat_id: CHAT}
    # ... and would have found a copy of a data key kept under a master key anywhere in the dump.
    [for_client] = [r for r in chat.recipients if r.fingerprint == file.client.public.fingerprint]
    data_key = SealedBox(file.client.identity.encryption_private_key).decrypt(for_client.wrapped_key)
    escrow = aes_key_wrap(keyring.active_key, data_key)
    assert attack([targets[chat_id]], keys, wrapped | {escrow}) == {chat_id: CHAT}
    assert _open_name(identity_dump, file.ref, keyring) == NAME  # identity data: readable, as documented


def _open_name(identity_dump: str, client_ref: str, keyring: Keyring) -> str:
    [row] = [r for r in rows(identity_dump, "clients") if r[0] == client_ref]
    file_id = uuid.UUID(row[1])
    sealed = Sealed(row[3], bytea(row[4]), bytea(row[5]), bytea(row[6]))
    return open_sealed(keyring, sealed, Context("identity", file_id, file_id))
