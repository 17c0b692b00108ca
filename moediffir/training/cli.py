"""Command line of the two training stages (paper §3.4, §4.1; docs/design.md §5)::

    moediffir train stage1 --profile smoke [--set K=V ...] [--resume] [--device cpu|cuda|auto] [--no-progress]
    moediffir train stage2 --profile smoke [--set K=V ...] [--resume] [--device ...]
    moediffir stage2-data  --profile smoke [--set K=V ...] [--device ...]

Multi-GPU (or several CPU processes) with the same commands, e.g. ``accelerate launch --multi_gpu
--num_processes 4 -m moediffir.training.cli train stage1 --profile paper``. :func:`add_train_parsers` registers
the ``train`` and ``stage2-data`` groups on the ``moediffir`` parser; ``python -m moediffir.training.cli`` runs
them on their own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from moediffir.cli import add_config_args, config_from_args


def _cmd_train_stage1(args: argparse.Namespace) -> int:
    from moediffir.training.stage1 import train_stage1

    folder = train_stage1(config_from_args(args), resume=args.resume, progress=not args.no_progress)
    print(f"stage I model: {folder}")
    return 0


def _cmd_train_stage2(args: argparse.Namespace) -> int:
    from moediffir.training.stage2 import train_stage2

    folder = train_stage2(config_from_args(args), resume=args.resume, progress=not args.no_progress)
    print(f"model with the stage II decoder compensator: {folder}")
    return 0


def _cmd_stage2_data(args: argparse.Namespace) -> int:
    from moediffir.training.stage2 import generate_stage2_data

    folder = generate_stage2_data(config_from_args(args), progress=not args.no_progress)
    print(f"stage II latents: {folder}")
    return 0


def add_train_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train stage1|stage2`` and ``stage2-data`` (each sets ``func``, called with the args)."""
    train = subparsers.add_parser("train", help="fine-tune MoE-DiffIR: stage I (prompts) or II (decoder) (§3.4)")
    stages = train.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, func, text in (
        ("stage1", _cmd_train_stage1, "MoE-Prompt Module + SPADE (+ V2T) on the frozen SD backbone (Eq. 2)"),
        ("stage2", _cmd_train_stage2, "decoder compensator on stage-I latents (Eq. 4); run stage2-data first"),
    ):
        p = stages.add_parser(name, help=text)
        add_config_args(p, device=True)
        p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of this stage")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=func)
    p = subparsers.add_parser("stage2-data", help="sample the stage-II latents z0 with the stage-I model (resumable)")
    add_config_args(p, device=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_stage2_data)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moediffir.training.cli train stage1 ...`` (also under ``accelerate launch``): the ``moediffir`` CLI."""
    from moediffir.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
