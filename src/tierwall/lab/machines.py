"""Machines: one systemd-nspawn container per topology host, booted with systemd.

Each machine is an overlayfs (lower = the cached base image, upper/work per machine) under
``/var/lib/tierwall/lab/<host>/`` mounted on ``.../<host>/root``. Before boot the lab writes
into the overlay what a Hetzner server gets at creation: hostname, its own machine-id and SSH
host keys, and :func:`tierwall.cloud_init.cloud_config` (ops user with the lab's key, the sshd
drop-in and the sudoers file, with their modes), as cloud-init would. ``runcmd`` is not needed:
the files are in place before sshd first starts.

nspawn runs in the background in the machine's namespace (``--register=no --keep-unit``:
there is no host systemd); its pid is recorded. The db also gets ``CAP_SYS_ADMIN`` and its
volume, a 4 GiB sparse file on a loop device (unformatted), as ``--bind=/dev/loopN``.

Each nspawn starts in its own cgroup ``tierwall-lab/<host>`` (cgroup2 and the v1 name=systemd
hierarchy): without a host systemd, machines sharing their starter's cgroup break each other's
boot. The same cgroups let ``down`` find a machine whose nspawn was killed (its container
keeps running, orphaned) and kill it. Machines are stopped as ``machinectl poweroff`` does.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tierwall.cloud_init import HOST_KEY_PATH, HOST_KEY_TYPE, cloud_config
from tierwall.lab import packages
from tierwall.lab.addressing import RUN_DIR, VOLUME_SIZE, netns
from tierwall.lab.image import base_dir, suite_of
from tierwall.lab.state import State
from tierwall.lab.system import LabError, log, run
from tierwall.topology import DB, Host


def machine_dir(host: str) -> Path:
    return RUN_DIR / host


def rootfs(host: str) -> Path:
    return machine_dir(host) / "root"


def volume_file(host: str) -> Path:
    return machine_dir(host) / "volume.img"


def is_mounted(path: Path) -> bool:
    return run(["findmnt", "-rn", "--mountpoint", str(path)], check=False).returncode == 0


# -- overlay -------------------------------------------------------------------------------------


def mount_overlay(state: State, host: str) -> bool:
    """Mount the machine's overlay. Returns True when the upper layer is new (first boot)."""
    base = machine_dir(host)
    upper, work, merged = base / "upper", base / "work", rootfs(host)
    fresh = not upper.exists()
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    if str(merged) not in state.mounts:
        state.mounts.append(str(merged))
        state.save()
    if not is_mounted(merged):
        run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={_lower_dirs(state)},upperdir={upper},workdir={work}",
                str(merged),
            ]
        )
    return fresh


def _lower_dirs(state: State) -> str:
    """The package cache and base image of the release the lab is built for."""
    suite = suite_of(state.image)
    return packages.lower_dirs(packages.cache_dir(suite), base_dir(suite))


