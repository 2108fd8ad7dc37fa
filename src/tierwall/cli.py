"""The `tierwall` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tierwall.audit.evidence import SUITES
from tierwall.config import ConfigError, load_stack_file
from tierwall.deploy import register as register_deploy
from tierwall.errors import report
from tierwall.escrow import register as register_escrow
from tierwall.inventory import (
    OPS_USER,
    VERIFY_USER,
    Access,
    InventoryError,
    backup_from_outputs,
    build_inventory,
    inventory_target,
    load_outputs,
    proxy_public_from_outputs,
    topology_from_outputs,
    write_inventory,
)
from tierwall.lab.cli import register as register_lab
from tierwall.mutate import register as register_mutate
from tierwall.paths import LAB_DIR, REPO
from tierwall.ssh_config import register as register_ssh_config
from tierwall.vault import register as register_secrets


def _check_config(args: argparse.Namespace) -> int:
    status = 0
    for path in args.stack_files:
        try:
            config = load_stack_file(path)
        except ConfigError as exc:
            # Every file is checked: one line per refused file, then the next.
            status = report(exc)
            continue
        topology = config.topology()
        hosts = ", ".join(h.name for h in topology.hosts)
        print(f"{path}: ok ({config.location}; hosts {hosts}; {len(topology.flows)} declared flows)")
    return status


def _inventory(args: argparse.Namespace) -> int:
    if args.lab:
        from tierwall.lab.inventory import write_lab_inventory

        path = write_lab_inventory(Path(args.output) if args.output else None, verify=args.verify)
        print(path)
        return 0
    outputs = load_outputs(args.pulumi_outputs)
    topology = topology_from_outputs(outputs)
    verify_key = str(outputs.get("verify_ssh_public_key") or "")
    if args.verify and not verify_key:
        raise InventoryError(
            "--verify: the stack has no verify account (its output verify_ssh_public_key is empty); "
            "set tierwall:verifySshPublicKey in the stack file, then pulumi up and converge site.yml"
        )
    repositories, retention_days = backup_from_outputs(outputs)
    access = Access(
        proxy_public=proxy_public_from_outputs(outputs),
        admin_cidrs=tuple(outputs.get("admin_cidrs", ())),
        domain=str(outputs.get("domain", "")),
        private_key_file=args.private_key,
        known_hosts_file=args.known_hosts,
        target=str(outputs.get("stack", "hetzner")),
        db_volume_device=outputs.get("db_volume_linux_device"),
        verify_keys=(verify_key,) if verify_key else (),
        ssh_user=VERIFY_USER if args.verify else OPS_USER,
        become=not args.verify,
        backup_repositories=repositories,
        backup_retention_days=retention_days,
    )
    inventory = build_inventory(topology, access)
    if args.output:
        print(write_inventory(inventory, args.output))
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(inventory, sort_keys=False))
    return 0


def _inventory_target(args: argparse.Namespace) -> int:
    print(inventory_target(args.inventory))
    return 0


def _topology(args: argparse.Namespace) -> int:
    config = load_stack_file(args.stack_file)
    print(json.dumps(config.topology().as_dict(), indent=2))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from tierwall.audit.controls import ControlsError, load_controls
    from tierwall.audit.evidence import EvidenceError
    from tierwall.audit.junit import JUnitError, read_junit
    from tierwall.audit.report import AuditError, evaluate

    try:
        controls = load_controls(args.controls)
        run = read_junit(_junit_files(args))
        target = args.target or run.properties.get("target", "unknown")
        statuses = evaluate(controls, run, target=target, partial=args.partial)
    except (ControlsError, EvidenceError, JUnitError, AuditError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return _print_audit(args, _audit_report(args, statuses, run, target))


def _junit_files(args: argparse.Namespace) -> list[Path]:
    """The JUnit files named by --junit, or those the run of --suites left in --reports."""
    from tierwall.audit.evidence import EvidenceError, evidence_files

    if args.reports is not None:
        return evidence_files(Path(args.reports), args.suites)
    if args.suites is not None:
        raise EvidenceError("--suites names the files of a reports directory: give --reports DIR")
    return [Path(p) for p in args.junit]


def _audit_report(args: argparse.Namespace, statuses: list, run, target: str):
    """The report with its provenance: the commit, the work tree's state, the hash of every input."""
    from tierwall.audit import provenance
    from tierwall.audit.report import Report, load_segregation

    segregation_file = Path(args.segregation) if args.segregation else None
    segregation = load_segregation(segregation_file)
    inputs = [("controls", Path(args.controls))] + [("junit", source.path) for source in run.sources]
    if segregation is not None and segregation_file is not None:
        inputs.append(("segregation", segregation_file))
    origin = provenance.collect(Path(args.repo), inputs, run.commits())
    return Report(statuses, run, target, args.partial, origin, segregation)


