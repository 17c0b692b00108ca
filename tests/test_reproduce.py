"""`moediffir reproduce`: ordered papermill runs, skipping unchanged notebooks, failures named."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import torch

from moediffir.reproduce import ReproduceError, find_notebooks, reproduce


def _write_nb(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\noverrides = {}')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(nbformat.writes(nb))


@pytest.fixture
def tiny_repo(tmp_path):
    (tmp_path / "notebooks").mkdir()
    _write_nb(tmp_path / "notebooks" / "01_a.ipynb",
              "from pathlib import Path\nPath('a.txt').write_text(profile + str(overrides.get('seed', 0)))")
    _write_nb(tmp_path / "notebooks" / "02_b.ipynb",
              "from pathlib import Path\nPath('b.txt').write_text(Path('a.txt').read_text() + '+b')")
    return tmp_path


def test_runs_in_order_then_skips(tiny_repo):
    first = reproduce("smoke", {"seed": 3}, root=tiny_repo, log=lambda s: None)
    assert first.ran == ["01_a", "02_b"]
    assert (tiny_repo / "b.txt").read_text() == "smoke3+b"  # ran in the repo root, in order, with parameters
    out = tiny_repo / "results" / "smoke" / "notebooks"
    executed = json.loads((out / "02_b.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"]["overrides"] == {"seed": 3}
    manifest = json.loads((tiny_repo / "results" / "smoke" / "run_manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["packages"]["torch"] != "not installed"
    assert manifest["torch_threads"] == torch.get_num_threads()
    assert [n["notebook"] for n in manifest["notebooks"]] == ["01_a", "02_b"]

    second = reproduce("smoke", {"seed": 3}, root=tiny_repo, log=lambda s: None)
    assert second.skipped == ["01_a", "02_b"] and second.ran == []

    # changed parameters rerun everything; a changed notebook reruns itself and what follows it
    third = reproduce("smoke", {"seed": 4}, root=tiny_repo, log=lambda s: None)
    assert third.ran == ["01_a", "02_b"]
    _write_nb(tiny_repo / "notebooks" / "02_b.ipynb",
              "from pathlib import Path\nPath('b.txt').write_text('changed')")
    fourth = reproduce("smoke", {"seed": 4}, root=tiny_repo, log=lambda s: None)
    assert fourth.skipped == ["01_a"] and fourth.ran == ["02_b"]


def test_failure_names_notebook_and_cell_and_stops(tiny_repo):
    (tiny_repo / "helper.py").write_text("def explode():\n    raise ValueError('broken on purpose')\n")
    _write_nb(tiny_repo / "notebooks" / "01_a.ipynb", "import sys\nsys.path.insert(0, '.')\nimport helper\nhelper.explode()")
    with pytest.raises(ReproduceError, match=r"01_a\.ipynb failed in cell .*broken on purpose") as err:
        reproduce("smoke", root=tiny_repo, log=lambda s: None)
    assert "helper.py:2, in explode()" in str(err.value)  # where it was raised, not only what
    assert not (tiny_repo / "b.txt").exists()  # stopped at the first failure
    manifest = json.loads((tiny_repo / "results" / "smoke" / "run_manifest.json").read_text())
    assert manifest["notebooks"][0]["status"] == "failed"


def test_bad_override_fails_before_running(tiny_repo):
    with pytest.raises(ValueError, match="data.nope"):
        reproduce("smoke", {"data.nope": 1}, root=tiny_repo, log=lambda s: None)


def test_no_notebooks(tmp_path):
    with pytest.raises(ReproduceError, match="no numbered notebooks"):
        find_notebooks(tmp_path)


def _kernel_lines_below_error(err: str) -> list[str]:
    """The kernel's own log lines under ERROR in ``err`` (its start notice is a WARNING)."""
    return [ln for ln in err.splitlines()
            if "[IPKernelApp]" in ln and not any(level in ln for level in ("ERROR", "CRITICAL"))]


def test_kernel_start_notice_stays_out_of_the_output(tiny_repo, capfd, monkeypatch):
    """ipykernel >= 7 logs an 'unencrypted TCP' warning on every (loopback) kernel start; the runner starts kernels
    with their log at errors, so a reproduce's output holds only the kit's own lines."""
    from moediffir import reproduce as rep

    src = tiny_repo / "notebooks" / "01_a.ipynb"
    params = {"profile": "smoke", "overrides": {}}
    monkeypatch.setattr(rep, "KERNEL_ARGUMENTS", [])
    rep._default_executor(src, tiny_repo / "plain.ipynb", params, tiny_repo)
    plain = capfd.readouterr().err
    monkeypatch.undo()
    rep._default_executor(src, tiny_repo / "quiet.ipynb", params, tiny_repo)
    quiet = capfd.readouterr().err
    assert "without encryption" not in quiet
    assert (tiny_repo / "quiet.ipynb").is_file() and (tiny_repo / "a.txt").read_text() == "smoke0"
    if _kernel_lines_below_error(plain):  # this ipykernel does log at start: the quiet run must have dropped it
        # an ERROR line may stay (a kernel interrupted at shutdown on a busy machine)
        assert _kernel_lines_below_error(quiet) == []


def test_stage0_notebook_runs_only_where_the_prior_is_trained_here(tiny_repo):
    _write_nb(tiny_repo / "notebooks" / "00_prior.ipynb", "x = 1")
    ran: list[str] = []
    executor = lambda src, dst, params, cwd: (ran.append(src.stem), dst.write_text(src.read_text()))
    smoke = reproduce("smoke", root=tiny_repo, log=lambda s: None, executor=executor)
    assert smoke.ran == ["01_a", "02_b"] and ran == ["01_a", "02_b"]
    ran.clear()
    mini = reproduce("mini", root=tiny_repo, log=lambda s: None, executor=executor)
    assert mini.ran == ["00_prior", "01_a", "02_b"] and ran == ["00_prior", "01_a", "02_b"]
    manifest = json.loads((tiny_repo / "results" / "mini" / "run_manifest.json").read_text())
    assert [n["notebook"] for n in manifest["notebooks"]] == ["00_prior", "01_a", "02_b"]
    assert all(n["seconds"] >= 0 for n in manifest["notebooks"])  # the time of each stage is recorded
