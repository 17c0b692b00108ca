"""Training logs: loss, learning rate and MoE routing statistics (paper §3.2 Eq. 3, §3.4; docs/design.md §5).

:class:`TrainingLog` keeps two files per stage:

- ``log.jsonl``: one JSON record per log event, appended, flushed and fsynced. A kill can at worst leave a
  torn last line, which :func:`read_jsonl` skips; resuming from step ``s`` first drops records after ``s``
  (rewritten atomically), so the log equals that of an uninterrupted run.
- ``log.csv``: the scalar columns of every record, rewritten atomically after each event (never half written).

:class:`RoutingStats` accumulates, over a log window, the routing records of
:attr:`~moediffir.models.denoiser.DenoiserOutput.routing` (gates ``(B, L, N)`` per scale): for every
task label the mean gate mass of each expert ("usage", averaged over tokens and scales) and how often each
expert is among the chosen top K ("selected"), plus the mean per-token gate entropy ``-sum_n g_n log g_n``
(0 when one expert takes everything, ``log K`` for K equal gates).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from moediffir.utils.io import atomic_write_csv, atomic_write_text


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn (unparsable) *last* line from a kill is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON (the file was edited or corrupted)") from None
    return out


def scalar_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """The int/float/str/bool fields of a record (what goes into the CSV)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool)) or v is None}


class TrainingLog:
    """Append-only JSONL + atomically rewritten CSV (see the module docstring).

    Args:
        folder: where ``<name>.jsonl`` and ``<name>.csv`` live.
        resume_step: ``None`` starts a fresh log (old files removed); a step keeps the records up to it.
        enabled: ``False`` on non-main processes (nothing is written).
    """

    def __init__(self, folder: str | Path, name: str = "log", resume_step: int | None = None, enabled: bool = True):
        self.folder = Path(folder)
        self.jsonl = self.folder / f"{name}.jsonl"
        self.csv = self.folder / f"{name}.csv"
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        if not enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.jsonl.unlink(missing_ok=True)
            self.csv.unlink(missing_ok=True)
        else:
            self.records = [r for r in read_jsonl(self.jsonl) if int(r.get("step", 0)) <= resume_step]
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            atomic_write_text(self.jsonl, text)
            self._write_csv()

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one record (must hold ``step``)."""
        if "step" not in record:
            raise ValueError("TrainingLog.append: a record needs a 'step'")
        if not self.enabled:
            return
        rec = dict(record)
        self.records.append(rec)
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._write_csv()

    def _write_csv(self) -> None:
        df = pd.DataFrame([scalar_columns(r) for r in self.records])
        atomic_write_csv(self.csv, df)


class RoutingStats:
    """Per-task expert usage and gate entropy over a window of training steps (see the module docstring)."""

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = int(num_tasks)
        self.reset()

    def reset(self) -> None:
        self.usage: torch.Tensor | None = None  # (T, N) summed per-sample usage
        self.selected: torch.Tensor | None = None  # (T, N)
        self.counts = torch.zeros(self.num_tasks, dtype=torch.float64)  # (T,)
        self.entropy_sum = torch.zeros((), dtype=torch.float64)
        self.entropy_n = torch.zeros((), dtype=torch.float64)

    @torch.no_grad()
    def update(self, routing: Sequence[Mapping[str, Any]], labels: torch.Tensor) -> None:
        """Add one batch: ``routing`` = per-scale dicts with ``gates (B, L, N)``; ``labels`` ``(B,)`` (-1 skipped)."""
        scales = [r["gates"].detach().float().cpu() for r in routing if torch.is_tensor(r.get("gates"))]
        if not scales:
            return
        usage = torch.stack([g.mean(dim=1) for g in scales]).mean(0).double()  # (B, N)
        selected = torch.stack([(g > 0).float().mean(dim=1) for g in scales]).mean(0).double()  # (B, N)
        for g in scales:
            p = g / g.sum(-1, keepdim=True).clamp_min(1e-12)  # (B, L, N)
            ent = -(p * p.clamp_min(1e-12).log()).sum(-1)  # (B, L)
            self.entropy_sum += ent.mean(dim=1).sum().double()
            self.entropy_n += ent.shape[0]
        n = usage.shape[1]
        if self.usage is None:
            self.usage = torch.zeros(self.num_tasks, n, dtype=torch.float64)
            self.selected = torch.zeros(self.num_tasks, n, dtype=torch.float64)
        labels = torch.as_tensor(labels).reshape(-1).cpu().long()
        keep = (labels >= 0) & (labels < self.num_tasks)
        self.usage.index_add_(0, labels[keep], usage[keep])
        self.selected.index_add_(0, labels[keep], selected[keep])
        self.counts.index_add_(0, labels[keep], torch.ones(int(keep.sum()), dtype=torch.float64))

    def reduce(self, reduce_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the accumulators over processes with ``reduce_fn`` (e.g. ``lambda t: accelerator.reduce(t, 'sum')``).

        Every process must call it (also those that saw no gates: they contribute zeros of the same shape).
        """
        n = torch.tensor([0 if self.usage is None else self.usage.shape[1]], dtype=torch.float64)
        n_max = int(reduce_fn(n.clone()).item())  # the sum is enough to know whether anyone has gates
        if n_max == 0:
            return
        if self.usage is None:
            raise RuntimeError("RoutingStats.reduce: some processes have routing records and this one has none")
        packed = torch.cat([self.usage.flatten(), self.selected.flatten(), self.counts,
                            self.entropy_sum.reshape(1), self.entropy_n.reshape(1)])
        packed = reduce_fn(packed)
        t, nn_ = self.num_tasks, self.usage.shape[1]
        self.usage = packed[: t * nn_].reshape(t, nn_)
        self.selected = packed[t * nn_ : 2 * t * nn_].reshape(t, nn_)
        self.counts = packed[2 * t * nn_ : 2 * t * nn_ + t]
        self.entropy_sum, self.entropy_n = packed[-2], packed[-1]

    def summary(self) -> dict[str, Any]:
        """``gate_entropy`` and per-task ``usage`` / ``selected`` means (``{label: [N floats]}``) plus ``counts``."""
        if self.usage is None or float(self.entropy_n) == 0:
            return {}
        seen = [int(i) for i in torch.nonzero(self.counts > 0).flatten()]
        return {
            "gate_entropy": float(self.entropy_sum / self.entropy_n),
            "usage": {str(i): (self.usage[i] / self.counts[i]).tolist() for i in seen},
            "selected": {str(i): (self.selected[i] / self.counts[i]).tolist() for i in seen},
            "counts": {str(i): int(self.counts[i]) for i in seen},
        }


def usage_matrix(records: Sequence[Mapping[str, Any]], key: str = "usage") -> pd.DataFrame:
    """Count-weighted mean of ``records[*][key]`` over a run: a (task label x expert) DataFrame."""
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, float] = {}
    for r in records:
        per_task, cnt = r.get(key), r.get("counts", {})
        if not per_task:
            continue
        for label, values in per_task.items():
            c = float(cnt.get(label, 1))
            v = torch.tensor(values, dtype=torch.float64) * c
            sums[int(label)] = sums.get(int(label), torch.zeros_like(v)) + v
            counts[int(label)] = counts.get(int(label), 0.0) + c
    if not sums:
        return pd.DataFrame()
    rows = {label: (sums[label] / counts[label]).tolist() for label in sorted(sums)}
    n = len(next(iter(rows.values())))
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[f"expert_{i}" for i in range(n)])
    df.index.name = "label"
    return df