def _print_audit(args: argparse.Namespace, report) -> int:
    from tierwall.audit.report import FAILED, render

    files = render(report, Path(args.output))
    elapsed = ""
    if args.started:
        seconds = int(time.time() - args.started)
        elapsed = f" in {seconds // 60}m{seconds % 60:02d}s"
    origin = report.provenance
    print(f"tierwall audit: {report.verdict.upper()}{elapsed}")
    for warning in origin.warnings():
        print(f"  WARNING:  report {warning}")
    tree = "modified work tree" if origin.modified else "clean work tree"
    print(f"  target:   {report.target} (git {origin.commit[:12]}, {tree})")
    if report.segregation:
        segregation = report.segregation
        print(f"  hosts:    {', '.join(segregation['endpoints'])}")
        print(
            f"  flows:    {segregation['declared_connected']} declared flow attempts connected, "
            f"{report.violations} violation(s) in {segregation['probes']} connection attempts"
        )
    counts = ", ".join(f"{n} {status}" for status, n in report.counts.items())
    failures = f" (failing the verdict: {', '.join(report.failures)})" if report.failures else ""
    print(f"  controls: {counts}{failures}")
    print(f"  tests:    {len(report.run.results)} read")
    print(f"  report:   {files.html} (and {files.markdown.name}, {files.hdf.name})")
    return 1 if report.verdict == FAILED else 0


def _register_audit(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="render the audit report from the last run's JUnit XML")
    evidence = audit.add_mutually_exclusive_group(required=True)
    evidence.add_argument("--junit", nargs="+", metavar="XML", help="pytest --junit-xml files")
    evidence.add_argument(
        "--reports",
        metavar="DIR",
        help="read the JUnit files a run of the suites left here (tierwall.audit.evidence names them)",
    )
    audit.add_argument(
        "--suites",
        choices=sorted(SUITES),
        help="with --reports: the run was `make lab` or `make test`, and every JUnit file its suites "
        "write must be there (default: the known files that are there)",
    )
    audit.add_argument("--controls", default=str(REPO / "audit" / "controls.yaml"), metavar="YAML")
    audit.add_argument("--segregation", metavar="JSON", help="the segregation matrix evidence file")
    audit.add_argument("--target", help="lab or the stack name (default: from the run)")
    audit.add_argument(
        "--partial",
        action="store_true",
        help="only some suites ran (e.g. against a Hetzner stack): a TEST control without a test is "
        "'not proved' instead of an error, and outside the lab unproved controls do not fail the verdict",
    )
    audit.add_argument(
        "--started", type=float, metavar="EPOCH", help="when the job started, for its duration"
    )
    audit.add_argument("-o", "--output", default=str(LAB_DIR / "reports"), metavar="DIR")
    audit.add_argument(
        "--repo",
        default=str(REPO),
        metavar="DIR",
        help="the git work tree whose commit and state the report records",
    )
    audit.set_defaults(func=_audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierwall", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error instead of one line"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate Pulumi.<stack>.yaml files without Pulumi")
    check.add_argument("stack_files", nargs="+", metavar="Pulumi.<stack>.yaml")
    check.set_defaults(func=_check_config)

    inv = sub.add_parser("inventory", help="write the Ansible inventory for the lab or a Hetzner stack")
    source = inv.add_mutually_exclusive_group(required=True)
    source.add_argument("--pulumi-outputs", metavar="FILE", help="`pulumi stack output --json` of a stack")
    source.add_argument("--lab", action="store_true", help="the local lab's inventory")
    inv.add_argument("--private-key", metavar="FILE", help="SSH private key of the ops user")
    inv.add_argument("--known-hosts", metavar="FILE", help="the hosts' keys (default: ssh's own known_hosts)")
    inv.add_argument(
        "--verify",
        action="store_true",
        help="connect as the verify account (make verify of the scheduled check): no become; "
        "--private-key is then the verify key (with --lab: the lab's own verify key, and the "
        "default output .lab/inventory-verify.yml)",
    )
    inv.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    inv.set_defaults(func=_inventory)

    target = sub.add_parser(
        "inventory-target", help="print an inventory's target: lab or the stack's name (make verify)"
    )
    target.add_argument("inventory", metavar="INVENTORY", help="an inventory `tierwall inventory` wrote")
    target.set_defaults(func=_inventory_target)

    topo = sub.add_parser("topology", help="print the topology and flow matrix of a stack file as JSON")
    topo.add_argument("stack_file", metavar="Pulumi.<stack>.yaml")
    topo.set_defaults(func=_topology)

    _register_audit(sub)

    register_lab(sub)
    register_mutate(sub)
    register_deploy(sub)
    register_ssh_config(sub)
    register_secrets(sub)
    register_escrow(sub)
    return parser


def _version() -> str:
    try:
        return version("tierwall")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("tierwall: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`tierwall lab status | head`): not an error worth a line, and the
        # interpreter's last flush of stdout must not fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - the one place any failure becomes one line
        return report(exc, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
