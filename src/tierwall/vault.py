"""`tierwall secrets`: a stack's secrets, generated and rotated inside one Ansible Vault file.

    tierwall secrets init STACK       every generated secret, written as <stack>-secrets.vault.yml
    tierwall secrets set STACK S      a supplied secret (the S3 credentials), typed or piped in
    tierwall secrets rotate STACK S   a new value for S (the notes keyring: one more key)
    tierwall secrets check STACK      every secret present, encrypted, and of the right form
    tierwall secrets rekey STACK      every value under a new vault password, the secrets unchanged

The file is YAML with one inline-encrypted value per variable (``!vault |``): the names stay
readable, so a diff shows which secret changed, and the playbooks can test that each value
really arrived encrypted (``is vault_encrypted``), which a whole-file vault would not let them.
Values exist in clear only in this process's memory: they are generated here (or, for the few an
outside service issues, read without echo), encrypted with the operator's vault password, and the
file is replaced atomically, owner-only. Nothing prints them.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import getpass
import os
import re
import secrets
import shlex
import string
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tierwall.errors import TierwallError
from tierwall.paths import REPO

ALPHANUMERIC = string.ascii_letters + string.digits
KEYRING_LINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}: [A-Za-z0-9+/]{43}=$")
HEX_KEY = re.compile(r"[0-9a-f]{64}")
S3_ACCESS_KEY = re.compile(r"[A-Za-z0-9]{16,128}")
S3_SECRET_KEY = re.compile(r"[!-~]{20,128}")  # printable ASCII, no whitespace
STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DOC = "docs/operations/secrets.md"


def _token(length: int) -> Callable[[], str]:
    return lambda: "".join(secrets.choice(ALPHANUMERIC) for _ in range(length))


def _hex_key() -> str:
    return secrets.token_hex(32)


def _keyring_line(key_id: str) -> str:
    return f"{key_id}: {base64.b64encode(secrets.token_bytes(32)).decode()}"


def _new_keyring() -> str:
    return _keyring_line(f"{datetime.date.today():%Y-%m}") + "\n"


def _is_token(length: int) -> Callable[[str], bool]:
    return lambda value: len(value) >= length and all(c in ALPHANUMERIC for c in value)


def _is_keyring(value: str) -> bool:
    lines = [line.strip() for line in value.splitlines() if line.strip()]
    ids = [line.split(":", 1)[0] for line in lines]
    return bool(lines) and all(KEYRING_LINE.match(line) for line in lines) and len(set(ids)) == len(ids)


@dataclass(frozen=True)
class Secret:
    name: str  # as the operator names it on the command line
    variable: str  # the Ansible variable the vault file defines
    generate: Callable[[], str] | None  # None: supplied by the operator (`set`), never generated
    valid: Callable[[str], bool]
    form: str  # what a valid value looks like, for the error
    # "replace", "append" (a keyring keeps its old keys), "set" (a supplied secret: `set` it again)
    # or a reason it is refused
    rotation: str
    origin: str = ""  # a supplied secret: where the operator gets it

    def __post_init__(self) -> None:
        assert (self.generate is None) == (self.rotation == "set") == bool(self.origin), self.name

    @property
    def supplied(self) -> bool:
        return self.generate is None


S3_ORIGIN = (
    "Hetzner Console -> Object Storage -> S3 credentials (one pair per Hetzner project, valid in "
    "fsn1 and nbg1)"
)


SECRETS: tuple[Secret, ...] = (
    Secret("notes-db-password", "tierwall_vault_notes_db_password", _token(40), _is_token(16),
           "16 or more letters and digits", "replace"),
    Secret("identity-db-password", "tierwall_vault_identity_db_password", _token(40), _is_token(16),
           "16 or more letters and digits", "replace"),
    Secret("app-api-token", "tierwall_vault_app_api_token", _token(48), _is_token(32),
           "32 or more letters and digits", "replace"),
    Secret("notes-keyring", "tierwall_vault_notes_keyring", _new_keyring, _is_keyring,
           "lines '<key-id>: <base64 of 32 bytes>', ids unique", "append"),
    Secret("pgdata-key", "tierwall_vault_pgdata_key", _hex_key, lambda v: bool(HEX_KEY.fullmatch(v)),
           "64 lowercase hex digits",
           "the volume stays encrypted under the old key: add the new one to the LUKS header first"),
    Secret("ca-passphrase", "tierwall_vault_pki_ca_passphrase", _token(40), _is_token(20),
           "20 or more letters and digits",
           "a new passphrase makes the pki role generate a new CA key: that is a CA rotation"),
    Secret("backup-passphrase", "tierwall_vault_backup_cipher_passphrase", _token(64), _is_token(32),
           "32 or more letters and digits",
           "the backup repositories are encrypted with it and pgBackRest cannot re-encrypt a "
           "repository: a new passphrase means a new stanza in new, empty buckets, and the old "
           "passphrase kept until the old backups expire"),
    Secret("backup-s3-access-key", "tierwall_vault_backup_s3_access_key", None,
           lambda v: bool(S3_ACCESS_KEY.fullmatch(v)), "16 to 128 letters and digits", "set", S3_ORIGIN),
    Secret("backup-s3-secret-key", "tierwall_vault_backup_s3_secret_key", None,
           lambda v: bool(S3_SECRET_KEY.fullmatch(v)),
           "20 to 128 printable ASCII characters without whitespace", "set", S3_ORIGIN),
)  # fmt: skip
BY_NAME = {s.name: s for s in SECRETS}
SUPPLIED = tuple(s.name for s in SECRETS if s.supplied)


# -- the vault password ------------------------------------------------------------------------------


def vault_secret(stack: str, password_file: str | None, confirm: bool, use_environment: bool = True):
    """The operator's vault password: a file or an executable that prints it (Ansible's own
    --vault-password-file semantics, so a password manager's script works), else a prompt."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultSecret, get_file_vault_secret

    source = password_file or (os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE") if use_environment else None)
    if source:
        secret = get_file_vault_secret(
            filename=str(Path(source).expanduser()), vault_id=stack, loader=DataLoader()
        )
        secret.load()
        return secret
    if not sys.stdin.isatty():
        raise TierwallError(
            f"secrets: no vault password for stack {stack}",
            "pass --vault-password-file FILE (a file, or a script that prints it) or set "
            "ANSIBLE_VAULT_PASSWORD_FILE",
        )
    password = getpass.getpass(f"vault password for stack {stack}: ")
    if confirm and getpass.getpass("the same again: ") != password:
        raise TierwallError(
            "secrets: the two vault passwords differ", "run again and type the same one twice"
        )
    if len(password) < 12:
        raise TierwallError(
            "secrets: the vault password is shorter than 12 characters", "choose a longer one"
        )
    return VaultSecret(password.encode())


# -- the file ----------------------------------------------------------------------------------------


def secrets_file(stack: str, workdir: Path) -> Path:
    return workdir / f"{stack}-secrets.vault.yml"


class _Vaulted(str):
    """A ``!vault |`` value as read: its ciphertext, not decrypted."""


def _vault_constructor(loader: yaml.SafeLoader, node: yaml.Node) -> _Vaulted:
    return _Vaulted(loader.construct_scalar(node))  # type: ignore[arg-type]


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!vault", _vault_constructor)


def read_ciphertexts(path: Path) -> dict[str, str]:
    """Variable -> ciphertext of every value in the file; a value not vault-encrypted is an error."""
    try:
        document = yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader plus !vault
    except FileNotFoundError:
        raise TierwallError(
            f"secrets: {path} does not exist", f"create it with `tierwall secrets init {_stack(path)}`"
        ) from None
    except yaml.YAMLError as exc:
        raise TierwallError(f"secrets: {path} is not YAML ({exc})", "restore it from your backup") from None
    if not isinstance(document, dict):
        raise TierwallError(f"secrets: {path} is not a mapping of variables", "restore it from your backup")
    plain = sorted(name for name, value in document.items() if not isinstance(value, _Vaulted))
    if plain:
        raise TierwallError(
            f"secrets: {path}: {', '.join(plain)} not vault-encrypted",
            "remove it, or put it back encrypted with `ansible-vault encrypt_string` (a tierwall secret: "
            f"`tierwall secrets rotate {_stack(path)} NAME`)",
        )
    return dict(document)


def _stack(path: Path) -> str:
    return path.name.removesuffix("-secrets.vault.yml")


def decrypt(ciphertext: str, secret) -> str:
    from ansible.parsing.vault import AnsibleVaultError, VaultLib

    try:
        return VaultLib([("default", secret)]).decrypt(ciphertext.strip()).decode()
    except AnsibleVaultError:
        raise TierwallError(
            "secrets: the vault password does not open this file", "give the stack's own vault password"
        ) from None


def encrypt(plaintext: str, secret, stack: str) -> str:
    from ansible.parsing.vault import VaultLib

    return VaultLib().encrypt(plaintext, secret, vault_id=stack).decode()


def render(ciphertexts: dict[str, str], stack: str) -> str:
    lines = [
        f"# The secrets of stack {stack}: Ansible Vault, one encrypted value per variable ({DOC}).",
        "# Written by `tierwall secrets`; use: "
        f"ansible-playbook -e @{stack}-secrets.vault.yml --vault-id {stack}@prompt",
    ]
    for secret in SECRETS:
        if secret.variable in ciphertexts:
            body = "\n".join(f"  {line}" for line in ciphertexts[secret.variable].strip().splitlines())
            lines.append(f"{secret.variable}: !vault |\n{body}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Owner-only from its first byte, and a crash leaves the old file or the new one, never half."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- the commands ------------------------------------------------------------------------------------


def init(stack: str, path: Path, secret) -> None:
    """Every generated secret; the supplied ones are left out, for `set`."""
    if path.exists():
        raise TierwallError(
            f"secrets: {path} exists already; a second init would replace the key of the encrypted data",
            f"rotate one secret with `tierwall secrets rotate {stack} NAME`, or move the file away first",
        )
    ciphertexts = {s.variable: encrypt(s.generate(), secret, stack) for s in SECRETS if s.generate}
    write_atomically(path, render(ciphertexts, stack))


def set_secret(stack: str, path: Path, name: str, read_value: Callable[[], str], secret) -> None:
    """The value of a supplied secret, new or replaced. ``read_value`` is called only once the file
    and the vault password are known to be good; an invalid value writes nothing."""
    chosen = supplied_secret(stack, name)
    ciphertexts = read_ciphertexts(path)
    _opens(ciphertexts, secret)
    value = read_value()
    if not chosen.valid(value):
        raise TierwallError(
            f"secrets: the value given for {name} is not {chosen.form}; nothing was written",
            f"copy it again from {chosen.origin}, then run `tierwall secrets set {stack} {name}` again",
        )
    ciphertexts[chosen.variable] = encrypt(value, secret, stack)
    write_atomically(path, render(ciphertexts, stack))


def rotate(stack: str, path: Path, name: str, secret) -> str:
    """A new value for ``name``; the notes keyring keeps its keys and gains a new active one.
    Returns the new key's id for the keyring, else an empty string."""
    chosen = BY_NAME[name]
    if chosen.supplied:
        raise TierwallError(
            f"secrets: {name} is not generated by tierwall: it comes from {chosen.origin}",
            f"create a new value there, then `tierwall secrets set {stack} {name}` and converge "
            f"({DOC}, section '{name}')",
        )
    if chosen.rotation not in ("replace", "append"):
        raise TierwallError(
            f"secrets: {name} is not rotated by this command: {chosen.rotation}",
            f"follow {DOC}, section '{name}'",
        )
    ciphertexts = read_ciphertexts(path)
    _opens(ciphertexts, secret)
    new_id = ""
    if chosen.rotation == "append":
        keyring = decrypt(ciphertexts[chosen.variable], secret)
        new_id = _next_key_id(keyring)
        value = keyring.rstrip("\n") + "\n" + _keyring_line(new_id) + "\n"
    else:
        assert chosen.generate is not None  # a supplied secret was refused above
        value = chosen.generate()
    ciphertexts[chosen.variable] = encrypt(value, secret, stack)
    write_atomically(path, render(ciphertexts, stack))
    return new_id


def supplied_secret(stack: str, name: str) -> Secret:
    """``name`` if the operator supplies it; a generated secret is refused, pointing at `rotate`."""
    chosen = BY_NAME[name]
    if not chosen.supplied:
        raise TierwallError(
            f"secrets: {name} is generated by tierwall, never typed in; `set` takes {' or '.join(SUPPLIED)}",
            f"a new value: `tierwall secrets rotate {stack} {name}` ({DOC}, section '{name}')",
        )
    return chosen


def _opens(ciphertexts: dict[str, str], secret) -> None:
    """The vault password opens the file: a value written under another one would split it in two."""
    if ciphertexts:
        decrypt(next(iter(ciphertexts.values())), secret)


def missing_supplied(path: Path) -> list[Secret]:
    """The supplied secrets the file does not hold yet."""
    ciphertexts = read_ciphertexts(path)
    return [s for s in SECRETS if s.supplied and s.variable not in ciphertexts]


def _next_key_id(keyring: str) -> str:
    """A key id not yet in the keyring: today's date, with a counter when today already has one."""
    used = {line.split(":", 1)[0].strip() for line in keyring.splitlines() if line.strip()}
    base = f"{datetime.date.today():%Y-%m-%d}"
    candidates = [base, *(f"{base}.{n}" for n in range(2, 100))]
    return next(c for c in candidates if c not in used)


def rekey(stack: str, path: Path, secret, new_secret) -> None:
    """The same values under a new vault password (``ansible-vault rekey`` knows whole-file vaults only)."""
    ciphertexts = read_ciphertexts(path)
    opened = {name: decrypt(text, secret) for name, text in ciphertexts.items()}
    write_atomically(path, render({n: encrypt(v, new_secret, stack) for n, v in opened.items()}, stack))


def check(path: Path, secret) -> list[str]:
    """Every problem with the file, one line each naming the variable and the fix."""
    ciphertexts = read_ciphertexts(path)
    problems = []
    stack = _stack(path)
    for chosen in SECRETS:
        if chosen.variable not in ciphertexts and chosen.supplied:
            problems.append(
                f"{chosen.variable} is missing: set it with `tierwall secrets set {stack} {chosen.name}`, "
                f"from {chosen.origin}"
            )
        elif chosen.variable not in ciphertexts:
            problems.append(
                f"{chosen.variable} is missing: add it with `ansible-vault encrypt_string` ({DOC})"
            )
        elif not chosen.valid(decrypt(ciphertexts[chosen.variable], secret).strip()):
            fix = (
                f"set it again with `tierwall secrets set {stack} {chosen.name}`"
                if chosen.supplied
                else "rotate it or restore it from your backup"
            )
            problems.append(f"{chosen.variable} is not {chosen.form}: {fix}")
    unknown = sorted(set(ciphertexts) - {s.variable for s in SECRETS})
    problems += [f"{name} is not a tierwall secret: remove it from {path.name}" for name in unknown]
    return problems


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "secrets", help="a stack's secrets in an Ansible Vault file: init, set, rotate, check, rekey"
    )
    actions = parser.add_subparsers(dest="secrets_command", required=True)
    for name, help_text in (
        ("init", "generate a new stack's secrets (all but the supplied ones) into STACK-secrets.vault.yml"),
        ("set", "a secret you supply (the S3 credentials): read without echo, or one line from stdin"),
        ("rotate", "a new value for one secret (the notes keyring: one more key, the old ones kept)"),
        ("check", "every secret present, vault-encrypted and of the right form"),
        ("rekey", "every value under a new vault password (the secrets stay the same)"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("stack", metavar="STACK", help="the Pulumi stack's short name")
        if name == "rotate":
            action.add_argument("secret", choices=list(BY_NAME), metavar="SECRET", help=", ".join(BY_NAME))
        if name == "set":
            # Every name is accepted here, so that a generated one is refused with the right command.
            action.add_argument("secret", choices=list(BY_NAME), metavar="SECRET", help=", ".join(SUPPLIED))
        action.add_argument(
            "--vault-password-file",
            metavar="FILE",
            help="the vault password: a file, or an executable that prints it "
            "(default: $ANSIBLE_VAULT_PASSWORD_FILE, else a prompt)",
        )
        if name == "rekey":
            action.add_argument(
                "--new-vault-password-file",
                metavar="FILE",
                help="the new vault password (default: asked twice at the terminal)",
            )
        action.add_argument(
            "--workdir",
            metavar="DIR",
            default=str(REPO),
            help="where STACK-secrets.vault.yml lives (default: this checkout)",
        )
        action.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    if not STACK_NAME.fullmatch(args.stack):
        raise TierwallError(
            f"secrets: {args.stack!r} is not a stack's short name",
            "give the name as in Pulumi.<stack>.yaml (letters, digits, '-', '_', '.')",
        )
    path = secrets_file(args.stack, Path(args.workdir))
    if args.secrets_command == "set":
        supplied_secret(args.stack, args.secret)  # refused before any prompt
    secret = vault_secret(args.stack, args.vault_password_file, confirm=args.secrets_command == "init")
    if args.secrets_command == "init":
        init(args.stack, path, secret)
        print(
            f"secrets: {path} written: {len(SECRETS) - len(SUPPLIED)} generated secrets, each encrypted; "
            "back it up, and the vault password apart from it"
        )
        _print_still_to_set(args, path)
    elif args.secrets_command == "set":
        set_secret(args.stack, path, args.secret, lambda: _read_value(args.stack, args.secret), secret)
        print(f"secrets: {args.secret} set in {path}; converge site.yml to apply it")
        _print_still_to_set(args, path)
    elif args.secrets_command == "rekey":
        new_secret = vault_secret(
            args.stack, args.new_vault_password_file, confirm=True, use_environment=False
        )
        rekey(args.stack, path, secret, new_secret)
        print(f"secrets: {path} re-encrypted under the new vault password; the old one no longer opens it")
    elif args.secrets_command == "rotate":
        new_id = rotate(args.stack, path, args.secret, secret)
        extra = f" (new active key {new_id}; the old keys stay to decrypt)" if new_id else ""
        print(f"secrets: {args.secret} rotated in {path}{extra}; converge site.yml to apply it")
    else:
        problems = check(path, secret)
        if problems:
            raise TierwallError(f"secrets: {path}: " + "; ".join(problems))
        print(f"secrets: {path}: ok ({len(SECRETS)} secrets, each vault-encrypted and well-formed)")
    return 0


def _read_value(stack: str, name: str) -> str:
    """A supplied value: typed without echo at a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        return getpass.getpass(f"{name} for stack {stack} (not shown): ")
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


def _print_still_to_set(args: argparse.Namespace, path: Path) -> None:
    """The supplied secrets the file still lacks, each with the command that sets it."""
    missing = missing_supplied(path)
    if not missing:
        return
    options = ""
    if args.vault_password_file:
        options += f" --vault-password-file {shlex.quote(args.vault_password_file)}"
    if Path(args.workdir).resolve() != REPO.resolve():
        options += f" --workdir {shlex.quote(args.workdir)}"
    origins = "; ".join(dict.fromkeys(s.origin for s in missing))
    print(f"secrets: still to set from {origins}, each read without echo:")
    for chosen in missing:
        print(f"  tierwall secrets set {args.stack} {chosen.name}{options}")
