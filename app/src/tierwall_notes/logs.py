"""Logging to stderr (journald adds time and unit): no request bodies, no client addresses, no paths.

uvicorn's own access log is off; the app logs one line per request with the route template only
(see tierwall_notes.web._guard).
"""

from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access logger would print the client's address and the full path with query string.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.access").propagate = False
