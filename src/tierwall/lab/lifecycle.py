"""``up``, ``down``, ``status`` and ``restart``: the lab's lifecycle, driven by the machine-wide state file.

``up`` is idempotent: a healthy lab built for the same hosts is left alone (only the SSH key,
known_hosts and inventory are brought in line). A lab left by another checkout is rebuilt from
scratch: its machines hold that checkout's secrets (db passwords, the volume's key). So is a lab
built for another image than ``TIERWALL_LAB_IMAGE`` asks for (:mod:`tierwall.lab.image`); the
other commands act on the image the state records.
A lab that is half-built, or whose machines died while
namespaces, bridges, mounts and loop devices remain, is torn down from its state and rebuilt,
keeping the machines' overlays and the db volume (like a reboot). ``down`` removes exactly
what the state records plus the lab's stable names (see :mod:`tierwall.lab.addressing`), and
nothing else; overlays and the volume go too. The base image cache stays. ``restart HOST``
powers one machine off and boots it again on the same overlay, namespace and volume, as a
server's reboot: what lived only in its memory (mounts, unlocked keys, processes) is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from tierwall.inventory import write_inventory
from tierwall.lab import machines, network, offsite, packages, snapshot
from tierwall.lab.addressing import (
    INTERNET_BRIDGE,
    NFT_TABLE,
    OFFSITE,
    OFFSITE_NS,
    ROOT_VETH_PREFIX,
    RUN_DIR,
    SENTINEL,
    SENTINEL_NS,
    SENTINEL_PORTS,
    SWITCH_NS,
    netns,
    proxy_public,
)
from tierwall.lab.image import IMAGE_VARIABLE, ensure_base, is_ready, requested_image, suite_of
from tierwall.lab.inventory import (
    INVENTORY,
    ensure_key,
    ensure_verify_key,
    hosts_of,
    lab_config,
    lab_inventory,
    ssh_argv,
    write_known_hosts,
)
from tierwall.lab.state import State
from tierwall.lab.system import LabError, ensure_host_packages, log, require_root, run
from tierwall.paths import LAB_DIR
from tierwall.progress import step
from tierwall.topology import DB, PROXY, Host, Topology

PREUP_SNAPSHOT = LAB_DIR / "preup-snapshot.json"
# Where the log_archive role keeps the last line of each lab archive's chain (its default).
ARCHIVE_ANCHORS = LAB_DIR / "log-archive"
_OUR_NETNS = re.compile(r"^tw-(switch|sentinel|offsite|(proxy|app|db|mgmt)-\d+)$")


# -- up ------------------------------------------------------------------------------------------


def up(rebuild_base: bool = False, apps: int | None = None) -> int:
    started = time.monotonic()
    require_root()
    image = requested_image()
    with step("checking the host's packages"):
        ensure_host_packages()
    key = ensure_key()
    # The verify account's key travels like a stack's tierwall:verifySshPublicKey: through the
    # config into the inventory, so every converge creates the account the production check uses.
    config = lab_config(key, apps, image, ensure_verify_key())
    topology = config.topology()
    names = [h.name for h in topology.hosts]
    state = _reusable(State.load(), image)
    dns = network.resolvers()

    if state is not None and not rebuild_base and state.phase == "up" and state.hosts == names:
        with step(f"checking the health of {len(names)} machines"):
            problems = health(state, topology)
        if not problems:
            rekeyed = _access(state, topology, key)
            _write_inventory(config, state, dns)
            state.save()
            if rekeyed:
                print(f"lab is up; re-keyed for this clone ({LAB_DIR}) in {time.monotonic() - started:.1f} s")
            else:
                print("lab is up, nothing to do")
            return 0
        log("the lab is not healthy, repairing: " + "; ".join(problems))
    if state is not None:
        keep = not rebuild_base and state.hosts == names and state.phase != "corrupt"
        log("tearing down the previous lab" + (" (keeping machine disks and volume)" if keep else ""))
        teardown(state, keep_data=keep)
    elif not _leftovers():
        snapshot.save(PREUP_SNAPSHOT, snapshot.take())
    else:
        log("no state file but lab leftovers exist: removing them first")
        teardown(State(), keep_data=False)

    suite = suite_of(image)
    base = "base image cached" if not rebuild_base and is_ready(suite) else "building the base image"
    with step(f"{base} (debian {suite})"):
        ensure_base(suite, rebuild=rebuild_base)
    state = State(app_count=config.app_count, image=image, hosts=names, started_at=time.time())
    state.save()
    with step("building the networks and the containment"):
        network.build_network(state, topology)
    with step(f"starting the sentinel ({SENTINEL})"):
        start_sentinel(state)
    with step(f"starting the off-site backup store ({OFFSITE})"):
        start_offsite(state, config)
    with step(f"preparing {len(names)} machine disks"):
        for host in topology.hosts:
            fresh = machines.mount_overlay(state, host.name)
            if fresh:
                machines.first_boot_files(host, [key], dns)
            else:
                machines.apply_cloud_config(machines.rootfs(host.name), [key])
    with step(f"starting {len(names)} machines"):
        for host in topology.hosts:
            device = machines.attach_volume(state, host.name) if host.tier == DB else None
            machines.start(state, host, device)
    with step(f"waiting for {len(names)} machines to boot"), ThreadPoolExecutor(len(names)) as pool:
        booted = dict(
            zip(
                names,
                pool.map(lambda h: machines.wait_running(h.name, state.pids[h.name]), topology.hosts),
                strict=True,
            )
        )
    state.boot = booted
    with step("writing known_hosts and the inventory"):
        _access(state, topology, key)
        inventory = _write_inventory(config, state, dns)
    with step("checking ssh through the jump chain"):
        verify_ssh(inventory)
    state.phase = "up"
    state.save()
    summary = ", ".join(f"{h} {s}" for h, s in booted.items())
    print(f"lab is up in {time.monotonic() - started:.1f} s ({summary}); inventory: {INVENTORY}")
    return 0


def _reusable(state: State | None, image: str) -> State | None:
    """The lab's state, or None once a lab this clone cannot repair in place is torn down."""
    if state is None:
        return None
    if state.key_owner and state.key_owner != str(LAB_DIR):
        # Its machines hold that clone's secrets (db passwords, the volume's encryption key under
        # its .lab/secrets): this clone could neither log in to PostgreSQL nor unlock the data.
        log(f"the lab belongs to another checkout ({state.key_owner}): rebuilding it for this one")
    elif state.image != image:
        # Its disks are overlays of the other release's base image: nothing of them can be kept.
        log(f"the lab runs {state.image}, {IMAGE_VARIABLE} asks for {image}: rebuilding it")
    else:
        return state
    teardown(state, keep_data=False)
    return None


