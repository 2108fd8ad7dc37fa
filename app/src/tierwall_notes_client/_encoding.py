"""Base64 fields in the JSON formats: strict decoding with a length check."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from tierwall_notes_client.errors import FormatError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: object, what: str, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{what} is missing or not a string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what} is not valid base64") from None
    if length is not None and len(data) != length:
        raise FormatError(f"{what} is {len(data)} bytes, expected {length}")
    return data


def get_field(document: Mapping[str, Any], name: str, kind: type, what: str) -> Any:
    value = document.get(name)
    # bool is an int subclass: a version of `true` is not a version.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(f"{what}: field {name!r} is missing or not a {kind.__name__}")
    return value


def expect_format(document: object, name: str, version: int, what: str) -> Mapping[str, Any]:
    if not isinstance(document, dict):
        raise FormatError(f"{what} is not a JSON object")
    if document.get("format") != name:
        raise FormatError(f"{what} is not a {name!r} document (format is {document.get('format')!r})")
    if document.get("version") != version:
        raise FormatError(
            f"{what} has unsupported version {document.get('version')!r} (this client reads {version})"
        )
    return document


def load_json(text: str, what: str) -> Any:
    """``text`` parsed as JSON, or a FormatError naming ``what`` and where it breaks."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise FormatError(f"{what} is not valid JSON ({error.msg}, line {error.lineno})") from None
