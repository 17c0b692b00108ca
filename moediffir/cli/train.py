"""``moediffir train prior|stage1|stage2`` and ``moediffir stage2-data``: the two training stages of paper §3.4
(and stage 0, the small prior of the ``mini`` profile)."""

from __future__ import annotations

from moediffir.cli.common import Namespace, SubParsers, add_config_args, command_config, set_command
from moediffir.config import Config, ConfigError


def _has_stage0(cfg: Config) -> None:
    """Refuse ``train prior`` for a profile without stage 0 (its prior is pretrained), before any work."""
    if not cfg.prior.enabled:
        raise ConfigError(f"profile {cfg.profile!r} has no stage 0 (prior.enabled=false): its prior is "
                          f"{cfg.model.sd_source or cfg.model.backbone}; stage 0 trains with --profile mini")


def _cmd_train(args: Namespace) -> int:
    cfg = command_config(args, check=_has_stage0 if args.stage == "prior" else None)
    from moediffir.training.runtime import stage_dir
    from moediffir.utils.io import no_empty_folder_on_failure

    if args.stage == "prior":
        from moediffir.training.prior import train_prior as train
    elif args.stage == "stage1":
        from moediffir.training.stage1 import train_stage1 as train
    else:
        from moediffir.training.stage2 import train_stage2 as train
    with no_empty_folder_on_failure(stage_dir(cfg, args.stage)):  # a failed run leaves no empty stage folder
        folder = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    what = {"prior": "stage 0 prior (diffusers layout)", "stage1": "stage I model"}.get(
        args.stage, "model with the stage II decoder compensator")
    print(f"{what}: {folder}")
    return 0


def _cmd_stage2_data(args: Namespace) -> int:
    from moediffir.training.stage2_data import generate_stage2_data

    folder = generate_stage2_data(command_config(args), progress=not args.no_progress)
    print(f"stage II latents: {folder}")
    return 0


def add_train_commands(sub: SubParsers) -> None:
    """``moediffir train prior|stage1|stage2`` and ``moediffir stage2-data`` (paper §3.4; prior: stage 0 of mini)."""
    train = sub.add_parser("train", help="fine-tune MoE-DiffIR: stage I (prompts) or II (decoder) (§3.4)")
    stages = train.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, needs, text in (
        ("prior", ("datasets",), "stage 0 (profile mini): a small VAE + UNet prior trained here from scratch"),
        ("stage1", ("benchmark", "model_weights"),
         "MoE-Prompt Module + SPADE (+ V2T) on the frozen SD backbone (Eq. 2)"),
        ("stage2", ("model_weights", "metric_weights"),
         "decoder compensator on stage-I latents (Eq. 4); run stage2-data first"),
    ):
        p = stages.add_parser(name, help=text)
        add_config_args(p, device=True)
        how = p.add_mutually_exclusive_group()
        how.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of this stage")
        how.add_argument("--overwrite", action="store_true",
                         help="start afresh, replacing the checkpoints of an earlier run of this stage")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        set_command(p, _cmd_train, needs=needs, device=True, writes=("runs",))
    p = sub.add_parser("stage2-data", help="sample the stage-II latents z0 with the stage-I model (resumable)")
    add_config_args(p, device=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    set_command(p, _cmd_stage2_data, needs=("benchmark", "model_weights"), device=True, writes=("runs",))
