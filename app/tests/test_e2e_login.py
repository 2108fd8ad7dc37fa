"""v2 login: a challenge signed with the account's Ed25519 key earns a short-lived bearer token.

Against the real app over HTTPS and a scratch PostgreSQL (the ``v2`` fixture); expiry is forced by
moving the stored expiry into the past, so the refusal is the app's own check.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from e2e_testkit import answer, challenge, login, open_file, psychologist
from notes_testkit import API_TOKEN, Api, PgCluster
from tierwall_notes_client import generate_identity, sign_challenge


def test_signed_challenge_logs_in_and_the_token_names_the_account(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy)
    status, _, body = v2.call("GET", "/v2/client", client=file.ref, token=psy.token)
    assert status == 200, body
    assert [p["psychologist_id"] for p in body["psychologists"]] == [psy.id]
    # Only the token's hash is stored: the table cannot be replayed as a login.
    stored = pg.execute("identity", "SELECT token_hash FROM e2e.sessions WHERE account_id = %s", (psy.id,))
    assert [bytes(r[0]) for r in stored] == [hashlib.sha256(psy.token.encode()).digest()]
    assert psy.token not in pg.dump("identity")


def test_a_challenge_is_single_use(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy = psychologist(v2, pg, tmp_path)
    issued = challenge(v2, psy.id)
    assert answer(v2, psy.identity, issued)[0] == 200
    status, body = answer(v2, psy.identity, issued)  # the same signed answer, replayed
    assert status == 401
    assert "already used" in body["error"]


def test_an_expired_challenge_is_refused(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy = psychologist(v2, pg, tmp_path)
    issued = challenge(v2, psy.id)
    pg.execute(
        "identity",
        "UPDATE e2e.login_challenges SET expires_at = now() - interval '1 second' WHERE challenge_id = %s",
        (issued["challenge_id"],),
    )
    status, body = answer(v2, psy.identity, issued)
    assert status == 401
    assert "expired" in body["error"]


def test_a_challenge_signed_by_another_key_is_refused_and_consumed(
    v2: Api, pg: PgCluster, tmp_path: Path
) -> None:
    psy = psychologist(v2, pg, tmp_path)
    issued = challenge(v2, psy.id)
    impostor = generate_identity(psy.id)  # same id, another key
    assert answer(v2, impostor, issued)[0] == 401
    assert answer(v2, psy.identity, issued)[0] == 401  # no second try on the same challenge
    unknown = generate_identity("psy-never-registered")
    status, body = answer(v2, unknown, challenge(v2, unknown.psychologist_id))
    assert (status, body["error"]) == (401, "the signature does not verify")


def test_a_signature_for_another_account_does_not_log_in(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    a, b = psychologist(v2, pg, tmp_path), psychologist(v2, pg, tmp_path)
    issued = challenge(v2, b.id)
    signature = sign_challenge(a.identity, base64.b64decode(issued["challenge"]))  # bound to a's id
    body = {
        "challenge_id": issued["challenge_id"],
        "account_id": b.id,
        "signature": base64.b64encode(signature).decode(),
    }
    assert v2.call("POST", "/v2/auth/token", body, token="")[0] == 401


def test_an_expired_token_is_refused(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy)
    pg.execute(
        "identity",
        "UPDATE e2e.sessions SET expires_at = now() - interval '1 second' WHERE token_hash = %s",
        (hashlib.sha256(psy.token.encode()).digest(),),
    )
    status, headers, body = v2.call("GET", "/v2/client", client=file.ref, token=psy.token)
    assert (status, body["error"]) == (401, "the token expired: log in again")
    assert headers["www-authenticate"] == "Bearer"
    login(v2, psy)
    assert v2.call("GET", "/v2/client", client=file.ref, token=psy.token)[0] == 200


def test_tokens_expire_after_minutes_not_hours(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy = psychologist(v2, pg, tmp_path)
    [(lifetime,)] = pg.execute(
        "identity",
        "SELECT extract(epoch FROM expires_at - created_at) FROM e2e.sessions WHERE token_hash = %s",
        (hashlib.sha256(psy.token.encode()).digest(),),
    )
    assert 0 < lifetime <= 15 * 60
    [(challenge_lifetime,)] = pg.execute(
        "identity",
        "SELECT extract(epoch FROM expires_at - now()) FROM e2e.login_challenges WHERE challenge_id = %s",
        (challenge(v2, psy.id)["challenge_id"],),
    )
    assert 0 < challenge_lifetime <= 60


def test_logout_ends_the_token(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy)
    assert v2.call("POST", "/v2/auth/logout", token=psy.token)[0] == 200
    assert v2.call("GET", "/v2/client", client=file.ref, token=psy.token)[0] == 401


def test_no_shared_or_missing_token_opens_v2(v2: Api, pg: PgCluster, tmp_path: Path) -> None:
    psy = psychologist(v2, pg, tmp_path)
    file = open_file(v2, psy)
    for token in ("", API_TOKEN, "not-a-token", psy.token + "x"):
        status, headers, _ = v2.call("GET", "/v2/client/notes", client=file.ref, token=token)
        assert status == 401, token
        assert headers["www-authenticate"] == "Bearer"
