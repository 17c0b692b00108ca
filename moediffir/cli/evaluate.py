"""``moediffir evaluate`` and ``moediffir report``: the evaluation of paper §4.2 and appendix B, its tables and
figures (docs/design.md §7)."""

from __future__ import annotations

from moediffir.cli.common import Namespace, SubParsers, add_config_args, command_config, set_command
from moediffir.sharding import Shard


def _cmd_evaluate(args: Namespace) -> int:
    from moediffir.evaluation import sharded_evaluation
    from moediffir.evaluation.evaluator import evaluate_launched, launched_shard, run_evaluation
    from moediffir.evaluation.external import parse_external

    cfg = command_config(args)
    if args.merge:
        res = sharded_evaluation.merge_evaluation(cfg, count=args.shards)
    else:
        externals = dict(parse_external(text) for text in args.external)
        shard = Shard.parse(args.shard) if args.shard else launched_shard()
        if shard is not None and not args.shard:  # accelerate launch: a shard per process, one merge at the end
            res = evaluate_launched(cfg, shard, args.model, externals, use_model=not args.no_model,
                                    device=args.device)
        else:
            res = run_evaluation(cfg, args.model, externals, use_model=not args.no_model, device=args.device,
                                 shard=shard)
        if res is None or shard is not None and not len(res.results):
            return 0
    from moediffir.report.regenerate import regenerate_report

    report_paths = regenerate_report(cfg, res.out_dir)
    for match in res.externals.values():
        print(match.summary())
    print(f"results: {res.metrics_dir / 'results.csv'} ({len(res.results)} rows); "
          f"{len(report_paths)} table/figure files under {res.out_dir}")
    return 0


def _cmd_report(args: Namespace) -> int:
    from moediffir.evaluation.sharded_evaluation import merge_if_newer
    from moediffir.report.regenerate import regenerate_report
    from moediffir.utils.locks import folder_lock

    cfg = command_config(args)
    out = args.results or cfg.profile_results_dir
    with folder_lock(out, what="results folder"):  # refused at once while an evaluation writes there
        if merge_if_newer(cfg, out):  # a sharded evaluation's parts first
            print("merged the evaluation's parts into metrics/results.csv")
        for p in regenerate_report(cfg, out):
            print(p)
    return 0


def add_evaluation_commands(sub: SubParsers) -> None:
    """``moediffir evaluate`` and ``moediffir report`` (paper §4.2)."""
    p = sub.add_parser("evaluate", help="restore and score the test sets; write tables and figures (§4.2)")
    add_config_args(p, device=True)
    p.add_argument("--model", default=None, metavar="DIR",
                   help="trained model folder (default <runs>/<profile>/model, written by `moediffir train`)")
    p.add_argument("--external", action="append", default=[], metavar="NAME=DIR",
                   help="another method's restored images, matched by <set>/<task>/<stem>.png or file name "
                        "(repeatable)")
    p.add_argument("--no-model", action="store_true",
                   help="score only the compressed input and the --external methods (no trained model needed)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="restore and score only shard K of N of the items (a stable hash) as its own part")
    p.add_argument("--merge", action="store_true", help="assemble the results from the parts of the shards")
    p.add_argument("--shards", type=int, default=None, metavar="N", help="with --merge: the number of shards")
    set_command(p, _cmd_evaluate, needs=("benchmark", "metric_weights"), device=True, writes=("results",))

    p = sub.add_parser("report", help="redraw every table and figure from the saved numbers (no recomputing)")
    add_config_args(p)
    p.add_argument("--results", default=None, metavar="DIR",
                   help="results folder holding metrics/ (default <results>/<profile>)")
    set_command(p, _cmd_report, writes=("results",))
