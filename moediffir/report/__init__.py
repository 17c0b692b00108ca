"""Tables and figures of the kit (docs/design.md §7): numbers as CSV + Markdown, figures as PNG + PDF, all atomic.

Shared helpers live here; each paper artefact has its own module (``moediffir.report.benchmark`` for the
CIR benchmark of §3.5). matplotlib is imported inside the functions (no import-time work).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moediffir.utils.io import atomic_write_bytes, atomic_write_csv, atomic_write_text

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(df: pd.DataFrame, digits: dict[str, int] | None = None, default_digits: int = 3) -> str:
    """A GitHub Markdown table of ``df`` (no index); floats rounded per column."""
    digits = digits or {}
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = [_fmt(v, digits.get(c, default_digits)).replace("|", "\\|") for c, v in zip(cols, row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    path_stem: str | Path,
    title: str = "",
    notes: Sequence[str] = (),
    digits: dict[str, int] | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` (full precision) and ``<stem>.md`` (rounded, with title and notes), atomically."""
    stem = Path(path_stem)
    csv_path = atomic_write_csv(stem.with_suffix(".csv"), df)
    md = (f"## {title}\n\n" if title else "") + markdown_table(df, digits)
    if notes:
        md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    md_path = atomic_write_text(stem.with_suffix(".md"), md)
    return csv_path, md_path


def save_figure(fig: Figure, path_stem: str | Path, dpi: int = 150) -> tuple[Path, Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` atomically (PDF without a creation date)."""
    stem = Path(path_stem)
    out = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        kwargs: dict[str, Any] = {"format": fmt, "dpi": dpi, "bbox_inches": "tight"}
        if fmt == "pdf":
            kwargs["metadata"] = {"CreationDate": None}
        fig.savefig(buf, **kwargs)
        out.append(atomic_write_bytes(stem.with_suffix(f".{fmt}"), buf.getvalue()))
    return out[0], out[1]
