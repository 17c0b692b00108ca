"""Digests, model fingerprints and write-then-verify outputs: how long jobs know what is done (docs/design.md §7).

Nothing here implements a paper equation; it is the one rule every resumable stage of the kit follows (the
benchmark build, benchmark restoration, stage-II latents, the ablation sweep, the notebook runner):

- a **digest** names settings: the SHA-256 of their canonical JSON (:func:`json_digest`);
- a **model fingerprint** names a model folder's content: the SHA-256 over its files, each file by its bytes,
  JSON files by their content without the keys diffusers adds when it saves a loaded model again
  (:func:`model_fingerprint`; ``parts`` restricts it to sub-folders, e.g. the stage-I parts);
- an **output** is written whole and then verified: the file atomically, then its JSON record, which holds
  the file's SHA-256 and the fingerprint of what made it (:func:`write_output`). On a rerun an output is done
  only when its record exists, the fingerprint matches and the file still has the recorded checksum
  (:func:`output_done`); anything else is made again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moediffir.utils.io import PathLike, atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file


def canonical_json(obj: Any) -> str:
    """``obj`` as JSON with sorted keys and no spaces (values JSON cannot hold are written with ``str``)."""
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def json_digest(obj: Any, length: int = 64) -> str:
    """The first ``length`` hex digits of the SHA-256 of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def file_digest(path: PathLike) -> str:
    """SHA-256 of a file: its bytes, or for a ``.json`` file its content without keys starting with ``_``
    (diffusers adds ``_name_or_path``, ``_diffusers_version`` ... when a loaded model is saved again)."""
    path = Path(path)
    if path.suffix == ".json":
        obj = json.loads(path.read_text())
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if not k.startswith("_")}
        return json_digest(obj)
    return sha256_file(path)


def tree_digest(
    folder: PathLike, parts: Sequence[str] | None = None, suffixes: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> str:
    """SHA-256 over the relative path and :func:`file_digest` of every file under ``folder`` (hidden files
    skipped), or only under ``parts`` (sub-folders or files of ``folder``), or only files ending in ``suffixes``;
    ``exclude``: relative paths left out.

    Raises FileNotFoundError naming the folder when there is no such file.
    """
    folder = Path(folder)
    roots = [folder] if parts is None else [folder / p for p in parts]
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files.extend(p for p in root.rglob("*") if p.is_file())
    files = sorted(p for p in files if not any(s.startswith(".") for s in p.relative_to(folder).parts)
                   and (suffixes is None or p.suffix in suffixes) and p.relative_to(folder).as_posix() not in exclude)
    if not files:
        what = "files" if parts is None else ", ".join(parts)
        raise FileNotFoundError(f"{folder}: nothing to fingerprint (no {what})")
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(folder).as_posix()}\n{file_digest(p)}\n".encode())
    return h.hexdigest()


def model_fingerprint(folder: PathLike, parts: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> str:
    """The identity of a model folder: :func:`tree_digest` of all of it, or of the named ``parts`` (e.g. the
    stage-I parts, so that adding a compensator keeps it), without ``exclude`` (e.g. the model card, which
    describes the model and is not part of it). Every weight file is read in full."""
    return tree_digest(folder, parts, exclude=exclude)


def read_record(path: PathLike) -> dict[str, Any] | None:
    """A JSON record, or None when it is missing or unreadable (a half-written one cannot exist: writes are
    atomic, but a damaged disk or a hand edit can leave one)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def write_output(path: PathLike, data: bytes, record_path: PathLike, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``data`` to ``path``, then ``record`` plus the file's ``sha256`` and ``bytes`` to ``record_path``
    (both atomically, the file first); return the record as written."""
    record = {**record, "sha256": sha256_bytes(data), "bytes": len(data)}
    atomic_write_bytes(path, data)
    atomic_write_json(record_path, record)
    return record


def output_done(path: PathLike, record: dict[str, Any] | None, fingerprint: str, full: bool = True) -> bool:
    """Whether the output at ``path`` was made by ``fingerprint`` and is intact: its record carries the
    fingerprint and the file has the recorded SHA-256 (``full=False``: only the recorded size, a quick look)."""
    if not record or record.get("fingerprint") != fingerprint:
        return False
    path = Path(path)
    try:
        if not path.is_file():
            return False
        if not full and "bytes" in record:
            return path.stat().st_size == record["bytes"]
        return sha256_file(path) == record.get("sha256")
    except OSError:
        return False
