"""Start-up cost of the command line: ``moediffir --help`` and the preflight ``moediffir doctor --profile paper``.

Runs each command ``--repeats`` times in a fresh interpreter (as a user does) and prints the median wall and
CPU seconds of each, and the ratio to a bare ``python -c pass`` start, so a change that makes them import
torch or pandas again shows up as a jump in the ratio. Targets: ``doctor`` under 5 s wall on a busy 2-core
machine (it reads no network library); ``--help`` within a few bare starts.

    python bench/bench_cli_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``argv`` in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(REPO), TORCH_HOME=str(Path(tmp) / "torch"))
        py = sys.executable
        commands = {
            "python -c pass": [py, "-c", "pass"],
            "moediffir --help": [py, "-m", "moediffir.cli", "--help"],
            "moediffir doctor --profile paper": [py, "-m", "moediffir.cli", "doctor", "--profile", "paper",
                                                 "--set", f"data.root={tmp}/data"],
        }
        results = {}
        for name, argv in commands.items():
            runs = [_timed(argv, env) for _ in range(args.repeats)]
            results[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    base = results["python -c pass"][0]
    print(f"{'command':<34} {'wall s':>8} {'CPU s':>8} {'x bare start':>13}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<34} {wall:8.2f} {cpu:8.2f} {wall / base:13.1f}")


if __name__ == "__main__":
    main()
