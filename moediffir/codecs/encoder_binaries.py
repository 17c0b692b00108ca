"""User-installed encoder programs of the video codecs (HM, VTM, vvencapp): finding them, running them, and
reading the QP they used from their log (paper §3.5; docs/design.md §3)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from moediffir.codecs.base import CodecError, CodecUnavailableError

_POC_QP = re.compile(
    r"POC\s+\d+.*?[\s(,]QP\s+(-?\d+)"
)  # HM/VTM/vvenc per-picture line ("nQP 37 QP 37" -> 37)

# --------------------------------------------------------------------------------------------- binaries
def find_encoder_binary(configured: str, env_var: str, names: tuple[str, ...], what: str, key: str) -> str:
    """Path of a user-installed encoder: config value, else ``$env_var``, else the first of ``names`` on PATH.

    Raises:
        CodecUnavailableError: naming the config key and the environment variable to set.
    """
    path = configured or os.environ.get(env_var, "")
    if path:
        p = Path(path).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        found = shutil.which(path)
        if found:
            return found
        raise CodecUnavailableError(
            f"{what}: encoder {path!r} (from data.{key} or ${env_var}) is not an executable file; "
            f"point data.{key} or ${env_var} at the {names[0]} binary"
        )
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    raise CodecUnavailableError(
        f"{what}: no encoder binary found; install {names[0]} and set data.{key} or the environment variable "
        f"${env_var} to its path (or put it on PATH)"
    )


def run_encoder(cmd: list[str], what: str, stdin: bytes | None = None, cwd: str | None = None) -> str:
    """Run an encoder program; its log (stdout + stderr), or a CodecError with the log's tail."""
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, cwd=cwd, check=False)
    except OSError as exc:
        raise CodecUnavailableError(f"{what}: cannot run {cmd[0]!r}: {exc}") from exc
    log = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise CodecError(f"{what}: {Path(cmd[0]).name} exited with code {proc.returncode}:\n{tail}")
    return log


def parse_poc_qp(log: str, what: str) -> float:
    """The slice QP of the first picture from an HM/VTM/vvenc ``POC ... QP n`` line."""
    m = _POC_QP.search(log)
    if m is None:
        raise CodecError(f"{what}: the encoder log has no 'POC ... QP n' line to read the QP used from")
    return float(m.group(1))
