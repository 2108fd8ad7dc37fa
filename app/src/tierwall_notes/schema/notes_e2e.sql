-- tierwall-notes v2 (end-to-end encrypted): the `e2e` schema of the `notes` database.
-- Applied after notes.sql by `tierwall-notes-migrate --v2`; idempotent, grants applied separately.
-- The platform stores what the clients built: ciphertext, nonce, key commitment, the author's
-- signature and one sealed-box wrapped data key per recipient. It holds no key that opens them.
-- Rows are keyed by file_id (random, linked to a client only in `identity`) and their record id;
-- the ciphertext is bound to both (and to its kind), so a row moved elsewhere does not decrypt.

CREATE SCHEMA IF NOT EXISTS e2e;

CREATE TABLE IF NOT EXISTS e2e.notes (
    note_id        uuid        PRIMARY KEY,                -- chosen by the client before encrypting
    file_id        uuid        NOT NULL,
    author         text        NOT NULL,                   -- the author's key fingerprint
    nonce          bytea       NOT NULL CHECK (octet_length(nonce) = 24),
    ciphertext     bytea       NOT NULL,                   -- XChaCha20-Poly1305, AAD = note|file_id|note_id
    key_commitment bytea       NOT NULL CHECK (octet_length(key_commitment) = 32),
    signature      bytea       NOT NULL CHECK (octet_length(signature) = 64),
    enc_version    smallint    NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notes_file_id_idx ON e2e.notes (file_id);

CREATE TABLE IF NOT EXISTS e2e.note_keys (
    note_id      uuid     NOT NULL REFERENCES e2e.notes (note_id) ON DELETE CASCADE,
    position     smallint NOT NULL,                        -- order in the envelope (returned as sent)
    fingerprint  text     NOT NULL,                           -- the recipient's key fingerprint
    wrapped_key  bytea    NOT NULL CHECK (octet_length(wrapped_key) = 80),  -- sealed box of the data key
    PRIMARY KEY (note_id, fingerprint)
);

-- Chat: encrypted to the client and the assigned psychologists; purged 12 days after created_at.
CREATE TABLE IF NOT EXISTS e2e.chat_messages (
    message_id     uuid        PRIMARY KEY,
    file_id        uuid        NOT NULL,
    sender         text        NOT NULL CHECK (sender IN ('client', 'psychologist')),
    author         text        NOT NULL,
    nonce          bytea       NOT NULL CHECK (octet_length(nonce) = 24),
    ciphertext     bytea       NOT NULL,                   -- AAD = chat|file_id|message_id
    key_commitment bytea       NOT NULL CHECK (octet_length(key_commitment) = 32),
    signature      bytea       NOT NULL CHECK (octet_length(signature) = 64),
    enc_version    smallint    NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS chat_messages_file_id_idx ON e2e.chat_messages (file_id);
CREATE INDEX IF NOT EXISTS chat_messages_created_at_idx ON e2e.chat_messages (created_at);

CREATE TABLE IF NOT EXISTS e2e.chat_keys (
    message_id   uuid     NOT NULL REFERENCES e2e.chat_messages (message_id) ON DELETE CASCADE,
    position     smallint NOT NULL,
    fingerprint  text     NOT NULL,
    wrapped_key  bytea    NOT NULL CHECK (octet_length(wrapped_key) = 80),
    PRIMARY KEY (message_id, fingerprint)
);
