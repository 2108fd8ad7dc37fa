"""`tierwall escrow`: everything a restore needs, encrypted to the operators' recovery keys.

    tierwall escrow export --lab                       the lab's secrets and CA, to the lab's recovery key
    tierwall escrow export STACK -R RECIPIENTS         a stack's vault file, its vault password and CA
    tierwall escrow recover FILE -i IDENTITY --lab     write the lab's secrets and CA back from FILE
    tierwall escrow recover FILE -i IDENTITY --into D  write a stack's files into directory D
    tierwall escrow check FILE -i IDENTITY --lab       FILE opens and holds exactly the lab's files now

The backups are useless without their passphrase, the db volume without its key, the notes
without their keyring, and every host's TLS without the CA: all of them live on the operator's
controller. An escrow is one file: a tar of those files with a manifest of their SHA-256 sums,
encrypted with age (Debian's ``age``) to every recipient given, so any one holder of a recovery
key can bring them back on a fresh controller. The clear text exists only in this process's
memory and in the pipes to age; nothing here prints a secret.

The lab stands in for the operators with a recovery key of its own (``.lab/recovery``), kept apart
from what it protects; the escrow is written to ``.lab/escrow``. On a stack the identity never
belongs on the controller: it is the operators' own, kept offline.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from tierwall.errors import TierwallError
from tierwall.paths import LAB_DIR

FORMAT = 1
MANIFEST = "MANIFEST.json"
DOC = "docs/operations/backups.md, 'Key escrow'"
LAB_RECOVERY = LAB_DIR / "recovery"
LAB_IDENTITY = LAB_RECOVERY / "identity.txt"
LAB_ESCROW = LAB_DIR / "escrow" / "lab.age"
# What a lab cannot be restored without: the generated secrets and the CA (key, certificate and
# its revocation list). Host certificates are issued again by the next converge.
LAB_SOURCES = (("secrets", LAB_DIR / "secrets"), ("pki", LAB_DIR / "pki"))
LAB_PKI_FILES = ("ca.key", "ca.crt", "tierwall-ca.crl")
# A member is one file in one of the escrow's directories: nothing can climb out of where it goes.
MEMBER_NAME = re.compile(r"(secrets|pki|vault)/[A-Za-z0-9_-][A-Za-z0-9._-]*")


class EscrowError(TierwallError):
    pass


@dataclass(frozen=True)
class Member:
    name: str  # the path inside the escrow, e.g. secrets/pgdata-key
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# -- the files -------------------------------------------------------------------------------------


def lab_members() -> list[Member]:
    """The lab's files an escrow holds; refused when the lab has not made them yet."""
    secrets_dir, pki_dir = (path for _, path in LAB_SOURCES)
    names = sorted(p.name for p in secrets_dir.glob("*") if p.is_file()) if secrets_dir.is_dir() else []
    missing = [f"pki/{n}" for n in LAB_PKI_FILES if not (pki_dir / n).is_file()]
    if not names or missing:
        raise EscrowError(
            f"escrow: the lab has nothing to escrow yet ({', '.join(missing) or 'secrets/'} missing)",
            "converge the lab first (make converge)",
        )
    members = [Member(f"secrets/{n}", (secrets_dir / n).read_bytes()) for n in names]
    return members + [Member(f"pki/{n}", (pki_dir / n).read_bytes()) for n in LAB_PKI_FILES]


def lab_path(name: str) -> Path:
    """Where member ``name`` of a lab escrow belongs."""
    top, _, rest = name.partition("/")
    roots = dict(LAB_SOURCES)
    if top not in roots or not MEMBER_NAME.fullmatch(name):
        raise EscrowError(
            f"escrow: unexpected member {name!r} in a lab escrow", "use an escrow `export --lab` wrote"
        )
    return roots[top] / rest


