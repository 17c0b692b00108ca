"""Notebook parameters (moediffir.notebook): papermill lists every parameter with its type, and a name a
notebook does not declare is an error naming it (papermill itself only warns)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT as REPO

from moediffir.notebook import NotebookParameterError, check_injected_parameters

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAPERMILL = Path(sys.executable).parent / "papermill"


def _parameters_cell(nb: Path) -> str:
    cells = json.loads(nb.read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return "".join(cell["source"])


def _declared(source: str) -> list[str]:
    return [n.target.id for n in ast.parse(source).body if isinstance(n, ast.AnnAssign)]


def test_every_numbered_notebook_is_checked():
    assert len(NOTEBOOKS) >= 6 and NOTEBOOKS[-1].name == "06_evaluation.ipynb"


@pytest.mark.skipif(not PAPERMILL.exists(), reason="papermill is not installed")
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_help_notebook_lists_every_parameter_with_type_and_default(nb):
    proc = subprocess.run([str(PAPERMILL), "--help-notebook", str(nb)], capture_output=True, text=True,
                          timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Unable to parse" not in out and "Unknown type" not in out, out
    listed = re.findall(r"^  (\w+): (\S+) \(default (.*?)\)", out, flags=re.MULTILINE)
    source = _parameters_cell(nb)
    declared = _declared(source)
    assert declared and [name for name, _, _ in listed] == declared  # every assignment is annotated and listed
    values = {n.target.id: ast.unparse(n.value) for n in ast.parse(source).body}
    for name, type_name, default in listed:
        assert type_name in ("str", "dict", "bool", "int", "Optional[int]", "Optional[str]"), (name, type_name)
        assert ast.literal_eval(default) == ast.literal_eval(values[name]), name


def test_injected_names_are_checked_against_the_parameters_cell():
    params = 'profile: str = "smoke"\nworkers: "Optional[int]" = None  # processes\n'
    check_injected_parameters(["", params, '# Parameters\nprofile = "paper"\nworkers = 2\n', "import os"])
    check_injected_parameters(["", params, "x = 1"])  # no injected cell: an interactive session
    with pytest.raises(NotebookParameterError, match=r"'wrokers'.*parameters are: profile, workers"):
        check_injected_parameters(["", params, "# Parameters\nwrokers = 2\n"])


@pytest.mark.skipif(not PAPERMILL.exists(), reason="papermill is not installed")
def test_papermill_run_with_a_wrong_parameter_fails_naming_it(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [str(PAPERMILL), str(REPO / "notebooks" / "01_data_generation.ipynb"), str(tmp_path / "out.ipynb"),
         "-p", "profile", "smoke", "-p", "wrokers", "2", "--cwd", str(tmp_path), "-k", "python3"],
        capture_output=True, text=True, timeout=300, check=False, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "NotebookParameterError" in out and "unknown notebook parameter(s) 'wrokers'" in out, out[-3000:]
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    ran = [c for c in executed["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
    assert len(ran) == 3  # parameters, papermill's injected cell, the setup cell that stopped the run
