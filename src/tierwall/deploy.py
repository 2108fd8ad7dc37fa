"""`tierwall deploy STACK`: the README's production path as one command that stops at the first failure.

    check-config -> pulumi stack select -> pulumi preview -> (confirmation) -> pulumi up
    -> pulumi stack output -> tierwall inventory -> ansible-playbook unlock-db.yml, site.yml
    (with the stack's vault file, STACK-secrets.vault.yml) -> make verify

Every command runs in the project directory (``--workdir``, default this checkout: the one with
``Pulumi.yaml``, ``infra/policy``, ``ansible/`` and the ``Makefile``), so the paths each command
names are the ones an operator would type there. The outputs file (``<stack>-outputs.json``, with
``--show-secrets``) and the inventory (``<stack>-inventory.yml``) are written there too.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tierwall.config import load_stack_file
from tierwall.errors import TierwallError, explain
from tierwall.paths import REPO
from tierwall.progress import step

POLICY_PACK = "infra/policy"
PLAYBOOKS = ("ansible/playbooks/unlock-db.yml", "ansible/playbooks/site.yml")
# Steps 1-3 change no infrastructure (stack select only records the current stack in Pulumi's
# workspace): --dry-run runs them and prints the rest.
READ_ONLY_STEPS = 3
STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Plan:
    """One deployment: which stack, where its files are, which key reaches the hosts."""

    stack: str
    workdir: Path
    private_key: str | None = None
    # The vault password (a file, or a script that prints it); None: $ANSIBLE_VAULT_PASSWORD_FILE,
    # which ansible-playbook reads itself, else a prompt at the terminal.
    vault_password_file: str | None = None

    @property
    def stack_file(self) -> str:
        return f"Pulumi.{self.stack}.yaml"

    @property
    def outputs_file(self) -> str:
        return f"{self.stack}-outputs.json"

    @property
    def inventory_file(self) -> str:
        return f"{self.stack}-inventory.yml"

    @property
    def secrets_file(self) -> str:
        return f"{self.stack}-secrets.vault.yml"

    def vault_arguments(self) -> tuple[str, ...]:
        """How ansible-playbook opens the secrets file."""
        if self.vault_password_file:
            return ("--vault-password-file", self.vault_password_file)
        if os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE"):
            return ()
        return ("--vault-id", f"{self.stack}@prompt")


Commands = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Step:
    name: str
    commands: Commands  # what an operator would type, in order
    action: Callable[[Plan, Commands], None]
    fix: str  # what to do when the step fails (errors that carry their own fix keep it)


class CommandFailed(Exception):
    def __init__(self, argv: Sequence[str], code: int) -> None:
        super().__init__(f"exit {code}")
        self.argv = tuple(argv)
        self.code = code


def steps(plan: Plan) -> list[Step]:
    """The deployment's steps, in order."""
    return [*_pulumi_steps(plan), *_host_steps(plan)]


def _pulumi_steps(plan: Plan) -> list[Step]:
    # --stack on every pulumi command after `select`: a `pulumi stack select` run in another
    # terminal between preview and up must not send the confirmed changes to another stack.
    stack = ("--stack", plan.stack)
    return [
        Step(
            "check-config",
            (("tierwall", "check-config", plan.stack_file),),
            _check_config,
            "correct the key(s) named in the stack file and deploy again",
        ),
        Step(
            "pulumi stack select",
            (("pulumi", "stack", "select", plan.stack),),
            _run_all,
            f"create the stack with `pulumi stack init {plan.stack}` after `pulumi login`, "
            "or check its name with `pulumi stack ls`",
        ),
        Step(
            "pulumi preview",
            (("pulumi", "preview", *stack, "--policy-pack", POLICY_PACK, "--diff"),),
            _run_all,
            "read pulumi's output above (a policy violation names the resource and the rule), "
            "correct the stack config or the program and deploy again",
        ),
        Step(
            "pulumi up",
            (("pulumi", "up", *stack, "--yes", "--skip-preview", "--policy-pack", POLICY_PACK),),
            _run_all,
            "read pulumi's output above and deploy again: `pulumi up` only changes what still "
            "differs from the program",
        ),
        Step(
            "pulumi stack output",
            (("pulumi", "stack", "output", *stack, "--json", "--show-secrets"),),
            _write_outputs,
            f"run `pulumi stack output --stack {plan.stack} --json` by hand to see why",
        ),
    ]


