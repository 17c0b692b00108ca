"""Ablation studies of paper §4.3 as resumable sweeps (Fig. 6, Table 2, Table 3; docs/design.md §4, §7, §9).

Import what you need from the submodules (no import-time work here)::

    from moediffir.ablation.sweep_plan import Sweep, Variant, EvalSpec
    from moediffir.ablation.sweep import run_sweep, gather_sweep, sweep_status
    from moediffir.ablation.variants import SWEEPS, build_sweep
    from moediffir.ablation.per_image import load_per_image  # the rows behind the tables' intervals
"""