def _access(state: State, topology: Topology, key: str) -> bool:
    """Make the machines accept this clone's key and write its known_hosts. True when re-keyed."""
    rekeyed = state.public_key is not None and state.public_key != key
    if rekeyed:
        for host in topology.hosts:
            machines.apply_cloud_config(machines.rootfs(host.name), [key])
    write_known_hosts(topology, {h.name: machines.host_public_keys(h.name) for h in topology.hosts})
    state.public_key = key
    state.key_owner = str(LAB_DIR)
    return rekeyed


def _write_inventory(config, state: State, dns: list[str]) -> dict:
    inventory = lab_inventory(config, state, dns)
    write_inventory(inventory, INVENTORY)
    return inventory


def verify_ssh(inventory: dict, timeout: float = 60, only: str | None = None) -> None:
    """Every host (or host ``only``) answers over SSH through its jump chain (proxy; proxy+app for the db)."""
    all_vars = inventory["all"]["vars"]

    def attempt(item: tuple[str, dict]) -> str | None:
        name, hostvars = item
        argv = ssh_argv(hostvars, all_vars, ["hostname"], ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            if result.returncode == 0 and result.stdout.strip() == name:
                return None
            last = (result.stderr or result.stdout).strip()
            time.sleep(0.5)
        return f"{name}: {last}"

    with ThreadPoolExecutor(8) as pool:
        hosts = {n: v for n, v in hosts_of(inventory).items() if only is None or n == only}
        failures = [f for f in pool.map(attempt, hosts.items()) if f]
    if failures:
        raise LabError("ssh through the jump chain failed:\n  " + "\n  ".join(failures))


def start_sentinel(state: State) -> None:
    www = RUN_DIR / "sentinel"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text("tierwall lab sentinel: the rest of the internet\n")
    for port in SENTINEL_PORTS:
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                SENTINEL_NS,
                "python3",
                "-m",
                "http.server",
                str(port),
                "--bind",
                str(SENTINEL),
                "--directory",
                str(www),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        state.pids[f"sentinel-{port}"] = process.pid
        state.save()
    if not network.listening(SENTINEL_NS, [f"{SENTINEL}:{p}" for p in SENTINEL_PORTS], timeout=10):
        raise LabError("the sentinel's listeners did not start")


def start_offsite(state: State, config) -> None:
    """The S3 endpoint the lab stack's backup repositories name, with their buckets."""
    repositories = config.backup_repositories
    endpoints = sorted({r.endpoint for r in repositories})
    offsite.start(state, endpoints, [r.bucket for r in repositories], config.backup_retention_days)


def process_needle(name: str) -> str:
    """What the command line of the lab's process ``name`` (a key of ``state.pids``) shows."""
    if name.startswith("sentinel-"):
        return "http.server"
    return offsite.PROCESSES.get(name, "systemd-nspawn")


# -- restart -------------------------------------------------------------------------------------


def restart(name: str, timeout: float = 60) -> int:
    """Power machine ``name`` off as ``machinectl poweroff`` does and boot it again, keeping its
    overlay, network namespace (addresses, veths) and, for a db, its volume's loop device."""
    started = time.monotonic()
    state, host = _running_machine(name)
    _power_off(state, name, timeout)
    log(f"{name}: powered off; booting it again")
    _boot(state, host)
    verify_ssh(yaml.safe_load(INVENTORY.read_text()), only=name)
    seconds = time.monotonic() - started
    print(f"{name} restarted in {seconds:.1f} s ({state.boot[name]}, pid {state.pids[name]})")
    return 0


def replace(name: str, timeout: float = 60) -> int:
    """Lose machine ``name`` and its disk (and, for a db, its volume) for good, then boot a fresh
    machine from the base image in its place, with the same name, addresses and a new host key:
    what a Hetzner server rebuilt after its loss looks like to the converge that follows."""
    started = time.monotonic()
    state, host = _running_machine(name)
    _power_off(state, name, timeout)
    lost = "disk and volume" if host.tier == DB else "disk"
    with step(f"{name}: throwing its {lost} away"):
        machines.discard(state, name)
    with step(f"{name}: a fresh disk from the base image"):
        machines.mount_overlay(state, name)
        machines.first_boot_files(host, [state.public_key or ensure_key()], network.resolvers())
    _boot(state, host)
    key = state.public_key or ensure_key()
    config = lab_config(key, state.app_count, state.image, ensure_verify_key())
    topology = config.topology()
    with step("writing known_hosts (its new host key) and the inventory (its volume's device)"):
        write_known_hosts(topology, {h.name: machines.host_public_keys(h.name) for h in topology.hosts})
        inventory = _write_inventory(config, state, network.resolvers())
    verify_ssh(inventory, only=name)
    print(f"{name} replaced by a fresh machine in {time.monotonic() - started:.1f} s ({state.boot[name]})")
    return 0


def _running_machine(name: str) -> tuple[State, Host]:
    """The up lab's state and its host ``name``, whose disk and namespace are in place."""
    require_root()
    state = State.load()
    if state is None or state.phase != "up":
        raise LabError("the lab is not up: `tierwall lab up` first")
    topology = lab_config(None, state.app_count, state.image).topology()
    host = next((h for h in topology.hosts if h.name == name), None)
    if host is None:
        raise LabError(f"no host {name!r} in the lab; hosts: {', '.join(h.name for h in topology.hosts)}")
    if not machines.is_mounted(machines.rootfs(name)):
        raise LabError(f"{name}: {machines.rootfs(name)} is not mounted; repair with `tierwall lab up`")
    if not network.netns_exists(netns(name)):
        raise LabError(f"{name}: its namespace {netns(name)} is gone; repair with `tierwall lab up`")
    return state, host


def _power_off(state: State, name: str, timeout: float) -> None:
    pid = state.pids.get(name)
    machines.stop_all({name: pid} if pid else {}, timeout=timeout)
    left = machines.kill_machine_processes(name)
    if left:
        raise LabError(f"{name}: processes that would not die: {left}; repair with `tierwall lab up`")
    machines.remove_machine_cgroups(name)


def _boot(state: State, host: Host) -> None:
    device = machines.attach_volume(state, host.name) if host.tier == DB else None
    pid = machines.start(state, host, device)
    state.boot[host.name] = machines.wait_running(host.name, pid)
    state.save()


# -- health and status -------------------------------------------------------------------------------


def health(state: State, topology: Topology) -> list[str]:
    problems = []
    if not is_ready(suite_of(state.image)):
        problems.append("the base image is missing or incomplete")
    problems += network.network_healthy(state, topology)
    for mount in state.mounts:
        if not machines.is_mounted(Path(mount)):
            problems.append(f"{mount} is not mounted")
    for device, backing in state.loops.items():
        if backing not in run(["losetup", "-n", "-O", "BACK-FILE", device], check=False).stdout:
            problems.append(f"{device} is not attached to {backing}")
    for name in offsite.PROCESSES:
        if name not in state.pids:
            problems.append(f"{name} was never started")
    for name, pid in state.pids.items():
        needle = process_needle(name)
        if not machines.pid_alive(pid, needle):
            problems.append(f"{name} (pid {pid}) is not running")
        elif needle == "systemd-nspawn":
            answer = machines.system_state(pid)
            if answer not in ("running", "degraded"):
                problems.append(f"{name} is {answer}")
    return problems


def status() -> int:
    state = State.load()
    if state is None:
        print("lab is down (no state)")
        return 1
    config = lab_config(None, state.app_count, state.image)
    topology = config.topology()
    release = f"{state.image} ({suite_of(state.image)})"
    print(f"lab: {state.phase}; {release}; state {RUN_DIR / 'state.json'}; keys of {state.key_owner}")
    for host in topology.hosts:
        addresses = [f"{i.network} {i.address}" for i in host.interfaces]
        if host.tier == PROXY:
            addresses.insert(0, f"public {proxy_public(int(host.name.rsplit('-', 1)[1]))}")
        pid = state.pids.get(host.name)
        answer = machines.system_state(pid) if pid else "stopped"
        extra = f" volume {state.volume[host.name]}" if host.name in state.volume else ""
        print(f"  {host.name:8} {answer:9} ns {netns(host.name):12} pid {pid}  {', '.join(addresses)}{extra}")
    alive = all(machines.pid_alive(state.pids.get(f"sentinel-{p}"), "http.server") for p in SENTINEL_PORTS)
    print(
        f"  {'sentinel':8} {'listening' if alive else 'down':9} ns {SENTINEL_NS:12} public {SENTINEL} "
        f"tcp {', '.join(map(str, SENTINEL_PORTS))}"
    )
    alive = all(machines.pid_alive(state.pids.get(n), needle) for n, needle in offsite.PROCESSES.items())
    state_word = "listening" if alive else "down"
    print(f"  {'offsite':8} {state_word:9} ns {OFFSITE_NS:12} public {OFFSITE} tcp 443 (S3 for the backups)")
    problems = health(state, topology)
    for problem in problems:
        print(f"  problem: {problem}")
    return 0 if state.phase == "up" and not problems else 1


# -- down ----------------------------------------------------------------------------------------------


def down() -> int:
    started = time.monotonic()
    require_root()
    state = State.load()
    if state is None and not _leftovers():
        print("lab is down, nothing to do")
        return 0
    teardown(state or State(), keep_data=False)
    print(f"lab is down in {time.monotonic() - started:.1f} s")
    return 0


def _leftovers() -> bool:
    if any(_OUR_NETNS.match(n) for n in _netns_names()):
        return True
    if (
        network.link_exists(INTERNET_BRIDGE)
        or run(["nft", "list", "table", "inet", NFT_TABLE], check=False).returncode == 0
    ):
        return True
    if any((root / machines.CGROUP_DIR).exists() for root in machines.cgroup_roots()):
        return True
    return bool(_our_mounts() or _our_loops() or machines.stray_processes())


def _netns_names() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()]


