"""What AES-XTS costs on this machine: the kernel's implementation against the CPU's AES instructions.

    .venv/bin/python bench/crypto.py

Encryption at rest runs in the kernel: fscrypt (the lab) and dm-crypt/LUKS2 (Hetzner) both use the
kernel crypto API's ``xts(aes)``. Which driver backs it decides the cost: with ``aesni_intel`` the
CPU's AES instructions (gigabytes per second), without it the generic C implementation. This
script reports the driver the kernel selected, the CPU's throughput with its AES instructions
(``openssl speed``, in user space) and what the kernel's driver delivers where it matters: writing
(with fsync) and reading a file in the db's unlocked fscrypt directory against a plain directory on
the same volume. So a low TPS ratio in bench/database.py can be read for what it is. Runs on the
lab's db machine (the lab must be up and converged); nothing leaves the machine.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from _common import BenchError, Figure, Lab, drop_caches, main, print_table, run, write_report

from tierwall.paths import REPO


def kernel_driver(name: str = "xts(aes)") -> str:
    """The highest-priority driver the kernel offers for ``name`` (what fscrypt and dm-crypt get)."""
    best: tuple[int, str] | None = None
    for block in Path("/proc/crypto").read_text().split("\n\n"):
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in block.splitlines())
            if key.strip()
        )
        if fields.get("name") == name and fields.get("selftest", "passed") == "passed":
            priority = int(fields.get("priority", "0"))
            if best is None or priority > best[0]:
                best = (priority, fields.get("driver", "?"))
    if best is None:
        raise BenchError(f"the kernel offers no {name} (see /proc/crypto)")
    return best[1]


def cpu_has_aes() -> bool:
    flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return bool(flags and " aes" in f" {flags.group(1)} ")


ENCRYPTED_PARENT = "/srv/pgdata-volume/postgresql"  # the db's fscrypt directory (unlocked)
PLAIN_PARENT = "/srv/pgdata-volume"  # the same ext4 volume, no policy
SETUP = """
enc={enc}/tierwall-bench-crypto; plain={plain}/tierwall-bench-crypto
rm -rf "$enc" "$plain"; mkdir "$enc" "$plain"
# grep without -q reads to the end: under pipefail an early exit would SIGPIPE fscrypt.
fscrypt status "$enc" | grep 'is encrypted' >/dev/null || {{ echo "$enc is not encrypted" >&2; exit 1; }}
if fscrypt status "$plain" 2>/dev/null | grep 'is encrypted' >/dev/null; then
  echo "$plain is encrypted" >&2; exit 1
fi
"""
# Microseconds of one step, timed on the db itself.
WRITE = (
    "s=$(date +%s%N); dd if=/dev/zero of={dir}/f bs=1M count={mib} conv=fsync status=none; "
    "e=$(date +%s%N); echo $(((e-s)/1000))"
)
READ = "s=$(date +%s%N); cat {dir}/f >/dev/null; e=$(date +%s%N); rm -f {dir}/f; echo $(((e-s)/1000))"


def volume_mib_s(mib: int = 256) -> dict[str, tuple[float, float]]:
    """Write (with fsync) and read with a cold cache ``mib`` MiB in the db's encrypted directory and
    beside it on the same volume unencrypted; best of two rounds each, MiB/s (write, read)."""
    lab = Lab()
    db = lab.first("db")
    dirs = {
        "enc": f"{ENCRYPTED_PARENT}/tierwall-bench-crypto",
        "plain": f"{PLAIN_PARENT}/tierwall-bench-crypto",
    }
    best: dict[str, tuple[float, float]] = {}
    try:
        lab.ssh(db, SETUP.format(enc=ENCRYPTED_PARENT, plain=PLAIN_PARENT))
        for _round in range(2):
            for kind, directory in dirs.items():
                write_us = int(lab.ssh(db, WRITE.format(dir=directory, mib=mib), timeout=600))
                drop_caches()
                read_us = int(lab.ssh(db, READ.format(dir=directory), timeout=600))
                old = best.get(kind, (0.0, 0.0))
                best[kind] = (max(old[0], mib / (write_us / 1e6)), max(old[1], mib / (read_us / 1e6)))
    finally:
        lab.ssh(db, "rm -rf " + " ".join(dirs.values()), check=False)
    return best


def openssl_mib_s() -> float:
    """OpenSSL's aes-256-xts on 16 KiB blocks (user space, the CPU's AES instructions), MiB/s."""
    done = run(["openssl", "speed", "-seconds", "3", "-bytes", "16384", "-evp", "aes-256-xts"], timeout=120)
    line = next((ln for ln in done.stdout.splitlines() if ln.lower().startswith("aes-256-xts")), None)
    if line is None:
        raise BenchError(f"cannot read openssl's figures:\n{done.stdout}")
    kbytes_per_s = float(line.split()[-1].rstrip("k"))  # openssl prints 1000-byte units per second
    return kbytes_per_s * 1000 / 2**20


def body() -> int:
    driver = kernel_driver()
    user = openssl_mib_s()
    volume = volume_mib_s()
    accelerated = "aesni" in driver or "vaes" in driver
    (enc_w, enc_r), (plain_w, plain_r) = volume["enc"], volume["plain"]
    figures = [
        Figure("CPU has AES instructions", "yes" if cpu_has_aes() else "no"),
        Figure("kernel xts(aes) driver (fscrypt, dm-crypt)", driver, "an aesni/vaes driver", accelerated),
        Figure("user-space aes-256-xts (openssl, AES-NI)", f"{user:.0f} MiB/s"),
        Figure("db volume write+fsync, encrypted dir", f"{enc_w:.0f} MiB/s"),
        Figure("db volume write+fsync, plain dir", f"{plain_w:.0f} MiB/s"),
        Figure("  ratio encrypted/plain, write", f"{enc_w / plain_w:.2f}x"),
        Figure("db volume read (cold cache), encrypted dir", f"{enc_r:.0f} MiB/s"),
        Figure("db volume read (cold cache), plain dir", f"{plain_r:.0f} MiB/s"),
        Figure("  ratio encrypted/plain, read", f"{enc_r / plain_r:.2f}x"),
    ]
    print_table(figures)
    write_report(
        "crypto",
        {
            "driver": driver,
            "openssl_mib_s": round(user, 1),
            "volume_mib_s": {k: {"write": round(w, 1), "read": round(r, 1)} for k, (w, r) in volume.items()},
            "figures": [f.__dict__ for f in figures],
        },
    )
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    main(body)
