"""One writer per output folder (moediffir.utils.locks): the lock file, its refusal, its takeover when stale.

The holders are real processes: a child that takes the lock and waits for a line on its stdin, so every test
knows for certain when the lock is held and when it is let go (no sleeps, no timing).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT as REPO

from moediffir.errors import MoEDiffIRError
from moediffir.utils import locks
from moediffir.utils.locks import FolderLockedError, LockHolder, folder_lock, lock_path, read_holder

_HOLDER = """
import sys
from moediffir.utils.locks import folder_lock

with folder_lock(sys.argv[1], name=sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()  # the test lets go by closing our stdin
"""


@contextlib.contextmanager
def held_elsewhere(folder: Path, name: str = "") -> Iterator[subprocess.Popen]:
    """Another process holding ``folder``'s lock for the block."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), name], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
        proc.wait(timeout=60)


def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def test_the_lock_file_names_this_process_and_goes_away_with_its_folder(tmp_path):
    folder = tmp_path / "runs" / "stage1"
    with folder_lock(folder) as path:
        assert path == lock_path(folder) and path.name == ".moediffir.lock"
        holder = read_holder(folder)
        assert holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname()
        assert set(json.loads(path.read_text())) == {"pid", "host", "since", "command"}
        with folder_lock(folder):  # this process may nest it
            pass
        assert path.exists()
    assert not path.exists()
    assert not (tmp_path / "runs").exists()  # the folders the lock made, still empty, are gone too


def test_a_folder_that_got_work_stays_and_an_error_lets_go(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), folder_lock(tmp_path / "out"):
        (tmp_path / "out" / "result.txt").write_text("x")
        raise RuntimeError("boom")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["result.txt"]
    with folder_lock(tmp_path / "out"):
        pass


def test_a_second_process_is_refused_in_one_line_naming_the_holder(tmp_path):
    with held_elsewhere(tmp_path) as holder:
        with pytest.raises(FolderLockedError) as err, folder_lock(tmp_path, what="stage folder"):
            pytest.fail("the lock was taken twice")
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{tmp_path}: stage folder in use by another run")
        assert f"PID {holder.pid} on {socket.gethostname()}, since " in message
        assert isinstance(err.value, MoEDiffIRError) and err.value.exit_code == 2  # the CLI prints it as one line
        with folder_lock(tmp_path, name="2-of-2"):  # another part of the folder is free
            pass
    assert read_holder(tmp_path) is None  # released on exit
    with folder_lock(tmp_path):
        pass


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    with held_elsewhere(tmp_path) as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
    left = read_holder(tmp_path)
    assert left is not None and left.pid == holder.pid and left.is_stale()  # the file stayed behind
    with folder_lock(tmp_path):
        assert read_holder(tmp_path).pid == os.getpid()


def test_a_recorded_dead_pid_is_stale_and_taken_over(tmp_path):
    dead = LockHolder(_dead_pid(), socket.gethostname(), "2001-01-01 00:00:00 +0000", "moediffir data build")
    lock_path(tmp_path).write_text(dead.to_text())
    assert dead.is_stale() and not LockHolder(os.getpid(), socket.gethostname(), "now").is_stale()
    assert not LockHolder(dead.pid, "another-host", "now").is_stale()  # another host's PIDs cannot be checked
    with folder_lock(tmp_path):
        assert read_holder(tmp_path).pid == os.getpid()


def test_without_flock_the_record_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "_flock", lambda fd: None)  # a filesystem that cannot lock
    lock_path(tmp_path).write_text(LockHolder(_dead_pid(), socket.gethostname(), "then").to_text())
    with folder_lock(tmp_path):  # stale: taken over
        assert read_holder(tmp_path).pid == os.getpid()
    for holder in (LockHolder(os.getppid(), socket.gethostname(), "then"), LockHolder(1, "another-host", "then")):
        lock_path(tmp_path).write_text(holder.to_text())
        with pytest.raises(FolderLockedError, match=f"PID {holder.pid} on {holder.host}"), folder_lock(tmp_path):
            pytest.fail("a live holder's lock was taken")


def test_only_the_main_rank_of_a_launch_locks(tmp_path, monkeypatch):
    with held_elsewhere(tmp_path):
        monkeypatch.setenv("RANK", "1")  # another rank of a launch: shares the folder its main process locked
        with folder_lock(tmp_path, main_process_only=True) as path:
            assert path is None
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(FolderLockedError), folder_lock(tmp_path, main_process_only=True):
            pytest.fail("rank 0 took a held lock")


# ------------------------------------------------------------------------------ the commands that lock
_CLI_CASES = [  # (command line, folder it locks, what the refusal calls it)
    (["stage2-data", "--device", "cpu"], "runs/smoke/stage2", "stage folder"),
    (["data", "merge"], "bench", "benchmark folder"),
    (["evaluate", "--merge"], "results/smoke", "results folder"),
    (["report"], "results/smoke", "results folder"),
    (["sweep", "prompts_nk", "--device", "cpu"], "results/smoke", "results folder"),
]


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (its lock files aside) with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not locks.is_lock_file(p.name)}


@pytest.mark.parametrize(("argv", "folder", "what"), _CLI_CASES, ids=[" ".join(c[0][:2]) for c in _CLI_CASES])
def test_a_command_into_a_locked_folder_is_refused_in_one_line_and_writes_nothing(tmp_path, argv, folder, what):
    """``stage2-data``, ``data merge``, ``evaluate --merge``, ``report`` and ``sweep`` stop at once while another
    process (here: this test) holds the lock of the folder they write, naming it, and change no file."""
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "manifest.csv").write_text("split,set\n")  # what the preflight looks for
    before = _tree(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "moediffir.cli", *argv, "--profile", "smoke", "--set", "data.out_dir=bench",
           "--set", "runs_dir=runs", "--set", "results_dir=results"]
    with folder_lock(tmp_path / folder):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("moediffir:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{folder}: {what} in use by another run (PID {os.getpid()} on {socket.gethostname()}, " in errors[0]
    assert _tree(tmp_path) == before and not any(tmp_path.glob("runs/smoke/stage2/*"))


def test_stage2_data_elsewhere_locks_that_folder_too(tmp_path):
    from moediffir.config import resolve_config
    from moediffir.training.stage2_data import generate_stage2_data

    cfg = resolve_config("smoke", {"runs_dir": str(tmp_path / "runs"), "stage2.data_dir": str(tmp_path / "latents")})
    with held_elsewhere(tmp_path / "latents"), pytest.raises(FolderLockedError, match="stage-II data folder in use"):
        generate_stage2_data(cfg, progress=False)
    assert not (tmp_path / "runs").exists()  # the stage folder's lock, let go, left nothing behind
