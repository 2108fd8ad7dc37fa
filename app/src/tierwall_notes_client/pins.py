"""Key pinning: the public key trusted for each psychologist id, first seen or confirmed by a human.

A key that differs from the pinned one is refused unless the change is explicitly confirmed
(after comparing fingerprints out of band): otherwise whoever serves public keys (the platform)
could swap in its own and read every note encrypted afterwards.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tierwall_notes_client._encoding import expect_format, get_field
from tierwall_notes_client.errors import FormatError, PinMismatchError
from tierwall_notes_client.keys import PublicIdentity, check_psychologist_id, same_key

PIN_FORMAT = "tierwall-notes-pins"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PinResult:
    psychologist_id: str
    fingerprint: str
    previous_fingerprint: str | None  # None: first pin; equal to fingerprint: already pinned

    @property
    def changed(self) -> bool:
        return self.previous_fingerprint is not None and self.previous_fingerprint != self.fingerprint


class PinStore:
    """A JSON file of pinned public keys; every change is written atomically (temporary file + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pins: dict[str, PublicIdentity] = self._read()

    def _read(self) -> dict[str, PublicIdentity]:
        what = f"pin store {self.path}"
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise FormatError(f"{what} is not valid JSON: restore it from a backup") from None
        doc = expect_format(document, PIN_FORMAT, FORMAT_VERSION, what)
        pins: dict[str, PublicIdentity] = {}
        for psychologist_id, entry in get_field(doc, "pins", dict, what).items():
            public = PublicIdentity.from_json(entry, f"{what}: pin of {psychologist_id!r}")
            if public.psychologist_id != psychologist_id:
                raise FormatError(
                    f"{what}: the key pinned for {psychologist_id!r} names {public.psychologist_id!r}"
                )
            pins[psychologist_id] = public
        return pins

    def _write(self) -> None:
        document = {
            "format": PIN_FORMAT,
            "version": FORMAT_VERSION,
            "pins": {pid: public.to_json() for pid, public in sorted(self._pins.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(document, indent=2) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, psychologist_id: str) -> PublicIdentity | None:
        return self._pins.get(psychologist_id)

    def require(self, psychologist_id: str) -> PublicIdentity:
        public = self._pins.get(check_psychologist_id(psychologist_id))
        if public is None:
            raise FormatError(
                f"no key pinned for psychologist {psychologist_id!r}: "
                "pin it with 'tierwall-notes-client pin <public key file>' after comparing its fingerprint"
            )
        return public

    def all(self) -> list[PublicIdentity]:
        return list(self._pins.values())

    def check(self, public: PublicIdentity) -> None:
        """Raises PinMismatchError if a different key is pinned for the same psychologist id."""
        pinned = self._pins.get(public.psychologist_id)
        if pinned is not None and not same_key(pinned, public):
            raise PinMismatchError(
                f"the key of psychologist {public.psychologist_id!r} changed: pinned {pinned.fingerprint}, "
                f"offered {public.fingerprint}; confirm the new fingerprint with them out of band, "
                "then re-pin with --confirm-change"
            )

    def pin(self, public: PublicIdentity, *, confirm_change: bool = False) -> PinResult:
        pinned = self._pins.get(public.psychologist_id)
        if not confirm_change:
            self.check(public)
        if pinned is None or not same_key(pinned, public):
            self._pins[public.psychologist_id] = public
            self._write()
        return PinResult(
            psychologist_id=public.psychologist_id,
            fingerprint=public.fingerprint,
            previous_fingerprint=None if pinned is None else pinned.fingerprint,
        )
