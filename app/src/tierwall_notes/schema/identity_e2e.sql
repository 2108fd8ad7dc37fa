-- tierwall-notes v2 (end-to-end encrypted): the `e2e` schema of the `identity` database.
-- Applied after identity.sql by `tierwall-notes-migrate --v2`; idempotent, grants applied separately.
-- Public keys, assignments and logins in clear (none of them is secret); the client's name and the
-- contract terms sealed by the app (AES-256-GCM under the app's master keyring): readable by the
-- platform, as the policy allows, but not by whoever holds only a dump of this database.

CREATE SCHEMA IF NOT EXISTS e2e;

-- Everyone who logs in: psychologists (registered by the operator) and clients (their chat key).
-- Public keys only; the fingerprint is what is compared out of band.
CREATE TABLE IF NOT EXISTS e2e.accounts (
    account_id     text        PRIMARY KEY CHECK (account_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    role           text        NOT NULL CHECK (role IN ('psychologist', 'client')),
    encryption_key bytea       NOT NULL CHECK (octet_length(encryption_key) = 32),  -- X25519
    signing_key    bytea       NOT NULL CHECK (octet_length(signing_key) = 32),     -- Ed25519
    fingerprint    text        NOT NULL UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS e2e.clients (
    client_ref   text        PRIMARY KEY CHECK (client_ref ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    file_id      uuid        NOT NULL UNIQUE,              -- random (uuid4), the only link to `notes`
    account_id   text        UNIQUE REFERENCES e2e.accounts (account_id),  -- the client's own key
    name_key_id  text        NOT NULL,                     -- the display name, sealed by the app
    name_wrapped bytea       NOT NULL,
    name_nonce   bytea       NOT NULL,
    name_sealed  bytea       NOT NULL,
    closing_at   timestamptz,                              -- set when the file is being deleted
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS e2e.assignments (
    client_ref       text        NOT NULL REFERENCES e2e.clients (client_ref) ON DELETE CASCADE,
    psychologist_id  text        NOT NULL REFERENCES e2e.accounts (account_id),
    assigned_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_ref, psychologist_id)
);
CREATE INDEX IF NOT EXISTS assignments_psychologist_idx ON e2e.assignments (psychologist_id);

-- Login: a random challenge, single use (deleted when answered), short expiry.
CREATE TABLE IF NOT EXISTS e2e.login_challenges (
    challenge_id uuid        PRIMARY KEY,
    account_id   text        NOT NULL,
    challenge    bytea       NOT NULL CHECK (octet_length(challenge) = 32),
    expires_at   timestamptz NOT NULL
);

-- Bearer tokens: only their SHA-256 is stored.
CREATE TABLE IF NOT EXISTS e2e.sessions (
    token_hash   bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    account_id   text        NOT NULL REFERENCES e2e.accounts (account_id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sessions_expires_at_idx ON e2e.sessions (expires_at);

-- Contracts: kept up to 10 years after ended_at (legal hold), not deleted with the client; the
-- client's name and the terms sealed by the app, the dates in clear for the retention purge.
CREATE TABLE IF NOT EXISTS e2e.contracts (
    contract_id  uuid        PRIMARY KEY,
    client_ref   text        NOT NULL,
    key_id       text        NOT NULL,
    wrapped_key  bytea       NOT NULL,
    nonce        bytea       NOT NULL,
    sealed_terms bytea       NOT NULL,                     -- {client_name, package, price_cents, currency}
    started_on   date        NOT NULL,
    ended_at     date,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at IS NULL OR ended_at >= started_on)
);
CREATE INDEX IF NOT EXISTS contracts_client_ref_idx ON e2e.contracts (client_ref);
CREATE INDEX IF NOT EXISTS contracts_ended_at_idx ON e2e.contracts (ended_at);
