-- tierwall-notes: schema of the `identity` database (who the client is; no note or chat content).
-- Idempotent: safe to apply on every converge. Grants are applied separately (see app/README.md).

-- The client and the pseudonymous file id of their notes: deleted at the end of the relationship.
CREATE TABLE IF NOT EXISTS clients (
    client_ref   text        PRIMARY KEY CHECK (client_ref ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    display_name text        NOT NULL,
    file_id      uuid        NOT NULL UNIQUE,              -- random (uuid4), the only link to `notes`
    closing_at   timestamptz,                              -- set when a handover starts: no more writes
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Contract records: kept up to 10 years after ended_at (limitation period), NOT deleted by the
-- handover; they copy the client's identity so they outlive the clients row, and hold no file_id.
CREATE TABLE IF NOT EXISTS contracts (
    contract_id  uuid        PRIMARY KEY,
    client_ref   text        NOT NULL,
    client_name  text        NOT NULL,
    package      text        NOT NULL,                     -- the service package contracted
    price_cents  integer     NOT NULL CHECK (price_cents >= 0),
    currency     char(3)     NOT NULL DEFAULT 'CHF',
    started_on   date        NOT NULL,
    ended_at     date,                                     -- NULL while running; retention: ended_at < current_date - '10 years'
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at IS NULL OR ended_at >= started_on)
);
CREATE INDEX IF NOT EXISTS contracts_client_ref_idx ON contracts (client_ref);
CREATE INDEX IF NOT EXISTS contracts_ended_at_idx ON contracts (ended_at);
