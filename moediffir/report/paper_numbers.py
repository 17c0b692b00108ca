"""The paper's own numbers (Tables 1-5), transcribed once into ``results/paper/*.csv`` (docs/design.md §7).

The kit's tables show the paper's value beside ours; this module reads and checks those transcriptions. How they
were made (source text, rules, known OCR problems) is in ``results/paper/README.md``.

Schema. Every file is a UTF-8 CSV with a header row and one row per key; an empty cell means the value was not
legible in the source (never a guess). Key columns identify a row, metric columns are floats, text columns are
free text (``note`` says why a row is incomplete or doubtful).

============  ==========================================  ==========================================  ========
file          keys                                        metrics                                     text
============  ==========================================  ==========================================  ========
table1.csv    codec, method, dataset                      psnr, ssim, lpips, fid (mean of 3 levels)   note
table2.csv    design, split, dataset                      psnr, ssim, lpips, fid                      label,
                                                                                                      tasks
table3.csv    variant, dataset (+ use_v2t, use_dp flags)  psnr, ssim, lpips, fid                      —
table4.csv    setting, dataset                            psnr, ssim (mean of the 21 seen tasks)      label
table5.csv    codec, level, dataset, method               psnr, ssim, lpips, fid, clipiqa, maniqa     note
============  ==========================================  ==========================================  ========

Names follow the kit: codecs as in ``DataConfig.codecs`` (``jpeg``, ``c_ssim``, ...), test sets as in
``EvalConfig.test_sets`` (the paper's "DIV2K" is ``DIV2K_valid``), prompt designs as in ``ModelConfig.prompt_design``
(``none``, ``single``, ``multi``, ``moe``), and the paper's "Ours" is ``MoE-DiffIR``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from moediffir.errors import MoEDiffIRError

OURS = "MoE-DiffIR"
METHODS = ("AirNet", "HAT", "PromptIR", "RealESRGAN", "DiffBIR", "PASD", "StableSR", "SUPIR", OURS)
DATASETS = ("LIVE1", "Classic5", "BSDS500", "DIV2K_valid", "ICB")
CODECS = ("jpeg", "webp", "hevc", "vvc", "c_psnr", "c_ssim", "hific", "avc")
DESIGNS = ("none", "single", "multi", "moe")
VAE_SETTINGS = ("pretrained_vae", "vae_from_scratch", "compensator")

# plausible ranges of each metric (a transcription outside them is an error in the CSV)
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "psnr": (20.0, 40.0),
    "ssim": (0.0, 1.0),
    "lpips": (0.0, 1.0),
    "fid": (0.0, math.inf),
    "clipiqa": (0.0, 1.0),
    "maniqa": (0.0, 1.0),
}


class PaperNumbersError(MoEDiffIRError, ValueError):
    """A transcription file is missing or breaks its schema; the message names the file, row and column."""


@dataclass(frozen=True)
class TableSchema:
    """Columns of one transcription file (in file order) and the values its key columns may take."""

    name: str
    source: str  # which table of the paper
    columns: tuple[str, ...]
    keys: tuple[str, ...]  # unique per row
    metrics: tuple[str, ...]  # floats, empty = not legible
    flags: tuple[str, ...] = ()  # booleans written "true" / "false"
    allowed: dict[str, tuple] = field(default_factory=dict)

    @property
    def text(self) -> tuple[str, ...]:
        """Free-text columns (labels, notes)."""
        return tuple(c for c in self.columns if c not in self.keys + self.metrics + self.flags + ("level",))


_M4 = ("psnr", "ssim", "lpips", "fid")
SCHEMAS: dict[str, TableSchema] = {
    "table1": TableSchema(
        "table1", "Table 1: seven codecs x five test sets, mean of three levels",
        columns=("codec", "method", "dataset", *_M4, "note"),
        keys=("codec", "method", "dataset"), metrics=_M4,
        allowed={"codec": CODECS, "method": METHODS, "dataset": DATASETS},
    ),
    "table2": TableSchema(
        "table2", "Table 2: prompt designs on seen and unseen tasks",
        columns=("design", "label", "split", "tasks", "dataset", *_M4),
        keys=("design", "split", "dataset"), metrics=_M4,
        allowed={"design": DESIGNS, "split": ("seen", "unseen"), "dataset": DATASETS},
    ),
    "table3": TableSchema(
        "table3", "Table 3: Visual2Text adapter (V2T) and degradation prior (DP)",
        columns=("variant", "use_v2t", "use_dp", "dataset", *_M4),
        keys=("variant", "dataset"), metrics=_M4, flags=("use_v2t", "use_dp"),
        allowed={"dataset": DATASETS},
    ),
    "table4": TableSchema(
        "table4", "Table 4 (appendix B.1): VAE settings on LIVE1",
        columns=("setting", "label", "dataset", "psnr", "ssim"),
        keys=("setting", "dataset"), metrics=("psnr", "ssim"),
        allowed={"setting": VAE_SETTINGS, "dataset": DATASETS},
    ),
    "table5": TableSchema(
        "table5", "Table 5 (appendix B.2): JPEG per quality factor",
        columns=("codec", "level", "dataset", "method", *_M4, "clipiqa", "maniqa", "note"),
        keys=("codec", "level", "dataset", "method"), metrics=(*_M4, "clipiqa", "maniqa"),
        allowed={"codec": CODECS, "method": METHODS, "dataset": DATASETS},
    ),
}


def _schema(name: str) -> TableSchema:
    if name not in SCHEMAS:
        raise PaperNumbersError(f"unknown paper table {name!r}; choose one of {sorted(SCHEMAS)}")
    return SCHEMAS[name]


def paper_dir() -> Path:
    """``results/paper`` of the source checkout this package lives in."""
    return Path(__file__).resolve().parents[2] / "results" / "paper"


def _fail(path: Path, msg: str) -> PaperNumbersError:
    return PaperNumbersError(f"{path}: {msg}")


def validate_table(df: pd.DataFrame, schema: TableSchema, path: Path | str = "<table>") -> None:
    """Raise :class:`PaperNumbersError` unless ``df`` has the schema's columns, unique keys, allowed key values,
    and metric values that are empty or inside :data:`VALUE_RANGES`."""
    path = Path(path)
    expected = list(schema.columns)
    if list(df.columns) != expected:
        raise _fail(path, f"columns {list(df.columns)} != expected {expected}")
    dup = df[df.duplicated(list(schema.keys), keep=False)]
    if len(dup):
        raise _fail(path, f"duplicate keys {schema.keys}: rows {[int(i) + 2 for i in dup.index]} (CSV line numbers)")
    for col, allowed in schema.allowed.items():
        bad = df.loc[~df[col].isin(allowed), col]
        if len(bad):
            raise _fail(path, f"line {int(bad.index[0]) + 2}: {col}={bad.iloc[0]!r} is not one of {allowed}")
    for col in schema.flags:
        bad = df.loc[~df[col].isin((True, False)), col]
        if len(bad):
            raise _fail(path, f"line {int(bad.index[0]) + 2}: {col}={bad.iloc[0]!r} must be true or false")
    for col in schema.metrics:
        lo, hi = VALUE_RANGES[col]
        values = df[col]
        bad = values[values.notna() & ~values.between(lo, hi, inclusive="neither" if col == "fid" else "both")]
        if len(bad):
            raise _fail(path, f"line {int(bad.index[0]) + 2}: {col}={bad.iloc[0]} outside the range [{lo}, {hi}]")


def load_paper_table(name: str, root: str | Path | None = None, *, validate: bool = True) -> pd.DataFrame:
    """Read ``<root>/<name>.csv`` (default root :func:`paper_dir`) as a DataFrame with float metric columns.

    Empty metric cells become NaN; text columns stay strings ("" when empty); ``level`` is an int and the
    ``use_*`` flags are bools.
    """
    schema = _schema(name)
    path = Path(root if root is not None else paper_dir()) / f"{name}.csv"
    if not path.is_file():
        raise _fail(path, "file not found; the transcriptions live in results/paper/ of the source checkout")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = raw.copy()
    try:
        for col in schema.metrics:
            if col in df:
                df[col] = pd.to_numeric(df[col].replace("", math.nan), errors="raise").astype(float)
        if "level" in df:
            df["level"] = df["level"].astype(int)
    except ValueError as exc:
        raise _fail(path, f"a numeric column holds text ({exc})") from exc
    for col in schema.flags:
        if col in df:
            df[col] = df[col].map({"true": True, "false": False}).where(df[col].isin(["true", "false"]), df[col])
    if validate:
        validate_table(df, schema, path)
    return df


def paper_long(name: str, root: str | Path | None = None) -> pd.DataFrame:
    """One row per (keys, metric) with a ``value`` column; cells the OCR lost are dropped."""
    schema = _schema(name)
    df = load_paper_table(name, root)
    long = df.melt(id_vars=list(schema.keys), value_vars=list(schema.metrics), var_name="metric", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def paper_value(name: str, metric: str, root: str | Path | None = None, **keys: object) -> float | None:
    """The paper's value of ``metric`` for the row with ``keys`` (all key columns), or None when not legible.

    Example: ``paper_value("table2", "psnr", design="moe", split="seen", dataset="LIVE1")`` -> 29.02.
    """
    schema = _schema(name)
    if set(keys) != set(schema.keys):
        raise PaperNumbersError(f"{name}: give exactly the keys {schema.keys}, got {sorted(keys)}")
    if metric not in schema.metrics:
        raise PaperNumbersError(f"{name}: metric {metric!r} not in {schema.metrics}")
    df = load_paper_table(name, root)
    mask = pd.Series(True, index=df.index)
    for k, v in keys.items():
        mask &= df[k] == v
    hit = df.loc[mask, metric]
    if len(hit) == 0:
        return None
    value = float(hit.iloc[0])
    return None if math.isnan(value) else value
