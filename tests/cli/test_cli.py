"""The ``moediffir`` command line (data group)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from moediffir.cli import COMMAND_GROUPS, build_parser, main
from moediffir.cli.common import config_from_args
from moediffir.data.manifest import read_manifest


def test_groups_and_common_flags():
    assert "data" in COMMAND_GROUPS
    p = build_parser()
    args = p.parse_args(["data", "build", "--profile", "paper", "--preset", "official", "--workers", "3",
                         "--out", "o", "--set", "data.max_test_images=2", "--set", "seed=5"])
    cfg = config_from_args(args, {"data.preset": args.preset, "data.workers": args.workers, "data.out_dir": args.out})
    assert cfg.profile == "paper" and cfg.data.preset == "official" and cfg.data.workers == 3
    assert cfg.data.out_dir == "o" and cfg.data.max_test_images == 2 and cfg.seed == 5


def test_bad_override_is_one_line_error(capsys):
    assert main(["data", "build", "--set", "data.nope=1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data.nope" in err and "Traceback" not in err
    assert main(["data", "build", "--set", "data.workers=two", "--no-progress"]) == 2
    assert "data.workers" in capsys.readouterr().err


def test_data_build_and_verify(tmp_path, repo_root, capsys):
    out = tmp_path / "bench"
    argv = ["data", "build", "--profile", "smoke", "--workers", "1", "--out", str(out), "--no-progress",
            "--set", f"data.datasets_dir={repo_root / 'data' / 'smoke'}", "--set", 'data.codecs=["jpeg"]',
            "--set", "data.unseen=false", "--split", "test"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "9 planned, 9 built" in text
    df = read_manifest(out)
    assert set(df.split) == {"test"} and len(df) == 9
    assert main(["data", "verify", "--out", str(out), "--strict"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    (out / df.path[0]).write_bytes(b"x")
    assert main(["data", "verify", "--out", str(out)]) == 1


def test_data_build_missing_dataset_exit_code(tmp_path, capsys):
    code = main(["data", "build", "--out", str(tmp_path / "b"), "--no-progress",
                 "--set", f"data.datasets_dir={tmp_path}"])
    assert code == 2
    assert "smoke_train" in capsys.readouterr().err


def test_data_import_and_check(tmp_path, repo_root, capsys):
    src = repo_root / "data" / "smoke" / "smoke_test"
    ds = tmp_path / "datasets"
    assert main(["data", "import", "MYSET", str(src), "--set", f"data.datasets_dir={ds}", "--decode"]) == 0
    assert (ds / "MYSET" / "SHA256SUMS").is_file()
    assert main(["data", "check", "MYSET", "--set", f"data.datasets_dir={ds}"]) == 0
    assert "3 image(s)" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 1


def test_data_tasks_lists_21_labels(capsys):
    assert main(["data", "tasks", "--preset", "paper"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert sum(1 for l in lines if l.split()[0] != "-1") == 21


def test_console_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "moediffir.cli", "--help"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0 and "data" in res.stdout


def test_subcommand_required():
    with pytest.raises(SystemExit):
        main(["data"])


def test_help_imports_no_heavy_library():
    """``moediffir --help`` builds every command's parser without torch, pandas or numpy (it took 15 s on a busy
    machine when the parsers imported them); commands import what they need when they run."""
    code = ("import sys; from moediffir.cli import build_parser; build_parser().format_help(); "
            "print([m for m in ('torch', 'pandas', 'numpy', 'PIL', 'diffusers') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


def test_python_m_cli_is_the_moediffir_command():
    res = subprocess.run([sys.executable, "-m", "moediffir.cli", "doctor", "--help"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0 and "--profile" in res.stdout
