"""Where a report comes from: the commit, whether the work tree matched it, and the hash of every input.

An auditor holding the report and the files can recompute each SHA-256 (`sha256sum`) and see that
the report speaks about exactly these controls and this evidence.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "unknown"


@dataclass(frozen=True)
class FileHash:
    role: str  # controls | junit | segregation
    path: str  # relative to the repository when inside it, as `sha256sum -c` run there expects
    sha256: str


@dataclass(frozen=True)
class Provenance:
    commit: str
    # `git status --porcelain` lines at the time the report was built (git-ignored files excluded).
    changes: tuple[str, ...]
    # False when git could not say: a tree nobody can vouch for counts as modified.
    git_known: bool
    files: tuple[FileHash, ...]
    run_commits: tuple[str, ...]

    @property
    def modified(self) -> bool:
        return bool(self.changes) or not self.git_known

    def warnings(self) -> list[str]:
        """What makes this report's evidence weaker than a clean build of one commit."""
        found = []
        if not self.git_known:
            found.append("built outside a readable git work tree: its code cannot be tied to a commit")
        elif self.changes:
            found.append(
                f"built from a modified work tree ({len(self.changes)} changed path(s) against "
                f"commit {self.commit[:12]}): the code that ran is not exactly that commit"
            )
        other = [c for c in self.run_commits if c != self.commit]
        if self.git_known and other:
            commits = ", ".join(c[:12] for c in other)
            found.append(f"fed with tests that ran at commit(s) {commits}, not {self.commit[:12]}")
        return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def collect(repo: Path, inputs: list[tuple[str, Path]], run_commits: set[str] | None = None) -> Provenance:
    """The provenance of a report built now from ``inputs`` (role, path) in the work tree ``repo``."""
    commit = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=all")
    known = commit is not None and status is not None
    files = tuple(FileHash(role, _display(path, repo), sha256_file(path)) for role, path in inputs)
    return Provenance(
        commit=(commit or UNKNOWN).strip(),
        changes=tuple(line for line in (status or "").splitlines() if line.strip()),
        git_known=known,
        files=files,
        run_commits=tuple(sorted(run_commits or ())),
    )


def _git(repo: Path, *args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def _display(path: Path, repo: Path) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(repo.resolve()))
    except ValueError:
        return str(resolved)
