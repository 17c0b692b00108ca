"""Other methods' restored images scored under our protocol (paper §4.2, Table 1; ``--external NAME=DIR``).

The paper compares against PromptIR, StableSR, DiffBIR, ... that users run themselves. Their outputs enter the
same tables when a folder of restored images is matched to the benchmark items:

1. by relative path: a file whose path (below the folder, any image suffix) ends with ``<set>/<task>/<stem>``
   -- e.g. ``LIVE1/jpeg_q10/bike.png`` or ``test/LIVE1/jpeg_q10/bike.png`` (the benchmark's own layout);
2. by ``<task>/<stem>`` when one test set is evaluated;
3. by file name ``<stem>`` when exactly one evaluated item has that stem (a folder holding one set and task).

Files that match no item are reported as *extra*, items without a file as *missing* -- both by name. Two files
for one item (``x.png`` and ``x.jpg``) are an error.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from moediffir.data.sources import IMAGE_SUFFIXES
from moediffir.evaluation.protocol import EvaluationError


@dataclass
class ExternalMatch:
    """The files of one external method matched to the evaluated items."""

    name: str
    folder: Path
    paths: dict[str, Path] = field(default_factory=dict)  # "<set>/<task>/<stem>" -> file
    missing: list[str] = field(default_factory=list)  # item keys without a file
    extra: list[str] = field(default_factory=list)  # files (relative to the folder) that match no item

    def summary(self) -> str:
        text = f"external {self.name!r} ({self.folder}): {len(self.paths)} matched"
        if self.missing:
            text += f", {len(self.missing)} missing: " + ", ".join(self.missing[:10]) + (
                " ..." if len(self.missing) > 10 else "")
        if self.extra:
            text += f", {len(self.extra)} extra: " + ", ".join(self.extra[:10]) + (
                " ..." if len(self.extra) > 10 else "")
        return text

    def to_json(self) -> dict:
        return {"name": self.name, "matched": len(self.paths), "missing": self.missing, "extra": self.extra}


def parse_external(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` -> ``(NAME, DIR)``; the folder must exist."""
    if "=" not in text:
        raise EvaluationError(f"--external {text!r}: expected NAME=DIR, e.g. --external PromptIR=out/promptir")
    name, folder = text.split("=", 1)
    name, path = name.strip(), Path(folder.strip())
    if not name:
        raise EvaluationError(f"--external {text!r}: the method name before '=' is empty")
    if not path.is_dir():
        raise EvaluationError(f"--external {name}: folder {path} does not exist")
    return name, path


def match_external(name: str, folder: str | Path, items: pd.DataFrame) -> ExternalMatch:
    """Match the image files under ``folder`` to ``items`` (see the module docstring for the rules)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"external {name!r}: folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts[:-1]))
    keys = [f"{r.set}/{r.task}/{r.stem}" for r in items.itertuples(index=False)]
    one_set = items["set"].nunique() == 1
    by_full = {k: k for k in keys}
    by_task = {f"{r.task}/{r.stem}": f"{r.set}/{r.task}/{r.stem}" for r in items.itertuples(index=False)} if one_set else {}
    stems: dict[str, list[str]] = defaultdict(list)
    for r in items.itertuples(index=False):
        stems[str(r.stem)].append(f"{r.set}/{r.task}/{r.stem}")
    by_stem = {s: ks[0] for s, ks in stems.items() if len(ks) == 1}

    claimed: dict[str, list[Path]] = defaultdict(list)
    extra: list[str] = []
    for f in files:
        parts = f.relative_to(folder).with_suffix("").parts
        key = None
        if len(parts) >= 3 and "/".join(parts[-3:]) in by_full:
            key = by_full["/".join(parts[-3:])]
        elif len(parts) >= 2 and "/".join(parts[-2:]) in by_task:
            key = by_task["/".join(parts[-2:])]
        elif parts[-1] in by_stem:
            key = by_stem[parts[-1]]
        if key is None:
            extra.append(f.relative_to(folder).as_posix())
        else:
            claimed[key].append(f)
    dup = {k: v for k, v in claimed.items() if len(v) > 1}
    if dup:
        k, v = next(iter(dup.items()))
        raise EvaluationError(
            f"external {name!r}: {len(dup)} item(s) match several files, e.g. {k}: "
            + ", ".join(p.relative_to(folder).as_posix() for p in v) + "; keep one file per image"
        )
    paths = {k: v[0] for k, v in claimed.items()}
    missing = [k for k in keys if k not in paths]
    return ExternalMatch(name, folder, paths, missing, extra)
