"""The yardstick table of notebook 06 and the targets read from it."""

from __future__ import annotations

import pandas as pd
import pytest

from moediffir.evaluation.protocol import METHOD_LQ, METHOD_MOE, METHOD_NO_COMPENSATOR
from moediffir.studies.yardsticks import CNN_BASELINE, target_check, yardstick_table


def _results() -> pd.DataFrame:
    rows = []
    scores = {  # task: {method: (psnr, lpips)}
        "jpeg_q10": {METHOD_LQ: (25.0, 0.30), METHOD_MOE: (26.0, 0.20), METHOD_NO_COMPENSATOR: (24.0, 0.25),
                     CNN_BASELINE: (25.5, 0.28)},
        "webp_q10": {METHOD_LQ: (27.0, 0.20), METHOD_MOE: (27.2, 0.22), METHOD_NO_COMPENSATOR: (26.0, 0.30),
                     CNN_BASELINE: (27.1, 0.19)},
        "avc_qp42": {METHOD_LQ: (26.0, 0.40), METHOD_MOE: (20.0, 0.10), METHOD_NO_COMPENSATOR: (20.0, 0.10),
                     CNN_BASELINE: (26.0, 0.40)},
    }
    for task, by_method in scores.items():
        kind = "unseen_type" if task.startswith("avc") else "seen"
        for method, (p, lp) in by_method.items():
            rows += [{"scope": "task", "kind": kind, "task": task, "method": method, "metric": "psnr", "value": p},
                     {"scope": "task", "kind": kind, "task": task, "method": method, "metric": "lpips", "value": lp}]
    return pd.DataFrame(rows)


def test_target_check_reads_gains_tasks_and_the_cnn_gap_from_the_seen_tasks_only():
    table = yardstick_table(_results(), "seen", metrics=("psnr", "lpips"))
    assert list(table.index) == ["jpeg_q10", "webp_q10", "mean"]
    got = target_check(table)
    assert got["psnr_gain_db"] == pytest.approx(0.6)
    assert got["lpips_better_tasks"] == 1 and got["tasks"] == 2
    assert got["stage1_lpips_better_tasks"] == 1
    assert got["lpips_minus_cnn"] == pytest.approx(0.21 - 0.235)


def test_unseen_tasks_get_their_own_table():
    table = yardstick_table(_results(), "unseen_type", metrics=("psnr", "lpips"))
    assert list(table.index) == ["avc_qp42", "mean"]
    assert target_check(table)["psnr_gain_db"] == pytest.approx(-6.0)
    with pytest.raises(ValueError, match="no task results of kind 'unseen_degree'"):
        yardstick_table(_results(), "unseen_degree")
