"""Shards: one share of a long job per process or machine, and the check that every share is there (paper §3.5,
§4.2: the benchmark build and the evaluation are the kit's two long jobs).

A job of many items (``<split>/<set>/<stem>`` images to code, ``<set>/<task>/<stem>`` images to restore) is cut
into ``N`` shards by a stable hash of each item's key: shard ``K`` of ``N`` (``--shard K/N``, 1-based) owns the
items whose SHA-256 is ``K - 1`` modulo ``N``. The share depends on the key alone, so adding images to a set
moves no existing item, and every process computes the same split without talking to the others (a SLURM job
array, or the ranks of ``accelerate launch``).

Each shard writes its result as its own *part*, a folder ``<parts>/<K>-of-<N>/`` swapped in atomically with a
``part.json`` that records what the shard was asked to do (a digest of its settings and of its item keys).
:func:`check_parts` is the merge's gate: it names every part that is missing, and every part that is stale
(its record differs from what the current settings and item list ask of that shard).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moediffir.errors import MoEDiffIRError

PART_FILE = "part.json"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_PART_DIR = re.compile(r"^(\d+)-of-(\d+)$")


class ShardError(MoEDiffIRError, ValueError):
    """A bad ``--shard K/N``, or parts of a sharded job that are missing or stale (each one named)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based, as written on the command line: ``--shard 2/8``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ShardError(f"--shard {self.index}/{self.count}: expected K/N with 1 <= K <= N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` -> ``Shard(K, N)``; anything else raises :class:`ShardError` naming the text."""
        m = _SHARD.match(str(text))
        if not m:
            raise ShardError(f"--shard {text!r}: expected K/N, e.g. 1/4 (shard 1 of 4)")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def from_rank(cls, rank: int, world_size: int) -> Shard:
        """The shard of process ``rank`` (0-based) of ``world_size`` processes."""
        return cls(rank + 1, world_size)

    @property
    def name(self) -> str:
        """``"K-of-N"``: the part folder's name."""
        return f"{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str) -> bool:
        return bucket(key, self.count) == self.index - 1


def bucket(key: str, count: int) -> int:
    """The 0-based shard of ``key`` among ``count``: SHA-256 of the key, modulo ``count`` (stable everywhere)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count


def digest(obj: Any) -> str:
    """SHA-256 of ``obj`` as canonical JSON (sorted keys): what a part records about its job."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def keys_digest(keys: Iterable[str]) -> str:
    return digest(sorted(keys))


def part_dir(parts_root: str | os.PathLike, shard: Shard) -> Path:
    return Path(parts_root) / shard.name


def read_part(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PART_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def part_counts(parts_root: str | os.PathLike) -> set[int]:
    """The shard counts ``N`` of the part folders under ``parts_root``."""
    root = Path(parts_root)
    if not root.is_dir():
        return set()
    return {int(m.group(2)) for p in root.iterdir() if p.is_dir() and (m := _PART_DIR.match(p.name))}


def resolve_count(parts_root: str | os.PathLike, count: int | None, what: str) -> int:
    """``count`` or, when None, the one ``N`` of the parts on disk; an error when there is none or several."""
    if count is not None:
        if count < 1:
            raise ShardError(f"{what}: shard count {count}: expected N >= 1")
        return count
    counts = part_counts(parts_root)
    if not counts:
        raise ShardError(f"{parts_root}: no {what} parts to merge (run the shards first: --shard K/N)")
    if len(counts) > 1:
        raise ShardError(f"{parts_root}: {what} parts of {sorted(counts)} shards; say which with --shards N")
    return counts.pop()


def check_parts(
    parts_root: str | os.PathLike, count: int, expected: Mapping[int, Mapping[str, Any]], what: str, rerun: str
) -> list[Path]:
    """The part folders of shards 1..``count``, after checking each against what it should hold.

    ``expected``: shard index -> the fields its ``part.json`` must carry (settings and item digests). Raises one
    :class:`ShardError` naming every missing part and every stale one; ``rerun`` is the command to redo a
    shard, with ``{shard}`` where ``K/N`` goes.
    """
    missing, stale, folders = [], [], []
    for k in range(1, count + 1):
        shard = Shard(k, count)
        folder = part_dir(parts_root, shard)
        rec = read_part(folder)
        if rec is None:
            missing.append(str(shard))
            continue
        diff = [key for key, value in expected[k].items() if rec.get(key) != value]
        if diff:
            stale.append(f"{shard} ({', '.join(diff)} changed)")
        folders.append(folder)
    problems = []
    if missing:
        problems.append(f"missing part(s) {', '.join(missing)}")
    if stale:
        problems.append(f"stale part(s) {', '.join(stale)}")
    if problems:
        raise ShardError(f"{parts_root}: cannot merge the {what}: {'; '.join(problems)}. Run "
                         f"`{rerun.format(shard='K/' + str(count))}` for each of them, then merge again")
    return folders
