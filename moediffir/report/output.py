"""How every table and figure of the kit is written (docs/design.md §7): the one ``write_table`` and the one
``save_figure``.

Tables are a CSV at full precision beside a Markdown rendering (and, for the paper's tables, a LaTeX one);
figures are PNG + PDF drawn at a fixed dpi and saved with no timestamp or software tag, so the same numbers give
byte-identical files. Every write is atomic. matplotlib is imported by the callers that draw.
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

#: dots per inch of every PNG the kit writes
DPI = 150
#: metadata that would make two saves of one figure differ (time) or tie it to a library version (software)
_NO_METADATA = {"png": {"Software": None},
                "pdf": {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}}


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
    *,
    markdown: str | None = None,
    latex: str | None = None,
) -> list[Path]:
    """Write ``<stem>.csv`` (``df`` at full precision) and ``<stem>.md``, atomically; return the paths.

    The Markdown is ``markdown`` when given (a paper table's own rendering), else ``df`` rounded per ``digits``
    under ``title`` with ``notes`` as a list; ``latex`` given, ``<stem>.tex`` is written too."""
    stem = Path(path_stem)
    if markdown is None:
        markdown = (f"## {title}\n\n" if title else "") + markdown_table(df, digits)
        if notes:
            markdown += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    at = lambda suffix: stem.parent / f"{stem.name}{suffix}"  # a name may hold dots
    paths = [atomic_write_csv(at(".csv"), df), atomic_write_text(at(".md"), markdown)]
    if latex is not None:
        paths.append(atomic_write_text(at(".tex"), latex))
    return paths


def save_figure(fig: Figure, out_dir: str | Path, name: str, *, tight: bool = False) -> list[Path]:
    """``<out_dir>/<name>.png`` and ``.pdf``, written atomically at :data:`DPI` with no timestamp or software
    metadata (``tight``: crop the canvas to what is drawn)."""
    paths = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        kwargs: dict[str, Any] = {"format": fmt, "dpi": DPI, "metadata": _NO_METADATA[fmt]}
        if tight:
            kwargs["bbox_inches"] = "tight"
        fig.savefig(buf, **kwargs)
        paths.append(atomic_write_bytes(Path(out_dir) / f"{name}.{fmt}", buf.getvalue()))
    return paths