def _our_mounts() -> list[str]:
    out = run(["findmnt", "-rn", "-o", "TARGET"]).stdout.splitlines()
    return [m for m in out if m.startswith(str(RUN_DIR) + "/")]


def _our_loops() -> dict[str, str]:
    loops = {}
    for line in run(["losetup", "-n", "-O", "NAME,BACK-FILE", "-l"]).stdout.splitlines():
        fields = line.split(None, 1)
        if len(fields) == 2 and fields[1].strip().startswith(str(RUN_DIR) + "/"):
            loops[fields[0]] = fields[1].strip()
    return loops


def teardown(state: State, keep_data: bool) -> None:
    """Remove what the lab created: processes, mounts, loop devices, network, files."""
    with step("stopping the machines, the sentinel and the off-site store"):
        side = {n: process_needle(n) for n in state.pids if process_needle(n) != "systemd-nspawn"}
        machines.stop_all({n: p for n, p in state.pids.items() if n not in side})
        for name, needle in side.items():
            if machines.pid_alive(state.pids[name], needle):
                os.kill(state.pids[name], signal.SIGTERM)
        left = machines.kill_strays()
        if left:
            log(f"processes that would not die: {left}")
    with step("unmounting the disks and detaching the volume"):
        for mount in sorted(set(state.mounts) | set(_our_mounts()), reverse=True):
            if machines.is_mounted(Path(mount)) and run(["umount", mount], check=False).returncode != 0:
                run(["umount", "-l", mount])
        for device in sorted(set(state.loops) | set(_our_loops())):
            run(["losetup", "-d", device], check=False)
        machines.remove_cgroups(state.cgroups)
    with step("keeping the packages the machines downloaded for the next lab"):
        packages.harvest(sorted(RUN_DIR.glob("*/upper")), packages.cache_dir(suite_of(state.image)))
    with step("removing the networks and the containment"):
        extra_ns = [n for n in _netns_names() if _OUR_NETNS.match(n)]
        state.root_links = sorted(
            set(state.root_links)
            | {INTERNET_BRIDGE}
            | {
                ln.split()[0].split("@")[0]
                for ln in run(["ip", "-br", "link"]).stdout.splitlines()
                if ln.startswith(ROOT_VETH_PREFIX)
            }
        )
        state.nft_table = NFT_TABLE
        network.teardown_network(state, extra_ns)
    with step("removing the lab's files" + (" (keeping machine disks and volume)" if keep_data else "")):
        if keep_data:
            for entry in RUN_DIR.glob("*/work"):
                shutil.rmtree(entry, ignore_errors=True)
        elif RUN_DIR.exists():
            shutil.rmtree(RUN_DIR)
            with contextlib.suppress(OSError):
                RUN_DIR.parent.rmdir()  # /var/lib/tierwall, when nothing else of ours is in it
        if not keep_data:
            # The audit trail's archive went with its machine: the chain line kept for it would
            # make the next lab's first converge report a rewritten chain.
            shutil.rmtree(ARCHIVE_ANCHORS, ignore_errors=True)
        (RUN_DIR / "state.json").unlink(missing_ok=True)
    for leftover in (SWITCH_NS, SENTINEL_NS, OFFSITE_NS):
        if network.netns_exists(leftover):
            raise LabError(f"could not remove namespace {leftover}")
