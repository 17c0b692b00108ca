"""Command line of the ablation sweeps (paper §4.3: Fig. 6, Tables 2-3)::

    moediffir sweep NAME --profile smoke [--set K=V ...] [--device cpu|cuda|auto] [--status] [--no-report]

``NAME`` is ``prompts_nk`` (Fig. 6), ``prompt_design`` (Table 2), ``v2t_dp`` (Table 3) or ``all``. Finished
variants are reused and an interrupted sweep continues where it stopped: rerun the same command. ``--status``
only lists the variants, their run keys and states. :func:`add_sweep_parsers` registers the ``sweep`` command
on the ``moediffir`` parser; ``python -m moediffir.ablation.cli sweep ...`` runs it on its own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_sweep(args: argparse.Namespace) -> int:
    from moediffir.ablation.sweep import run_sweep, sweep_status
    from moediffir.ablation.variants import SWEEPS, build_sweep
    from moediffir.cli import config_from_args

    cfg = config_from_args(args)
    names = list(SWEEPS) if args.name == "all" else [args.name]
    for name in names:
        sweep = build_sweep(name, cfg)
        if args.status:
            print(f"{sweep.title} ({name}):")
            print(sweep_status(cfg, sweep).drop(columns=["folder"]).to_string(index=False))
            continue
        run_sweep(cfg, sweep, progress=not args.no_progress)
        if not args.no_report:
            from moediffir.report.ablations import write_sweep_report

            for path in write_sweep_report(cfg, name):
                print(f"wrote {path}")
    return 0


def add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    """``moediffir sweep NAME``: run (or resume) an ablation sweep and draw its figure or table."""
    from moediffir.ablation.variants import SWEEPS
    from moediffir.cli import add_config_args

    p = sub.add_parser("sweep", help="ablation sweeps of paper §4.3 (Fig. 6, Tables 2-3), resumable",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=[*SWEEPS, "all"], help="which sweep (all: every sweep in notebook order)")
    add_config_args(p, device=True)
    p.add_argument("--status", action="store_true", help="list the variants, their keys and states; run nothing")
    p.add_argument("--no-report", action="store_true", help="do not draw the figure / table after the sweep")
    p.add_argument("--no-progress", action="store_true", help="no training progress bars")
    p.set_defaults(func=_cmd_sweep)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moediffir.ablation.cli sweep NAME ...``: the same commands as ``moediffir`` (one entry point)."""
    from moediffir.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
