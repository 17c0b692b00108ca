"""``moediffir doctor``: every missing dataset, benchmark and weight file of a profile, and where each goes
(docs/design.md §2; the paper profile's inputs of §3.5 and §4.1)."""

from __future__ import annotations

from moediffir.cli.common import Namespace, SubParsers, add_config_args, overrides_from_args, set_command
from moediffir.config import resolve_config


def _cmd_doctor(args: Namespace) -> int:
    from moediffir.doctor import NEEDS, preflight

    cfg = resolve_config(args.profile, overrides_from_args(args))
    report = preflight(cfg, NEEDS)
    print(report.text())
    return 0 if report.ok else 2


def add_doctor_command(sub: SubParsers) -> None:
    """``moediffir doctor``: every missing dataset, benchmark and weight file of a profile (exit 2 if any)."""
    p = sub.add_parser("doctor", help="list every missing dataset and weight file, and where each goes (no work)")
    add_config_args(p)
    set_command(p, _cmd_doctor)
