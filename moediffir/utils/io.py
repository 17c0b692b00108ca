"""Atomic file writes, robust image reading and safe weight reading shared by every stage of the kit.

Nothing here implements a paper equation; it enforces the kit's rules: a write either lands whole or not at
all (temp file in the same folder, fsync, ``os.replace``) and gets the mode the umask gives, a bad input names
its file and the problem, and no weight or checkpoint file runs code when it is read (:func:`load_weights_only`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moediffir.errors import MoEDiffIRError

if TYPE_CHECKING:  # numpy and Pillow are imported where images are handled: `moediffir --help` needs neither
    import numpy as np
    from PIL import Image

PathLike = str | os.PathLike


class ImageReadError(MoEDiffIRError, ValueError):
    """An input image could not be read; the message names the file and the reason."""


class OutputNotWritableError(MoEDiffIRError, PermissionError):
    """An output folder cannot be created or written; the message names it and the reason."""


class NoSpaceError(MoEDiffIRError, OSError):
    """The disk (or the user's quota) filled up while the kit wrote a file; the message names the file. Files
    written before it are complete (every write is atomic), so the same command continues once there is space."""

    exit_code = 1


#: ``errno`` values of a full disk or quota.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def no_space_message(path: PathLike | None) -> str:
    """One line for a write that found the disk full."""
    where = f" writing {path}" if path else ""
    return f"no space left on device{where}; free some space and rerun the same command (finished files are kept)"


class UnsafeWeightsError(MoEDiffIRError, ValueError):
    """A weight or checkpoint file holds Python objects that only full unpickling could build (and unpickling
    can run any code the file carries): it is refused unread; the message names the file and the fix."""


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one.

    The file gets the mode a plain ``open(path, "w")`` would give (``0o666`` less the umask), not the
    owner-only mode of the temporary file it is written through. A full disk raises :class:`NoSpaceError`
    naming ``path`` (the old file, if any, is kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            raise NoSpaceError(no_space_message(path)) from exc
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def csv_text(df: Any) -> str:
    """A pandas DataFrame as CSV text without its index and with ``\\n`` line endings on every platform, so that
    rewriting the same numbers gives the same bytes."""
    return df.to_csv(index=False, lineterminator="\n")


def atomic_write_csv(path: PathLike, df: Any) -> Path:
    """Write ``df`` as :func:`csv_text` atomically."""
    return atomic_write_text(path, csv_text(df))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """Atomic JSON write with sorted keys and a trailing newline (byte-stable for equal content)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def encode_png(rgb: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` or ``(H, W)`` uint8 array (deterministic: no timestamps)."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def atomic_save_png(path: PathLike, rgb: np.ndarray) -> Path:
    """Save a uint8 image as PNG atomically."""
    return atomic_write_bytes(path, encode_png(rgb))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def to_rgb_uint8(img: Image.Image, path: PathLike = "<image>") -> np.ndarray:
    """Convert any PIL image to an ``(H, W, 3)`` uint8 RGB array.

    Grayscale becomes three equal channels; RGBA/LA drop alpha after compositing on white (so transparent
    regions do not turn black); 16-bit images are scaled to 8 bit with rounding; palette images are expanded.
    """
    import numpy as np
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(arr8[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        arr8 = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
        return np.repeat(arr8[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if mode in ("RGB;16", "RGB;16B") or (img.mode == "RGB" and np.asarray(img).dtype != np.uint8):
        arr = np.asarray(img).astype(np.float64)
        return np.clip(np.round(arr / 65535.0 * 255.0), 0, 255).astype(np.uint8)
    arr = np.asarray(img.convert("RGB"))
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(f"{path}: could not convert mode {mode!r} to RGB (got shape {arr.shape})")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_image_rgb(path: PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    16-bit PNG/TIFF, grayscale, palette and RGBA inputs are handled (see :func:`to_rgb_uint8`).

    Raises:
        ImageReadError: the file is missing, empty, truncated, not an image, or has a zero size;
            the message starts with the path.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                raise ImageReadError(f"{path}: image has zero size {img.size}")
            return to_rgb_uint8(img, path)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for a one-line error that names a file (torch's read
    errors span several lines)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def unsafe_weights_message(path: PathLike, exc: BaseException, fix: str = "") -> str:
    """One line for a file that ``torch.load(weights_only=True)`` refused: the file, the object it would have
    built, and ``fix`` (e.g. the command that converts it) when given."""
    found = _UNSUPPORTED_GLOBAL.search(str(exc))
    what = f" ({found.group(1)})" if found else ""
    return (f"{path}: holds Python objects beyond tensors and plain values{what}, which only full unpickling "
            "builds and which may run code; the kit never unpickles weight files"
            + (f"; {fix}" if fix else ""))


def load_weights_only(path: PathLike, *, allow: Sequence[Any] = (), fix: str = "", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, containers and plain values only.

    ``allow``: the few other types this file may hold, allowed for this call only (``torch.serialization.
    safe_globals``; nothing global changes). A file that needs anything else raises :class:`UnsafeWeightsError`
    (one line naming it and ``fix``), and no object of it is built; other read errors propagate unchanged.
    """
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "safe_globals" not in str(exc):  # a corrupt file, not a refused object: the caller names it
            raise
        raise UnsafeWeightsError(unsafe_weights_message(path, exc, fix)) from exc


def torch_hub_dir() -> Path:
    """torch's hub folder (``torch.hub.get_dir()``: ``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``), read
    without importing torch when it is not loaded yet (a loaded torch may have been given another one)."""
    import sys

    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.environ.get("TORCH_HOME") or os.path.join(cache, "torch")).expanduser() / "hub"


def check_writable_dir(folder: PathLike, what: str = "output folder") -> Path:
    """Make sure files can be created in ``folder`` (made if missing) before any work; return it.

    Tries what the work will do: create the folder and a file in it (then removes both if they were new).
    Raises :class:`OutputNotWritableError` naming the folder and the reason.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputNotWritableError(f"{what} {folder}: {existing} is a file, not a folder")
    created = not folder.exists()
    for attempt in range(3):  # another process running the same check may remove the new folder meanwhile
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write_check.", dir=folder)
            os.close(fd)
            os.unlink(probe)
            break
        except FileNotFoundError as exc:
            if attempt == 2:
                raise OutputNotWritableError(f"{what} {folder}: cannot write there ({exc.strerror or exc})") from exc
        except OSError as exc:
            raise OutputNotWritableError(f"{what} {folder}: cannot write there ({exc.strerror or exc})") from exc
    if created:  # leave no trace of the check: the work makes the folders it needs
        made = folder
        try:
            while made != existing and not any(made.iterdir()):
                made.rmdir()
                made = made.parent
        except OSError:  # another process (a second rank, say) is using or has removed it: leave it to them
            pass
    return folder


def apply_umask_modes(folder: PathLike) -> None:
    """Give every file under ``folder`` the mode a plain ``open(path, "w")`` gives (``0o666`` less the umask) and
    every folder a plain ``mkdir``'s (``0o777`` less the umask): writers such as safetensors' ``save_file`` (and
    so diffusers' ``save_pretrained``) create owner-only ``0o600`` files whatever the umask."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def existing_ancestor(folder: PathLike) -> Path:
    """``folder`` itself when it exists, else its nearest existing parent."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


@contextlib.contextmanager
def no_empty_folder_on_failure(folder: PathLike) -> Iterator[Path]:
    """Run a block that may create ``folder``; when the block fails, remove ``folder`` again if it was made by
    the block and holds no file (with the empty parents made with it), so a failed run leaves no empty folder."""
    folder = Path(folder)
    existing = existing_ancestor(folder)
    try:
        yield folder
    except BaseException:
        if existing != folder and folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)
            made = folder.parent
            while made != existing and made.is_dir() and not any(made.iterdir()):
                made.rmdir()
                made = made.parent
        raise


@contextlib.contextmanager
def atomic_directory(folder: PathLike) -> Iterator[Path]:
    """Build a folder beside its final place and swap it in whole when the block succeeds.

    Yields a temporary sibling folder to fill. On success its files get the umask's modes
    (:func:`apply_umask_modes`), the old ``folder`` (if any) is moved aside, the new one renamed in, and the old
    one removed; on any error the temporary folder is deleted and ``folder`` is untouched.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # the mode of a plain mkdir, not mkdtemp's owner-only one
        yield tmp
        apply_umask_modes(tmp)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