def _host_steps(plan: Plan) -> list[Step]:
    inventory = ["tierwall", "inventory", "--pulumi-outputs", plan.outputs_file]
    if plan.private_key:
        inventory += ["--private-key", plan.private_key]
    inventory += ["-o", plan.inventory_file]
    return [
        Step(
            "inventory",
            (tuple(inventory),),
            _inventory,
            f"write {plan.outputs_file} again with `pulumi stack output --json --show-secrets`",
        ),
        Step(
            "ansible-playbook",
            tuple(_playbook_command(plan, playbook) for playbook in PLAYBOOKS),
            _run_all,
            f"read ansible's output above (every secret comes from {plan.secrets_file}: "
            f"`tierwall secrets check {plan.stack}`) and deploy again: both playbooks are idempotent",
        ),
        Step(
            "make verify",
            (("make", "verify", f"INVENTORY={plan.inventory_file}"),),
            _run_all,
            "the failed checks are listed above and in .lab/reports/verify.xml; "
            f"`make verify INVENTORY={plan.inventory_file}` runs them again alone",
        ),
    ]


def _playbook_command(plan: Plan, playbook: str) -> tuple[str, ...]:
    """ansible-playbook with the stack's inventory and its vault file: every secret comes from there."""
    vault = ("-e", f"@{plan.secrets_file}", *plan.vault_arguments())
    return ("ansible-playbook", "-i", plan.inventory_file, *vault, playbook)


def deploy(plan: Plan, dry_run: bool = False, assume_yes: bool = False) -> None:
    """Run the steps in order (only the read-only ones with ``dry_run``); raise at the first failure."""
    planned = steps(plan)
    ask = not (dry_run or assume_yes)
    if ask:
        refuse_without_terminal(plan.stack)
    if not dry_run:
        require_secrets(plan)
    for number, current in enumerate(planned, start=1):
        if number > READ_ONLY_STEPS and dry_run:
            for argv in current.commands:
                print(f"deploy: would run: {shlex.join(argv)}")
            continue
        if number == READ_ONLY_STEPS + 1 and ask:
            confirm(plan.stack)
        _run_step(plan, current, number, len(planned))
    if dry_run:
        print(f"deploy: dry run of stack {plan.stack}: steps 1-{READ_ONLY_STEPS} ran, nothing was changed")
    else:
        print(f"deploy: stack {plan.stack} deployed, converged and verified; inventory {plan.inventory_file}")


def _run_step(plan: Plan, current: Step, number: int, total: int) -> None:
    label = f"step {number}/{total} '{current.name}'"
    try:
        with step(label, prefix="deploy"):
            current.action(plan, current.commands)
    except CommandFailed as exc:
        raise TierwallError(
            f"deploy: {label} failed (exit {exc.code}): {shlex.join(exc.argv)}", current.fix
        ) from exc
    except Exception as exc:  # any failure the operator can act on is reported with its step
        known = explain(exc)
        if known is None:
            raise
        raise TierwallError(f"deploy: {label} failed: {known.what}", known.fix or current.fix) from exc


def refuse_without_terminal(stack: str) -> None:
    """Before any step: a run that could never be confirmed stops before it starts."""
    if not sys.stdin.isatty():
        raise TierwallError(
            f"deploy: stack {stack} was not touched: no terminal to confirm `pulumi up` on",
            "pass --yes to apply without asking (after reading a --dry-run's preview)",
        )


def require_secrets(plan: Plan) -> None:
    """Before any step: a stack converges only with its vault file, and someone must be able to
    open it; finding out at step 7, after `pulumi up`, would leave new servers half configured."""
    if not (plan.workdir / plan.secrets_file).is_file():
        raise TierwallError(
            f"deploy: stack {plan.stack} was not touched: {plan.secrets_file} does not exist",
            f"create it once with `tierwall secrets init {plan.stack}` and back it up "
            "(docs/operations/secrets.md)",
        )
    if plan.vault_arguments()[:1] == ("--vault-id",) and not sys.stdin.isatty():
        raise TierwallError(
            f"deploy: stack {plan.stack} was not touched: "
            f"nothing can give the vault password of {plan.secrets_file}",
            "pass --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE",
        )


