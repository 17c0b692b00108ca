"""A real JupyterLab server on the repository, started by ``make lab`` (as root too: ``--allow-root``): it
listens on 127.0.0.1 and refuses requests without its token, the notebooks are listed, the paired ``.py`` files
open as notebooks (jupytext), a kernel starts with ``moediffir`` importable and runs notebook 01's first cells,
and the server stops. With headless Chromium on the machine, a notebook opened in the lab UI is screenshotted.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT as REPO

NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytest.importorskip("jupyterlab")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, port: int, token: str, proc: subprocess.Popen) -> None:
        self.base, self.token, self.proc = f"http://127.0.0.1:{port}", token, proc

    def api(self, path: str, method: str = "GET", body: dict | None = None) -> dict:
        req = urllib.request.Request(f"{self.base}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else {}

    async def _execute(self, kernel_id: str, code: str, timeout: float) -> str:
        from tornado.websocket import websocket_connect

        url = f"{self.base.replace('http', 'ws')}/api/kernels/{kernel_id}/channels?token={self.token}"
        conn = await websocket_connect(url)
        msg_id = uuid.uuid4().hex
        await conn.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                raw = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    raise AssertionError(f"{content['ename']}: {content['evalue']}")
                elif kind == "status" and content["execution_state"] == "idle":
                    return "".join(out)
        finally:
            conn.close()
        raise AssertionError(f"no reply within {timeout} s to {code[:60]!r}")

    def execute(self, kernel_id: str, code: str, timeout: float = 300) -> str:
        return asyncio.run(self._execute(kernel_id, code, timeout))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("lab")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    lab_args = (f"--no-browser --port={port} --IdentityProvider.token={token} --ServerApp.port_retries=0 "
                "--LabApp.extension_manager=readonly")  # no extension catalogue to query
    cmd = ["make", "-s", "-C", str(REPO), "lab", f"BIN={Path(sys.executable).parent}", f"LAB_ARGS={lab_args}"]
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(port, token, proc)
    try:
        for _ in range(240):
            if proc.poll() is not None:
                break
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        if proc.poll() is not None:
            raise AssertionError("JupyterLab exited: " + (home / "server.log").read_text()[-3000:])
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    assert proc.returncode is not None  # the server is gone


def _make_lab_command(*args: str) -> str:
    res = subprocess.run(["make", "-n", "-s", "-C", str(REPO), "lab", *args], capture_output=True, text=True,
                         timeout=60, check=True)
    return " ".join(res.stdout.split())


def test_make_lab_allows_root_only_as_root_and_listens_on_localhost():
    as_root, as_user = _make_lab_command("LAB_UID=0"), _make_lab_command("LAB_UID=1000")
    assert "--allow-root" in as_root and "--allow-root" not in as_user
    here = _make_lab_command()  # this machine's own user id
    assert ("--allow-root" in here) == (os.getuid() == 0)
    for cmd in (as_root, as_user):
        assert "jupyter lab" in cmd and "--ServerApp.ip=127.0.0.1" in cmd
        assert "token=" not in cmd and "0.0.0.0" not in cmd  # the server's own token stays on


def test_the_server_refuses_requests_without_its_token(lab):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{lab.base}/api/contents", timeout=60)
    assert err.value.code == 403
    assert lab.api("/api/status")  # with the token it answers


def test_lab_lists_the_notebooks_and_opens_paired_scripts(lab):
    listing = lab.api("/api/contents")  # `make lab` serves notebooks/ as the lab's root
    by_name = {item["name"]: item["type"] for item in listing["content"]}
    assert [n for n in NOTEBOOKS if by_name.get(n) == "notebook"] == NOTEBOOKS and len(NOTEBOOKS) >= 6
    paired = lab.api("/api/contents/01_data_generation.py?type=notebook&content=1")
    assert paired["type"] == "notebook"  # jupytext: the .py script opens as a notebook
    cells = paired["content"]["cells"]
    assert any("parameters" in c["metadata"].get("tags", []) for c in cells)
    settings = lab.api("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert "Jupytext Notebook" in json.dumps(settings)  # double-clicking a .py opens the notebook view
    page = urllib.request.urlopen(f"{lab.base}/lab?token={lab.token}", timeout=60).read().decode()
    assert "JupyterLab" in page


def test_a_kernel_runs_notebook_01s_first_cells(lab):
    session = lab.api("/api/sessions", "POST", {"path": "01_data_generation.ipynb", "type": "notebook",
                                                "name": "01_data_generation.ipynb", "kernel": {"name": "python3"}})
    kernel = session["kernel"]["id"]
    try:
        out = lab.execute(kernel, "import moediffir, os; print('moediffir at', os.path.dirname(moediffir.__file__))")
        assert f"moediffir at {REPO / 'moediffir'}" in out
        nb = json.loads((REPO / "notebooks" / "01_data_generation.ipynb").read_text())
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        lab.execute(kernel, code[0])  # the parameters cell
        out = lab.execute(kernel, code[1])  # setup: to the repository root, config, imports
        assert "profile smoke: preset 'paper'" in out
        from moediffir.data.tasks import tasks_table

        n_tasks = len(tasks_table("paper"))  # the kernel's objects are the package's own
        assert lab.execute(kernel, "print(cfg.profile, len(tasks_table(cfg.data.preset)))").split() == [
            "smoke", str(n_tasks)]
    finally:
        lab.api(f"/api/sessions/{session['id']}", "DELETE")
    assert kernel not in {k["id"] for k in lab.api("/api/kernels")}


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_lab_ui_shows_a_notebook(lab, tmp_path):
    shot = tmp_path / "lab.png"
    url = f"{lab.base}/lab/tree/01_data_generation.ipynb?token={lab.token}&reset"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=20000",
           f"--screenshot={shot}", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    dom = proc.stdout
    assert "jp-LabShell" in dom or "jp-NotebookPanel" in dom, dom[:2000]  # the lab rendered, not an error page
    assert "403 : Forbidden" not in dom and "404 : Not Found" not in dom
    from PIL import Image

    colours = Image.open(shot).convert("RGB").resize((64, 64)).getcolors(64 * 64)
    assert colours is not None and len(colours) > 8  # not a blank page
