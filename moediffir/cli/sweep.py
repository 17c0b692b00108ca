"""``moediffir sweep NAME``: the ablation sweeps of paper §4.3 (Fig. 6, Tables 2-3), resumable."""

from __future__ import annotations

from moediffir.cli.common import Namespace, SubParsers, add_config_args, command_config, set_command


def _cmd_sweep(args: Namespace) -> int:
    from moediffir.ablation.sweep import run_sweep, sweep_status
    from moediffir.ablation.variants import SWEEPS, build_sweep

    cfg = command_config(args)
    names = list(SWEEPS) if args.name == "all" else [args.name]
    if args.status:
        for name in names:
            sweep = build_sweep(name, cfg)
            print(f"{sweep.title} ({name}):")
            print(sweep_status(cfg, sweep).drop(columns=["folder"]).to_string(index=False))
        return 0
    from moediffir.utils.locks import folder_lock

    with folder_lock(cfg.profile_results_dir, what="results folder"):  # the sweeps and their reports: one writer
        for name in names:
            run_sweep(cfg, build_sweep(name, cfg), progress=not args.no_progress)
            if not args.no_report:
                from moediffir.report.ablations import write_sweep_report

                for path in write_sweep_report(cfg, name):
                    print(f"wrote {path}")
    return 0


def add_sweep_commands(sub: SubParsers) -> None:
    """``moediffir sweep NAME`` (paper §4.3 ablations: Fig. 6, Tables 2-3), resumable."""
    p = sub.add_parser("sweep", help="ablation sweeps of paper §4.3 (Fig. 6, Tables 2-3), resumable",
                       description="Run (or resume) an ablation sweep and draw its figure or table. Finished "
                       "variants are reused; an interrupted sweep continues where it stopped.")
    p.add_argument("name", metavar="NAME",
                   help="prompts_nk (Fig. 6), prompt_design (Table 2), v2t_dp (Table 3), or all")
    add_config_args(p, device=True)
    p.add_argument("--status", action="store_true", help="list the variants, their keys and states; run nothing")
    p.add_argument("--no-report", action="store_true", help="do not draw the figure / table after the sweep")
    p.add_argument("--no-progress", action="store_true", help="no training progress bars")
    set_command(p, _cmd_sweep, needs=("benchmark", "model_weights", "metric_weights"), device=True,
             writes=("runs", "results"))
