"""``moediffir reproduce``: notebooks 01-06 (paper §3.5-§4.3 end to end) in order through papermill."""

from __future__ import annotations

from moediffir.cli.common import (
    Namespace,
    SubParsers,
    add_config_args,
    command_config,
    overrides_from_args,
    set_command,
)


def _cmd_reproduce(args: Namespace) -> int:
    from moediffir.reproduce import reproduce

    command_config(args)  # validated, device and inputs checked, before the first notebook starts
    report = reproduce(args.profile, overrides_from_args(args), root=args.root, notebooks=args.only,
                       force=args.force)
    total = sum(r.seconds for r in report.runs)
    print(f"[reproduce] {len(report.ran)} ran, {len(report.skipped)} skipped, {total:.1f} s")
    return 0


def add_reproduce_commands(sub: SubParsers) -> None:
    """``moediffir reproduce``: notebooks 01-06 in order through papermill."""
    p = sub.add_parser(
        "reproduce", help="run notebooks 01-06 in order through papermill (skips unchanged ones)",
        description="Run every numbered notebook in order with papermill, writing the executed notebooks to "
        "results/<profile>/notebooks/ and a run manifest; unchanged notebooks are skipped.",
    )
    add_config_args(p, device=True)
    p.add_argument("--force", action="store_true", help="rerun every notebook even if nothing changed")
    p.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK",
                   help="run only these notebooks (e.g. 01_data_generation)")
    p.add_argument("--root", default=".", help="repository root (default: current directory)")
    set_command(p, _cmd_reproduce, needs=("datasets", "codec_weights", "model_weights", "metric_weights"), device=True,
             writes=("results",))
