"""The retention purges the database role's systemd timers run (kept here, beside the schema they
depend on, so a schema change that breaks them fails the app's tests).

Each statement deletes and is run in its own database; the row count it reports is what the purge
job logs.
"""

from __future__ import annotations

from typing import Final

# notes database: chat messages are deleted within two weeks (privacy policy VIII).
PURGE_CHAT_SQL: Final = "DELETE FROM chat_messages WHERE created_at < now() - interval '12 days'"

# identity database: contract records are kept up to 10 years from the end of the relationship.
PURGE_CONTRACTS_SQL: Final = (
    "DELETE FROM contracts WHERE ended_at IS NOT NULL AND ended_at < current_date - interval '10 years'"
)
