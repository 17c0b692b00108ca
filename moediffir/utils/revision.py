"""The kit's git revision, recorded beside what it produces (the reproduce manifest, model cards; paper §4.1's
settings are only reproducible with the code that ran them)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_revision(cwd: str | Path = ".") -> str:
    """``<sha>`` of ``HEAD`` in ``cwd`` (``-dirty`` when tracked files changed), or ``unknown`` outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=False)
        if rev.returncode != 0:
            return "unknown"
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
