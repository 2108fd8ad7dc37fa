"""The bearer token that guards every data endpoint (psychologists' own login is out of scope)."""

from __future__ import annotations

import hmac
from pathlib import Path

from tierwall_notes.settings import ConfigError, read_secret_file

MIN_TOKEN_LENGTH = 32


class TokenChecker:
    def __init__(self, token: str) -> None:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"the API token must be at least {MIN_TOKEN_LENGTH} characters")
        self._expected = token.encode("utf-8")

    @classmethod
    def from_file(cls, path: Path) -> TokenChecker:
        return cls(read_secret_file(path))

    def check_header(self, authorization: str | None) -> bool:
        """True only for ``Authorization: Bearer <token>``; the comparison takes constant time."""
        if not authorization:
            return False
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode("utf-8"), self._expected)
