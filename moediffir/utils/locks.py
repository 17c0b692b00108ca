"""One writer per output folder: a lock file that names its holder (the kit's rule, no paper section).

Every command that writes a stage folder, a benchmark or a results folder holds :func:`folder_lock` on it while it
works, so a second run into the same folder stops at once with one line naming the first
(:class:`FolderLockedError`, printed by the command line like every error of the kit) instead of racing it over
its files.

- The lock is the file ``<folder>/.moediffir.lock`` (``.moediffir-<name>.lock`` for one part of a folder, e.g.
  one shard of a sharded build). It holds the holder's PID, host, start time and command line as JSON and is
  removed when the holder leaves the block.
- Holding it means holding an exclusive ``flock`` on that file, which the system drops when the process ends,
  however it ends: a file left behind by a killed or crashed run is stale and the next run takes it over. On a
  filesystem without ``flock`` the file's content decides: it is stale when it names this host and a PID that
  is not running.
- A process may enter a lock it already holds (nested blocks are counted). Under ``accelerate launch`` only the
  main process (``RANK`` 0) takes it when asked to (``main_process_only=True``): the ranks of one launch share
  their folder. A folder the lock had to create is removed again when it is still empty at the end.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from moediffir.errors import MoEDiffIRError

LOCK_PREFIX = ".moediffir"
LOCK_SUFFIX = ".lock"
#: ``flock`` errors that mean "this filesystem cannot lock" rather than "another process holds the lock".
_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
#: Tries to open and lock the file; more than one only when a holder releases it at that very moment.
_ATTEMPTS = 5
#: How long a refused run waits for a holder that has just taken the lock to write its name into the file.
_RECORD_WAIT_S = 2.0
#: Locks this process holds: lock file -> [open descriptor, nesting depth].
_HELD: dict[Path, list[int]] = {}


class FolderLockedError(MoEDiffIRError, RuntimeError):
    """Another run holds the lock of an output folder; the message names it (PID, host, since when, command).

    Raised before any work (exit code 2): the refused run changed nothing."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: what the lock file records."""

    pid: int
    host: str
    since: str
    command: str = ""

    @classmethod
    def current(cls) -> LockHolder:
        """This process, now."""
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S %z"), command_line())

    @classmethod
    def from_text(cls, text: str) -> LockHolder | None:
        """The holder recorded in a lock file's ``text``; None when it is empty or not a record (yet)."""
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["since"]), str(data.get("command", "")))
        except (ValueError, TypeError, KeyError):
            return None

    def to_text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    def is_stale(self) -> bool:
        """The holder ran on this host and its process is gone (a lock of another host is never stale here)."""
        return self.host == socket.gethostname() and not pid_alive(self.pid)

    def describe(self) -> str:
        """``PID 123 on host, since 2025-01-31 12:00:00 +0000: moediffir train stage1 --profile smoke``."""
        text = f"PID {self.pid} on {self.host}, since {self.since}"
        return f"{text}: {self.command}" if self.command else text


def command_line(limit: int = 160) -> str:
    """This process's command line, shortened: ``moediffir`` for the kit's own entry points."""
    argv = list(sys.argv) or ["python"]
    program = "moediffir" if "moediffir" in argv[0] else Path(argv[0]).name
    text = " ".join([program, *argv[1:]])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a process of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def launch_rank() -> int:
    """This process's rank under ``accelerate launch`` / ``torchrun`` (``RANK``); 0 outside a launch."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def lock_path(folder: str | os.PathLike, name: str = "") -> Path:
    """The lock file of ``folder`` (of its part ``name``, when given)."""
    return Path(folder) / (f"{LOCK_PREFIX}-{name}{LOCK_SUFFIX}" if name else f"{LOCK_PREFIX}{LOCK_SUFFIX}")


def is_lock_file(name: str) -> bool:
    """Whether a file name is one of :func:`lock_path`'s (code that clears a folder keeps it)."""
    return name.startswith(LOCK_PREFIX) and name.endswith(LOCK_SUFFIX)


