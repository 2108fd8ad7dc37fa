"""The edge and the application refuse the same request bodies: one value, two readers.

nginx's client_max_body_size (nginx role) and the app's TIERWALL_MAX_BODY_BYTES (app role) both
default to tierwall_request_body_max_bytes of the playbooks' group_vars; the app takes its limit
from that setting only (app/src/tierwall_notes/settings.py has no default of its own)."""

from __future__ import annotations

import pytest
from role_render import ROLES, value


@pytest.mark.control("AVL-01")
@pytest.mark.parametrize("limit", [None, 100_000], ids=["deployed", "changed"])
def test_edge_and_app_take_their_body_limit_from_one_value(limit: int | None) -> None:
    overrides = {} if limit is None else {"tierwall_request_body_max_bytes": limit}
    edge = value("nginx", "nginx_client_max_body_size", "proxy-1", **overrides)
    app = value("app", "app_max_body_bytes", "app-1", **overrides)
    assert int(edge) == int(app) == (limit or 256 * 1024)


def test_the_app_unit_hands_the_limit_over() -> None:
    unit = (ROLES / "app" / "templates" / "tierwall-notes.service.j2").read_text()
    assert "Environment=TIERWALL_MAX_BODY_BYTES={{ app_max_body_bytes }}" in unit.splitlines()