def stack_members(vault_file: Path, vault_password: bytes, ca_dir: Path | None) -> list[Member]:
    """A stack's vault file, the password that opens it, and its CA directory's files."""
    if not vault_file.is_file():
        raise EscrowError(f"escrow: no vault file {vault_file}", "run `tierwall secrets init STACK` first")
    members = [
        Member(f"vault/{vault_file.name}", vault_file.read_bytes()),
        Member("vault/password", vault_password),
    ]
    if ca_dir is not None:
        files = sorted(p for p in ca_dir.glob("*") if p.is_file())
        if not any(p.name.endswith(".key") for p in files):
            raise EscrowError(
                f"escrow: no CA key in {ca_dir}", "pass the pki role's pki_controller_dir as --ca-dir"
            )
        members += [Member(f"pki/{p.name}", p.read_bytes()) for p in files]
    return members


# -- the archive -----------------------------------------------------------------------------------


def pack(members: list[Member], target: str) -> bytes:
    created = time.time()
    manifest = {"format": FORMAT, "target": target, "created_at": created,
                "files": {m.name: m.sha256 for m in members}}  # fmt: skip
    entries = [(MANIFEST, json.dumps(manifest, indent=1).encode())] + [(m.name, m.data) for m in members]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(created)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(archive: bytes) -> tuple[dict, list[Member]]:
    """The manifest and the members, each checked against its sum; nothing else is accepted."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        files = {i.name: tar.extractfile(i).read() for i in tar.getmembers() if i.isfile()}  # type: ignore[union-attr]
    if MANIFEST not in files:
        raise EscrowError("escrow: the archive has no manifest", "use a file `tierwall escrow export` wrote")
    strange = [name for name in files if name != MANIFEST and not MEMBER_NAME.fullmatch(name)]
    if strange:
        raise EscrowError(
            f"escrow: unexpected member(s) {', '.join(strange)}", "use a file `tierwall escrow export` wrote"
        )
    manifest = json.loads(files.pop(MANIFEST))
    expected = manifest.get("files", {})
    if manifest.get("format") != FORMAT or set(expected) != set(files):
        raise EscrowError("escrow: the manifest does not list exactly the archive's files", "export it again")
    members = [Member(name, data) for name, data in sorted(files.items())]
    bad = [m.name for m in members if m.sha256 != expected[m.name]]
    if bad:
        raise EscrowError(
            f"escrow: {', '.join(bad)} do not match their sums", "use another copy of the escrow"
        )
    return manifest, members


# -- age -------------------------------------------------------------------------------------------


def _age(argv: list[str], data: bytes, what: str) -> bytes:
    if shutil.which(argv[0]) is None:
        raise EscrowError(f"escrow: `{argv[0]}` is not installed", "apt-get install age")
    done = subprocess.run(argv, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise EscrowError(f"escrow: {what} failed: {reason[0]}", "check the recovery key or recipients named")
    return done.stdout


def encrypt(archive: bytes, recipients_file: Path) -> bytes:
    return _age(["age", "--encrypt", "--recipients-file", str(recipients_file)], archive, "encrypting")


def decrypt(ciphertext: bytes, identity: Path) -> bytes:
    return _age(["age", "--decrypt", "--identity", str(identity)], ciphertext, "decrypting")


def ensure_lab_identity() -> Path:
    """The lab's stand-in for the operators' recovery key, and its recipients file beside it."""
    recipients = LAB_RECOVERY / "recipients.txt"
    if not LAB_IDENTITY.is_file():
        LAB_RECOVERY.mkdir(parents=True, exist_ok=True, mode=0o700)
        _age(["age-keygen", "-o", str(LAB_IDENTITY)], b"", "making the lab's recovery key")
    if not recipients.is_file():
        public = _age(["age-keygen", "-y", str(LAB_IDENTITY)], b"", "reading the lab's recovery key")
        recipients.write_bytes(public)
    return recipients


# -- writing back ----------------------------------------------------------------------------------


def write_back(members: list[Member], place, force: bool) -> list[Path]:
    """Each member at ``place(name)``, owner-only; an existing file that differs is refused unless
    ``force`` (a recovery must not silently replace newer secrets)."""
    targets = [(place(m.name), m) for m in members]
    clashes = [str(path) for path, m in targets if path.is_file() and path.read_bytes() != m.data]
    if clashes and not force:
        raise EscrowError(f"escrow: would replace {', '.join(clashes)}", "move them away, or pass --force")
    for path, member in targets:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_bytes(member.data)
    return [path for path, _ in targets]


def differences(members: list[Member], place) -> list[str]:
    """What differs between an escrow and the files it names now (missing, changed, not in it)."""
    problems = [
        f"{m.name}: {'changed since' if place(m.name).is_file() else 'missing now'}"
        for m in members
        if not place(m.name).is_file() or place(m.name).read_bytes() != m.data
    ]
    current = {m.name for m in lab_members()}
    return problems + [f"{name}: not in the escrow" for name in sorted(current - {m.name for m in members})]


# -- the command -----------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    escrow = sub.add_parser(
        "escrow", help="everything a restore needs, encrypted to the operators' recovery keys"
    )
    actions = escrow.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write an escrow (the lab's, or a stack's)")
    export.add_argument("stack", nargs="?", metavar="STACK", help="the Pulumi stack (or --lab)")
    export.add_argument(
        "--lab", action="store_true", help="the lab's secrets and CA, to the lab's recovery key"
    )
    export.add_argument("-R", "--recipients-file", type=Path, help="age recipients, one per line (a stack)")
    export.add_argument(
        "--ca-dir", type=Path, help="the stack's CA directory (the pki role's pki_controller_dir)"
    )
    export.add_argument("--vault-password-file", help="the stack's vault password (a file or a script)")
    export.add_argument("-o", "--output", type=Path, help=f"where to write it (lab: {LAB_ESCROW})")
    for name, help_text in (
        ("recover", "write the files of an escrow back"),
        ("check", "compare with the lab now"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("file", type=Path, metavar="FILE")
        action.add_argument(
            "-i", "--identity", type=Path, required=True, help="an age identity (recovery key)"
        )
        action.add_argument(
            "--lab", action="store_true", help="the lab's escrow: its files go back under .lab/"
        )
        if name == "recover":
            action.add_argument("--into", type=Path, help="a directory for a stack's files")
            action.add_argument("--force", action="store_true", help="replace files that differ")
    escrow.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    if args.action == "export":
        return _export(args)
    if not args.lab and args.action == "check":
        raise EscrowError("escrow: check compares with the lab only", "pass --lab")
    manifest, members = unpack(decrypt(args.file.read_bytes(), args.identity))
    if args.action == "check":
        problems = differences(members, lab_path)
        for problem in problems:
            print(f"  {problem}")
        print(f"{args.file}: {len(members)} files, {'stale' if problems else 'current'}")
        return 1 if problems else 0
    return _recover(args, manifest, members)


def _export(args: argparse.Namespace) -> int:
    if args.lab == bool(args.stack):
        raise EscrowError("escrow export: name a STACK or pass --lab", "tierwall escrow export --lab")
    if args.lab:
        members, recipients, output, target = (
            lab_members(),
            ensure_lab_identity(),
            args.output or LAB_ESCROW,
            "lab",
        )
    else:
        from tierwall.vault import secrets_file, vault_secret

        if args.recipients_file is None or args.output is None:
            raise EscrowError("escrow export: a stack needs -R RECIPIENTS and -o FILE", f"see {DOC}")
        secret = vault_secret(args.stack, args.vault_password_file, confirm=False)
        vault = secrets_file(args.stack, Path.cwd())
        members, recipients, output, target = (stack_members(vault, secret.bytes, args.ca_dir),
                                               args.recipients_file, args.output, args.stack)  # fmt: skip
    ciphertext = encrypt(pack(members, target), recipients)
    output.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    output.touch(mode=0o600)
    output.write_bytes(ciphertext)
    print(f"{output}: {len(members)} files escrowed for {target}, to the recipients in {recipients}")
    return 0


def _recover(args: argparse.Namespace, manifest: dict, members: list[Member]) -> int:
    if args.lab == bool(args.into):
        raise EscrowError("escrow recover: pass --lab or --into DIR", f"see {DOC}")
    if args.lab and manifest.get("target") != "lab":
        raise EscrowError(
            f"escrow: {args.file} is stack {manifest.get('target')}'s, not the lab's", "use --into DIR"
        )
    place = lab_path if args.lab else (lambda name: args.into / name)
    written = write_back(members, place, args.force)
    print(f"{args.file}: {len(written)} files written back ({manifest.get('target')})")
    return 0
