"""The v2 API's refusals, each mapped to one HTTP status by tierwall_notes.e2e.web."""

from __future__ import annotations


class E2EError(Exception):
    status = 400


class InvalidRequest(E2EError):
    """A malformed envelope or a request the data does not allow (400)."""


class Unauthenticated(E2EError):
    """No valid token, or a challenge that is unknown, used, expired or wrongly signed (401)."""

    status = 401


class Forbidden(E2EError):
    """The caller is not allowed on this client's file (403)."""

    status = 403


class NotFound(E2EError):
    status = 404


class Conflict(E2EError):
    """The state of the file does not allow it now (409): closing, not rewrapped, id taken."""

    status = 409
