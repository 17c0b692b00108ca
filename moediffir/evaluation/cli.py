"""``moediffir evaluate`` and ``moediffir report`` (paper §4.2, appendix B; docs/design.md §7).

    moediffir evaluate --profile smoke [--model DIR] [--external NAME=DIR ...] [--no-model] [--set K=V ...] [--device D]
    moediffir report   --profile smoke [--results DIR] [--set K=V ...]

``evaluate`` restores the test sets with the trained model (default ``<runs>/<profile>/model``), scores it, the
compressed input and every external method, and writes the numbers, tables and figures under
``<results>/<profile>/``. ``report`` redraws every table and figure from the saved numbers only.
:func:`add_eval_parsers` registers both on the main ``moediffir`` parser; :func:`main` runs them alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from moediffir.cli import config_from_args
    from moediffir.evaluation.evaluator import run_evaluation
    from moediffir.evaluation.external import parse_external

    cfg = config_from_args(args)
    externals = dict(parse_external(text) for text in args.external)
    res = run_evaluation(cfg, args.model, externals, use_model=not args.no_model, device=args.device)
    for match in res.externals.values():
        print(match.summary())
    print(f"results: {res.metrics_dir / 'results.csv'} ({len(res.results)} rows); "
          f"{len(res.report_paths)} table/figure files under {res.out_dir}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from moediffir.cli import config_from_args
    from moediffir.report.regenerate import regenerate_report

    cfg = config_from_args(args)
    paths = regenerate_report(cfg, args.results)
    for p in paths:
        print(p)
    return 0


def add_eval_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` and ``report`` (each with ``--profile``, ``--set``; evaluate with ``--device``)."""
    from moediffir.cli import add_config_args

    p = subparsers.add_parser("evaluate", help="restore and score the test sets; write tables and figures (§4.2)")
    add_config_args(p, device=True)
    p.add_argument("--model", default=None, metavar="DIR",
                   help="trained model folder (default <runs>/<profile>/model, written by notebooks 02/03)")
    p.add_argument("--external", action="append", default=[], metavar="NAME=DIR",
                   help="another method's restored images, matched by <set>/<task>/<stem>.png or file name "
                        "(repeatable)")
    p.add_argument("--no-model", action="store_true",
                   help="score only the compressed input and the --external methods (no trained model needed)")
    p.set_defaults(func=_cmd_evaluate)

    p = subparsers.add_parser("report", help="redraw every table and figure from the saved numbers (no recomputing)")
    add_config_args(p)
    p.add_argument("--results", default=None, metavar="DIR",
                   help="results folder holding metrics/ (default <results>/<profile>)")
    p.set_defaults(func=_cmd_report)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moediffir.evaluation.cli evaluate ...``: the same commands as ``moediffir`` (one entry point)."""
    from moediffir.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
