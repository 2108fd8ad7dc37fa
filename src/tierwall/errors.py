"""Every failure of the `tierwall` command, reported as one line: what failed, and the fix.

Modules keep raising their own errors (``ConfigError``, ``LabError``, a failing subprocess ...);
:func:`explain` turns the ones an operator can act on into a :class:`TierwallError`, and
:func:`report` is the one place that prints them. Anything else is a bug in tierwall: it gets one
line too, and ``--debug`` shows its traceback.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from tierwall.config import ConfigError
from tierwall.inventory import InventoryError
from tierwall.lab.addressing import HOST_PACKAGES
from tierwall.lab.system import LabError
from tierwall.topology import TopologyError

# A subprocess's whole stderr (debootstrap, apt) would bury the line; past this many characters
# only the first and last line of a message are kept and --debug shows the rest.
MAX_LINE = 400

LAB_FIX = (
    "`tierwall lab status` shows what is wrong; `tierwall lab up` repairs the lab, "
    "`tierwall lab down` removes it"
)


class TierwallError(Exception):
    """An error the operator can act on: ``what`` failed, ``fix`` says what to do about it."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def line(self) -> str:
        text = one_line(self.what)
        return f"{text}; fix: {self.fix}" if self.fix else text


def one_line(text: str) -> str:
    """``text`` on one line: a multi-line message's lines joined, a long one cut to its ends."""
    lines = [line.strip().removeprefix("- ") for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    joined = lines[0]
    for line in lines[1:]:
        joined += (" " if joined.endswith(":") else "; ") + line
    if len(joined) <= MAX_LINE or len(lines) < 3:
        return joined
    return f"{lines[0]} ... {lines[-1]} ({len(lines) - 2} more lines with --debug)"


def explain(exc: BaseException) -> TierwallError | None:
    """The operator's view of ``exc``, or None when it is not an error tierwall expects."""
    if isinstance(exc, TierwallError):
        return exc
    for kind, translate in _TRANSLATIONS:
        if isinstance(exc, kind):
            return translate(exc)
    return None


def report(exc: BaseException, debug: bool = False, stream: TextIO | None = None) -> int:
    """Print ``exc`` as one line (after its traceback with ``debug``); the exit status to use."""
    stream = stream or sys.stderr
    known = explain(exc)
    if debug:
        traceback.print_exception(exc, file=stream)
    if known is not None:
        print(f"tierwall: error: {known.line()}", file=stream)
    elif not debug:
        detail = one_line(str(exc))
        name = type(exc).__name__ + (f": {detail}" if detail else "")
        print(f"tierwall: unexpected error: {name}; run again with --debug for the traceback", file=stream)
    return 1


# -- translations, most specific first --------------------------------------------------------------


def _config(exc: ConfigError) -> TierwallError:
    issues = "; ".join(str(issue) for issue in exc.issues)
    return TierwallError(
        f"{exc.source}: {issues}",
        "correct the key(s) named (README, 'Stack configuration') and run `tierwall check-config` again",
    )


def _topology(exc: TopologyError) -> TierwallError:
    return TierwallError(str(exc), "correct the stack file's counts, CIDRs or appPort")


def _inventory(exc: InventoryError) -> TierwallError:
    return TierwallError(
        str(exc), "write the outputs again with `pulumi stack output --json > FILE` for this stack"
    )


def _lab(exc: LabError) -> TierwallError:
    # Most lab messages already quote the command that fixes them (`sudo ...`, `tierwall lab up`).
    message = str(exc)
    return TierwallError(message, None if "`" in message else LAB_FIX)


def _command(exc: subprocess.CalledProcessError) -> TierwallError:
    what = f"command failed (exit {exc.returncode}): {_argv(exc.cmd)}"
    detail = exc.stderr or exc.output
    if isinstance(detail, bytes):
        detail = detail.decode(errors="replace")
    if detail and detail.strip():
        what += f": {detail.strip().splitlines()[-1]}"
    return TierwallError(what, "run the command by hand to see its whole output")


def _timeout(exc: subprocess.TimeoutExpired) -> TierwallError:
    return TierwallError(
        f"command timed out after {exc.timeout:.0f} s: {_argv(exc.cmd)}",
        "run it by hand to see where it hangs",
    )


def _not_found(exc: FileNotFoundError) -> TierwallError:
    if _raised_by_subprocess(exc):
        package = HOST_PACKAGES.get(str(exc.filename))
        fix = f"apt-get install {package}" if package else "install it, or put it on PATH"
        return TierwallError(f"{exc.filename} is not installed", fix)
    return TierwallError(f"no such file: {exc.filename}", "check the path")


def _permission(exc: PermissionError) -> TierwallError:
    return TierwallError(
        f"permission denied: {exc.filename}", "run as a user allowed to use it (the lab runs as root)"
    )


def _raised_by_subprocess(exc: BaseException) -> bool:
    """True when ``exc`` came from starting a program, not from opening a file."""
    frames = traceback.walk_tb(exc.__traceback__)
    return any(frame.f_code.co_filename == subprocess.__file__ for frame, _ in frames)


def _argv(cmd: object) -> str:
    return " ".join(map(str, cmd)) if isinstance(cmd, list | tuple) else str(cmd)


# Each translation takes an exception of its own kind (explain() checks isinstance first), so the
# table's common type can only say "an exception": Any.
_TRANSLATIONS: tuple[tuple[type[BaseException], Callable[[Any], TierwallError]], ...] = (
    (ConfigError, _config),
    (TopologyError, _topology),
    (InventoryError, _inventory),
    (LabError, _lab),
    (subprocess.CalledProcessError, _command),
    (subprocess.TimeoutExpired, _timeout),
    (FileNotFoundError, _not_found),
    (PermissionError, _permission),
)