def read_holder(folder: str | os.PathLike, name: str = "") -> LockHolder | None:
    """The holder recorded in ``folder``'s lock file; None when there is no lock file or no record in it."""
    try:
        return LockHolder.from_text(lock_path(folder, name).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, name: str = "", what: str = "output folder",
                main_process_only: bool = False) -> Iterator[Path | None]:
    """Hold the lock of ``folder`` (its part ``name``) for the block; yield the lock file (None on a rank that
    does not lock, see ``main_process_only``).

    Raises :class:`FolderLockedError` naming the holder when another process holds it (``what`` names the folder
    in the message: ``stage folder``, ``benchmark folder``, ...).
    """
    if main_process_only and launch_rank() != 0:
        yield None
        return
    path = Path(os.path.abspath(lock_path(folder, name)))
    if path in _HELD:  # this process holds it already: a nested block
        _HELD[path][1] += 1
        try:
            yield path
        finally:
            _HELD[path][1] -= 1
        return
    created = _make_folders(path.parent)
    try:
        fd = _acquire(path, what)
    except BaseException:
        _remove_empty(created)
        raise
    _HELD[path] = [fd, 1]
    try:
        yield path
    finally:
        del _HELD[path]
        _release(fd, path)
        _remove_empty(created)


def _acquire(path: Path, what: str) -> int:
    """Open and lock ``path``, write this process into it; its descriptor. Refuses when another holds it."""
    for _ in range(_ATTEMPTS):
        got = _try_once(path)
        if isinstance(got, int):
            return got
        if got is not None:
            raise FolderLockedError(_refusal(path, what, got))
    raise FolderLockedError(f"{path.parent}: {what} in use: its lock {path.name} changed hands {_ATTEMPTS} times "
                            "while this run tried to take it; run again once the other runs have ended")


def _try_once(path: Path) -> int | LockHolder | None:
    """One try: the locked descriptor, or the holder that refuses us, or None (released meanwhile: try again)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    keep = False
    try:
        locked = _flock(fd)
        if locked is False:
            return _wait_for_record(path)
        if not _same_file(fd, path):  # the holder removed it between our open and our lock
            return None
        if locked is None:  # no flock on this filesystem: the recorded holder decides
            holder = LockHolder.from_text(path.read_text())
            if holder is not None and holder.pid != os.getpid() and not holder.is_stale():
                return holder
        _write_record(fd, LockHolder.current())
        keep = True
        return fd
    finally:
        if not keep:
            os.close(fd)


def _flock(fd: int) -> bool | None:
    """Take an exclusive ``flock`` without waiting: True taken, False held by another, None not supported."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if exc.errno in _NO_FLOCK:
            return None
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is still the file at ``path``."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _write_record(fd: int, holder: LockHolder) -> None:
    data = holder.to_text().encode("utf-8")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)


def _wait_for_record(path: Path) -> LockHolder | None:
    """The holder of a lock held by another process, once it has written its record (it writes it right after
    taking the lock); None when the file went away meanwhile (released: try again)."""
    deadline = time.monotonic() + _RECORD_WAIT_S
    while True:
        try:
            holder = LockHolder.from_text(path.read_text())
        except FileNotFoundError:
            return None
        if holder is not None and (not holder.is_stale() or time.monotonic() > deadline):
            return holder
        if time.monotonic() > deadline:
            return LockHolder(0, "an unknown host", "an unknown time", "a process that did not record itself")
        time.sleep(0.02)


def _refusal(path: Path, what: str, holder: LockHolder) -> str:
    """The one-line message of a refused run."""
    gone = " (that process has ended; a process it started still holds the lock)" if holder.is_stale() else ""
    return (f"{path.parent}: {what} in use by another run ({holder.describe()}){gone}; wait for it to end or stop "
            f"it, then run this again (nothing was changed; lock file {path.name})")


def _release(fd: int, path: Path) -> None:
    """Remove the lock file (while still holding it), then drop the lock."""
    try:
        if _same_file(fd, path):
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)


def _make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; the folders made, deepest first."""
    missing = []
    here = folder
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders :func:`_make_folders` made, deepest first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote there), or already gone
            return
