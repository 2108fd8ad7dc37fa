-- tierwall-notes: schema of the `notes` database (pseudonymous; no client identifier, no plaintext).
-- Idempotent: safe to apply on every converge. Grants are applied separately (see app/README.md).
-- Rows are keyed by file_id, a random UUID whose link to a client exists only in `identity`.

CREATE TABLE IF NOT EXISTS notes (
    note_id      uuid        PRIMARY KEY,
    file_id      uuid        NOT NULL,
    key_id       text        NOT NULL,                     -- id of the master key that wrapped the data key
    wrapped_key  bytea       NOT NULL,                     -- AES-KW (RFC 3394) wrapped AES-256 data key
    nonce        bytea       NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext   bytea       NOT NULL,                     -- AES-256-GCM, AAD = kind|file_id|note_id
    enc_version  smallint    NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notes_file_id_idx ON notes (file_id);

-- Chat messages exchanged during a session: encrypted like notes, purged 12 days after created_at (daily: gone within 13 days and 10 minutes)
-- by the database role's retention timer.
CREATE TABLE IF NOT EXISTS chat_messages (
    message_id   uuid        PRIMARY KEY,
    file_id      uuid        NOT NULL,
    sender       text        NOT NULL CHECK (sender IN ('client', 'psychologist')),
    key_id       text        NOT NULL,
    wrapped_key  bytea       NOT NULL,
    nonce        bytea       NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext   bytea       NOT NULL,                     -- AES-256-GCM, AAD = kind|file_id|message_id
    enc_version  smallint    NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now()        -- retention: DELETE ... WHERE created_at < now() - '12 days'
);
CREATE INDEX IF NOT EXISTS chat_messages_file_id_idx ON chat_messages (file_id);
CREATE INDEX IF NOT EXISTS chat_messages_created_at_idx ON chat_messages (created_at);
