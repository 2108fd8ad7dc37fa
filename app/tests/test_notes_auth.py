"""The bearer token check: no database needed."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from tierwall_notes import auth
from tierwall_notes.auth import TokenChecker
from tierwall_notes.settings import ConfigError

TOKEN = "s3cr3t-" + "t" * 40


@pytest.fixture
def checker() -> TokenChecker:
    return TokenChecker(TOKEN)


def test_the_right_token_passes(checker: TokenChecker) -> None:
    assert checker.check_header(f"Bearer {TOKEN}")
    assert checker.check_header(f"bearer {TOKEN}")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN.upper()}",
        TOKEN,
    ],
)
def test_wrong_or_missing_tokens_fail(checker: TokenChecker, header: str | None) -> None:
    assert not checker.check_header(header)


def test_comparison_is_constant_time(checker: TokenChecker, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert not checker.check_header("Bearer nope")
    assert checker.check_header(f"Bearer {TOKEN}")
    assert calls == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_short_tokens_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        TokenChecker("short")


def test_token_is_read_from_its_credential_file(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o400)
    assert TokenChecker.from_file(path).check_header(f"Bearer {TOKEN}")
