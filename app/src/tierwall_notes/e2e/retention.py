"""The retention purges of the v2 tables, for the database role's timers once they run v2.

Same periods as v1 (tierwall_notes.retention): chat within two weeks, contract records 10 years
after their end. A chat message's wrapped keys go with it (ON DELETE CASCADE).
"""

from __future__ import annotations

from typing import Final

# notes database
PURGE_CHAT_SQL: Final = "DELETE FROM e2e.chat_messages WHERE created_at < now() - interval '12 days'"

# identity database: the legal hold ends 10 years after ended_at
PURGE_CONTRACTS_SQL: Final = (
    "DELETE FROM e2e.contracts WHERE ended_at IS NOT NULL AND ended_at < current_date - interval '10 years'"
)