def first_boot_files(host: Host, public_keys: list[str], dns: list[str]) -> None:
    """Hostname, machine-id, resolver, the Ed25519 host key, then the cloud-init user data."""
    root = rootfs(host.name)
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("".join(f"nameserver {a}\n" for a in dns))
    (root / "etc/hostname").write_text(host.name + "\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    run(host_key_argv(root, host.name))
    apply_cloud_config(root, public_keys)


def host_key_argv(root: Path, host: str) -> list[str]:
    """The machine's one host key, of the type cloud-init makes on a Hetzner server (and the only
    one sshd offers there): ``ssh-keygen -A`` would add RSA and ECDSA keys."""
    path = root / HOST_KEY_PATH.lstrip("/")
    return ["ssh-keygen", "-q", "-t", HOST_KEY_TYPE, "-N", "", "-C", f"root@{host}", "-f", str(path)]


def apply_cloud_config(root: Path, public_keys: list[str]) -> None:
    """Apply :func:`tierwall.cloud_init.cloud_config` to a root tree, as cloud-init would."""
    document = cloud_config(public_keys)
    for user in document.get("users", []):
        name = user["name"]
        exists = run(["chroot", str(root), "id", "-u", name], check=False).returncode == 0
        if not exists:
            argv = [
                "chroot",
                str(root),
                "useradd",
                "--create-home",
                "--shell",
                user.get("shell", "/bin/bash"),
                "--comment",
                user.get("gecos", ""),
            ]
            if user.get("groups"):
                argv += ["--groups", ",".join(user["groups"])]
            run([*argv, name])
        if user.get("lock_passwd", True):
            run(["chroot", str(root), "passwd", "--lock", name])
        uid = int(run(["chroot", str(root), "id", "-u", name]).stdout)
        gid = int(run(["chroot", str(root), "id", "-g", name]).stdout)
        home = root / run(["chroot", str(root), "getent", "passwd", name]).stdout.split(":")[5].lstrip("/")
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text("".join(k.strip() + "\n" for k in user.get("ssh_authorized_keys", [])))
        os.chmod(ssh_dir, 0o700)
        os.chmod(keys, 0o600)
        for path in (ssh_dir, keys):
            os.chown(path, uid, gid)
    for item in document.get("write_files", []):
        target = root / item["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item["content"])
        os.chmod(target, int(item.get("permissions", "0644"), 8))
        owner, _, group = item.get("owner", "root:root").partition(":")
        os.chown(target, _chroot_id(root, "passwd", owner), _chroot_id(root, "group", group or owner))


def _chroot_id(root: Path, database: str, name: str) -> int:
    out = run(["chroot", str(root), "getent", database, name], check=False).stdout
    if not out:
        return pwd.getpwnam(name).pw_uid if database == "passwd" else grp.getgrnam(name).gr_gid
    return int(out.split(":")[2])


def host_public_keys(host: str) -> list[str]:
    """The host key sshd offers (known_hosts lists it alone: a machine built before may still
    have RSA and ECDSA key files, which its sshd no longer offers)."""
    path = rootfs(host) / (HOST_KEY_PATH.lstrip("/") + ".pub")
    kind, key = path.read_text().split()[:2]
    return [f"{kind} {key}"]


def discard(state: State, host: str) -> None:
    """Unmount a powered-off machine's disk, detach its volume and delete both: the machine is lost."""
    merged = rootfs(host)
    if is_mounted(merged):
        run(["umount", str(merged)])
    device = state.volume.pop(host, None)
    if device:
        run(["losetup", "-d", device], check=False)
        state.loops.pop(device, None)
    state.save()
    shutil.rmtree(machine_dir(host))


# -- volume ----------------------------------------------------------------------------------------


def attach_volume(state: State, host: str) -> str:
    image = volume_file(host)
    if not image.exists():
        image.parent.mkdir(parents=True, exist_ok=True)
        with image.open("wb") as f:
            f.truncate(VOLUME_SIZE)
    attached = run(["losetup", "-j", str(image), "-O", "NAME", "-n"]).stdout.split()
    device = attached[0] if attached else run(["losetup", "-f", "--show", str(image)]).stdout.strip()
    state.loops[device] = str(image)
    state.volume[host] = device
    state.save()
    return device


# -- cgroups --------------------------------------------------------------------------------------
# Without a host systemd, nspawn --keep-unit uses the cgroup it starts in (and makes "supervisor"
# and "payload" children there): machines started from one process would share them and their
# systemd instances fight ("status=219/CGROUP"). Each machine gets its own cgroup first.
CGROUP_DIR = "tierwall-lab"


def cgroup_roots() -> list[Path]:
    """Mount points of the hierarchies systemd uses: cgroup2 and the v1 name=systemd one."""
    roots: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) < 3:
            continue
        fstype, options = fields[0], fields[2]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            mount = Path(left.split()[4])
            if mount not in roots:
                roots.append(mount)
    return roots


def machine_cgroups(state: State, host: str) -> list[Path]:
    dirs = []
    for root in cgroup_roots():
        top = root / CGROUP_DIR
        if str(top) not in state.cgroups:
            state.cgroups.append(str(top))
            state.save()
        (top / host).mkdir(parents=True, exist_ok=True)
        dirs.append(top / host)
    return dirs


def remove_machine_cgroups(host: str) -> None:
    """Remove one stopped machine's cgroups (nspawn left its "payload"/"supervisor" children), so
    its next start begins as on ``up``."""
    for root in cgroup_roots():
        _remove_cgroup_tree(root / CGROUP_DIR / host)


def remove_cgroups(tops: list[str]) -> None:
    """Remove the lab's cgroup trees, deepest first (they are empty once the machines are gone)."""
    for top in {*tops, *(str(r / CGROUP_DIR) for r in cgroup_roots())}:
        _remove_cgroup_tree(Path(top))


def _remove_cgroup_tree(top: Path) -> None:
    """rmdir a cgroup tree deepest first (a cgroup goes only once its children have)."""
    if not top.is_dir():
        return
    for current, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(current)
        except OSError as exc:
            log(f"could not remove cgroup {current}: {exc}")


# -- processes ----------------------------------------------------------------------------------------


def nspawn_argv(host: Host, device: str | None) -> list[str]:
    caps = "CAP_NET_ADMIN,CAP_SYS_ADMIN" if host.tier == DB else "CAP_NET_ADMIN"
    # Started from inside the machine's network namespace (nsenter execs, so the pid is nspawn's;
    # unlike `ip netns exec` it leaves /sys and its cgroup mount alone): the sysfs nspawn mounts
    # then lists the machine's own interfaces, not this host's, so Ansible's facts (read from
    # /sys/class/net) see what a Hetzner server would see.
    argv = [
        "nsenter",
        f"--net=/run/netns/{netns(host.name)}",
        "--",
        "systemd-nspawn",
        "--quiet",
        "-D",
        str(rootfs(host.name)),
        "-M",
        host.name,
        f"--hostname={host.name}",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{netns(host.name)}",
        f"--capability={caps}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
    ]
    if device:
        argv.append(f"--bind={device}")
    return [*argv, "-b"]


def start(state: State, host: Host, device: str | None) -> int:
    log_path = machine_dir(host.name) / "console.log"
    cgroups = machine_cgroups(state, host.name)

    def enter_cgroups() -> None:  # runs in the child, before exec
        for cgroup in cgroups:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    with log_path.open("ab") as console:
        process = subprocess.Popen(
            nspawn_argv(host, device),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=enter_cgroups,
            # The machine owns its network namespace, so its network sysctls (/proc/sys/net) are
            # its own to set, as on a real server: the common role sets ip_forward=0 and friends.
            # nspawn mounts them read-only unless told otherwise.
            env={**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
        )
    state.pids[host.name] = process.pid
    state.save()
    return process.pid


def pid_alive(pid: int | None, needle: str = "") -> bool:
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    # Empty while the process is between exec's new memory map and its arguments: nsenter becoming
    # systemd-nspawn right after the start. Read as "exited", that window failed a boot in CI.
    return needle in cmdline or not cmdline.strip()


def leader(pid: int) -> int | None:
    """The container's PID 1 (as seen from the host): nspawn's descendant whose NSpid ends in 1."""
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                try:
                    status = Path(f"/proc/{child}/status").read_text()
                except OSError:
                    continue
                nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
                if len(nspid) > 1 and nspid[-1] == "1":
                    return child
                todo.append(child)
    return None


def in_machine(pid: int, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    lead = leader(pid)
    if lead is None:
        raise LabError(f"the machine of nspawn pid {pid} has no init process")
    return run(
        ["nsenter", "-t", str(lead), "-m", "-u", "-i", "-n", "-p", "--", *argv], check=False, timeout=timeout
    )


def wait_running(host: str, pid: int, timeout: float = 120) -> str:
    """Block until systemd in the machine finished booting; 'running' or 'degraded'."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, "systemd-nspawn"):
            # The one-line error would hide the console: it goes to the log (and CI's output) first.
            log(f"{host}: systemd-nspawn exited; its console ended with:\n{console_tail(host)}")
            raise LabError(f"{host}: systemd-nspawn exited; see {machine_dir(host) / 'console.log'}")
        if leader(pid) is not None:
            result = in_machine(
                pid,
                ["systemctl", "is-system-running", "--wait"],
                timeout=max(1.0, deadline - time.monotonic()),
            )
            answer = result.stdout.strip()
            if answer in ("running", "degraded"):
                if answer == "degraded":
                    failed = in_machine(pid, ["systemctl", "--failed", "--plain", "--no-legend"]).stdout
                    units = " ".join(ln.split()[0] for ln in failed.splitlines() if ln)
                    log(f"{host}: degraded; failed units: {units}")
                return answer
        time.sleep(0.2)
    late = f"{host}: did not finish booting in {timeout:.0f} s"
    log(f"{late}; its console ended with:\n{console_tail(host)}")
    raise LabError(f"{late}; see {machine_dir(host) / 'console.log'}")


def console_tail(host: str, lines: int = 15) -> str:
    """The end of a machine's console log: a CI run keeps only what the error message says, and
    the log file goes with the run's machine."""
    path = machine_dir(host) / "console.log"
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"  ({path}: {exc.strerror})"
    return "\n".join(f"  {line}" for line in text) + f"\n  (all of it: {path})"


def system_state(pid: int | None) -> str:
    if pid is None or not pid_alive(pid, "systemd-nspawn"):
        return "stopped"
    result = in_machine(pid, ["systemctl", "is-system-running"], timeout=10)
    return result.stdout.strip() or "unknown"


def stop_all(pids: dict[str, int], timeout: float = 20) -> None:
    """Power the machines off as ``machinectl poweroff`` does (SIGRTMIN+4 to the container's
    PID 1), wait for nspawn to exit, then kill what is left. A killed nspawn does not take its
    container with it, so the container's PID 1 is killed explicitly (that ends its PID namespace)."""
    live = {name: pid for name, pid in pids.items() if pid_alive(pid, "systemd-nspawn")}
    leaders = {name: leader(pid) for name, pid in live.items()}
    for name, lead in leaders.items():
        if lead:
            with contextlib.suppress(ProcessLookupError):
                os.kill(lead, signal.SIGRTMIN + 4)
        else:
            os.kill(live[name], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        live = {n: p for n, p in live.items() if pid_alive(p, "systemd-nspawn")}
        time.sleep(0.1)
    for name, pid in live.items():
        log(f"{name}: did not power off in {timeout:.0f} s, killing it")
        for target in (leaders.get(name), pid):
            if target:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)


def kill_machine_processes(host: str, timeout: float = 10) -> list[int]:
    """SIGKILL what is left in one machine's cgroups after it powered off; the pids that survive."""

    def members() -> list[int]:
        found = []
        for root in cgroup_roots():
            for procs in (root / CGROUP_DIR / host).rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    found += [int(p) for p in procs.read_text().split()]
        return [p for p in found if p != os.getpid() and not _zombie(p)]

    left = members()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = members()
    return left


def kill_strays(timeout: float = 10) -> list[int]:
    """SIGKILL every process left in the lab's cgroups or running nspawn on the lab's machines."""
    strays = stray_processes()
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while strays and time.monotonic() < deadline:
        strays = [p for p in strays if Path(f"/proc/{p}").exists() and not _zombie(p)]
        time.sleep(0.1)
    return strays


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def stray_processes() -> list[int]:
    """nspawn processes on the lab's machines and every process in the lab's cgroups (the
    machines' own processes: their root is not visible from here, their cgroup is). Zombies are
    not strays: they have exited, and only their parent (here PID 1, which may reap late) can
    remove them."""
    found = []
    marker = str(RUN_DIR)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid() or _zombie(int(proc.name)):
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cgroups = (proc / "cgroup").read_text()
        except OSError:
            continue
        in_lab = any(line.split(":", 2)[2].startswith(f"/{CGROUP_DIR}/") for line in cgroups.splitlines())
        if ("systemd-nspawn" in cmdline and marker in cmdline) or in_lab:
            found.append(int(proc.name))
    return found