def confirm(stack: str) -> None:
    """Ask, after the preview, before the first step that changes anything."""
    prompt = f"deploy: apply the changes above to stack {stack!r}? Type the stack name to go on: "
    try:
        answer = input(prompt)
    except EOFError:
        answer = ""
    if answer.strip() != stack:
        raise TierwallError(
            f"deploy: stack {stack} was not changed: the answer was not {stack!r}",
            "run again and type the stack name, or pass --yes",
        )


# -- actions: each gets the plan and its step's command lines ------------------------------------------


def _check_config(plan: Plan, commands: Commands) -> None:
    (argv,) = commands
    _announce(argv)
    load_stack_file(plan.workdir / plan.stack_file)


def _run_all(plan: Plan, commands: Commands) -> None:
    for argv in commands:
        _run(plan, argv)


def _run(plan: Plan, argv: Sequence[str], capture: bool = False) -> str:
    _announce(argv)
    result = subprocess.run(
        list(argv),
        cwd=plan.workdir,
        env=_environment(plan),
        stdout=subprocess.PIPE if capture else None,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise CommandFailed(argv, result.returncode)
    return result.stdout or ""


def _announce(argv: Sequence[str]) -> None:
    # On stderr, through the step's open line: pulumi's and ansible's own output then starts on a
    # line of its own under the command that produced it.
    print(f"$ {shlex.join(argv)}", file=sys.stderr, flush=True)


def _environment(plan: Plan) -> dict[str, str]:
    # As the Makefile does: the roles' settings (Mitogen strategy, pipelining) live in
    # ansible/ansible.cfg, which Ansible reads only from the current directory or ANSIBLE_CONFIG.
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(plan.workdir / "ansible" / "ansible.cfg"))
    return env


def _write_outputs(plan: Plan, commands: Commands) -> None:
    (argv,) = commands
    text = _run(plan, argv, capture=True)
    path = plan.workdir / plan.outputs_file
    # --show-secrets puts the stack's secrets in this file: created owner-only, and an older file
    # with wider permissions is narrowed before it is rewritten.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


def _inventory(plan: Plan, commands: Commands) -> None:
    """`tierwall inventory` itself, in-process: the same parser and code as the command."""
    from tierwall.cli import build_parser

    (argv,) = commands
    _announce(argv)
    args = build_parser().parse_args(list(argv[1:]))
    # The command line names the files as seen from the project directory, where it would be typed.
    args.pulumi_outputs = str(plan.workdir / args.pulumi_outputs)
    args.output = str(plan.workdir / args.output)
    args.func(args)


# -- the command --------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "deploy",
        help="deploy a Hetzner stack: check-config, pulumi preview/up, inventory, ansible, make verify",
    )
    parser.add_argument("stack", metavar="STACK", help="the Pulumi stack (its config: Pulumi.STACK.yaml)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="run only check-config, stack select and preview; print the commands after them",
    )
    parser.add_argument("--yes", action="store_true", help="apply the previewed changes without asking")
    parser.add_argument("--private-key", metavar="PATH", help="SSH private key of the ops user")
    parser.add_argument(
        "--vault-password-file",
        metavar="FILE",
        help="the vault password of STACK-secrets.vault.yml: a file, or a script that prints it "
        "(default: $ANSIBLE_VAULT_PASSWORD_FILE, else ansible-playbook asks)",
    )
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        default=str(REPO),
        help="the project directory (Pulumi.yaml, infra/, ansible/, Makefile); the outputs and the "
        "inventory are written there (default: this checkout)",
    )
    parser.set_defaults(func=_command)


def _absolute(path: str | None) -> str | None:
    # The key is written into the inventory, and both reach commands run in the project directory:
    # a path relative to where the operator typed it would point elsewhere there.
    return str(Path(path).expanduser().resolve()) if path else None


def _command(args: argparse.Namespace) -> int:
    if not STACK_NAME.fullmatch(args.stack):
        # The name becomes file names (Pulumi.<stack>.yaml, <stack>-outputs.json): an
        # org/project/stack path would point into directories that do not exist.
        raise TierwallError(
            f"deploy: {args.stack!r} is not a stack's short name",
            "give the name as in Pulumi.<stack>.yaml (letters, digits, '-', '_', '.')",
        )
    plan = Plan(
        stack=args.stack,
        workdir=Path(args.workdir).resolve(),
        private_key=_absolute(args.private_key),
        vault_password_file=_absolute(args.vault_password_file),
    )
    deploy(plan, dry_run=args.dry_run, assume_yes=args.yes)
    return 0
