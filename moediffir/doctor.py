"""Preflight: every dataset, benchmark and weight file a command reads, checked before any work starts.

The paper's setting (§3.5 benchmark from DF2K and five test sets, §4.1 SD 2.1-base with the DA-CLIP and CLIP
RN50 encoders of §3.2-3.3, §4.2 metrics, and the learned codecs of the benchmark) needs files that the kit
never downloads. ``moediffir doctor --profile paper`` lists every one that is missing, with where it goes
and how to get it, using file-system checks only (no network, no network construction); each command runs
the part of the same check it needs (:func:`require`) before touching any output, so one run names
everything at once instead of stopping at the first missing file.

What a command needs is named by the keys of :data:`CHECKS`:

- ``datasets``: the source image folders ``data.train_sets`` and ``data.test_sets`` (paper §3.5);
- ``benchmark``: the built CIR benchmark (``manifest.csv``); when it is missing, the datasets it is built from
  are checked too;
- ``model_weights``: SD 2.1-base, DA-CLIP ViT-B/32 and CLIP RN50 (none for random or tiny networks);
- ``metric_weights``: the LPIPS, FID, CLIP-IQA+ and MANIQA files of ``eval.metrics`` (none for random ones);
- ``codec_weights``: the compressai zoo checkpoints and the converted HiFiC files (``hific_<level>.safetensors``,
  written by ``moediffir convert-hific``) of ``data.codecs`` (none for random ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from moediffir.config import Config
from moediffir.errors import MissingInputsError
from moediffir.weights.weight_checks import MissingWeight as Missing  # what, where it goes, how to get it


@dataclass
class PreflightReport:
    """What :func:`preflight` checked and what it found missing."""

    profile: str
    checked: list[str] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def text(self) -> str:
        head = f"profile {self.profile!r}: checked {', '.join(self.checked) or 'nothing'}"
        if self.ok:
            return head + "; nothing is missing"
        body = "\n".join(str(m) for m in self.missing)
        return f"{head}; {len(self.missing)} missing (nothing was downloaded):\n{body}"


# ------------------------------------------------------------------------------------------- checks
def _has_image(folder: Path) -> bool:
    """Whether ``folder`` holds at least one image file (stops at the first one found)."""
    from moediffir.data.sources import IMAGE_SUFFIXES

    for path in folder.rglob("*"):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            return True
    return False


def check_datasets(cfg: Config) -> list[Missing]:
    """Every configured dataset folder that is absent or holds no image."""
    out = []
    for name in dict.fromkeys((*cfg.data.train_sets, *cfg.data.test_sets)):
        folder = cfg.datasets_dir / name
        if not (folder.is_dir() and _has_image(folder)):
            out.append(Missing(f"dataset {name}", str(folder),
                               f"see data/README.md, then `moediffir data import {name} DIR`"))
    return out


def check_benchmark(cfg: Config) -> list[Missing]:
    """The benchmark's manifest, and (when it is missing) the datasets it is built from."""
    from moediffir.data.manifest import MANIFEST_NAME

    manifest = cfg.benchmark_dir / MANIFEST_NAME
    if manifest.is_file():
        return []
    extra = f" --set data.out_dir={cfg.data.out_dir}" if cfg.data.out_dir else ""
    return [Missing(f"CIR benchmark of profile {cfg.profile}", str(manifest),
                    f"`moediffir data build --profile {cfg.profile}{extra}` (or notebook 01)"), *check_datasets(cfg)]


def check_model_weights(cfg: Config) -> list[Missing]:
    """SD 2.1-base, DA-CLIP / CLIP and RN50 files of the paper's networks (nothing for random ones)."""
    if cfg.model.random_weights:
        return []
    from moediffir.weights.weight_checks import check_paper_weights

    return check_paper_weights(cfg)


def check_metric_weights(cfg: Config) -> list[Missing]:
    """The pretrained metric files that ``eval.metrics`` reads (nothing for ``eval.metric_weights=random``)."""
    if cfg.eval.metric_weights != "pretrained":
        return []
    from moediffir.metrics.conventions import MetricConventions
    from moediffir.metrics.lpips_weights import lpips_weights_dir
    from moediffir.metrics.weight_files import weight_files, weight_roles, weight_source

    conv = MetricConventions.from_config(cfg)
    files = weight_files(cfg.eval.metric_weights_dir or None)
    roles = dict.fromkeys(r for m in cfg.eval.metrics for r in weight_roles(m, conv, lpips_weights_dir(cfg)))
    return [Missing(f"{role} (metric weights)", str(files[role]), weight_source(role))
            for role in roles if not files[role].is_file()]


def check_codec_weights(cfg: Config) -> list[Missing]:
    """Checkpoints of the learned codecs in ``data.codecs`` (nothing for ``data.learned_weights=random``)."""
    if cfg.data.learned_weights != "pretrained":
        return []
    out = []
    if {"c_psnr", "c_ssim"} & set(cfg.data.codecs):
        from moediffir.codecs.learned import METRICS, checkpoint_dir, checkpoint_file_name

        for name in ("c_psnr", "c_ssim"):
            if name not in cfg.data.codecs:
                continue
            for quality in (1, 2, 3):
                path = checkpoint_dir() / checkpoint_file_name(METRICS[name], quality)
                if not path.is_file():
                    out.append(Missing(f"{name} codec quality {quality} (compressai cheng2020_attn)", str(path),
                                       f"compressai.zoo.cheng2020_attn(quality={quality}, metric="
                                       f"'{METRICS[name]}', pretrained=True) once on a machine with network"))
    if "hific" in cfg.data.codecs:
        out += _hific_weights(cfg)
    return out


def _hific_weights(cfg: Config) -> list[Missing]:
    """The converted HiFiC files the codec reads (``hific_<level>.safetensors``); a public ``.pt`` lying there
    unconverted is named with the command that converts it (the codec never unpickles it)."""
    from moediffir.codecs import hific_weights_dir
    from moediffir.codecs.base import HIFIC_CHECKPOINT_FILES, HIFIC_CONVERTED_FILES

    folder = hific_weights_dir(cfg.data)
    out = []
    for level, converted in HIFIC_CONVERTED_FILES.items():
        public = folder / HIFIC_CHECKPOINT_FILES[level]
        if (folder / converted).is_file():
            continue
        if public.is_file():  # the codec never unpickles it: the one-time conversion is what is missing
            name = f"HiFiC {level} weights ({public.name} not converted yet: `moediffir convert-hific`)"
            how = f"{public} is there, unconverted: run `moediffir convert-hific {public}` once"
        else:
            name = f"HiFiC {level} weights (converted)"
            how = (f"the public {public.name} (see data/README.md) saved as {public}, then `moediffir convert-hific "
                   f"{public}`; or set data.hific_dir")
        out.append(Missing(name, str(folder / converted), how))
    return out


#: What a command may need, in the order they are checked and listed.
CHECKS: dict[str, Callable[[Config], list[Missing]]] = {
    "datasets": check_datasets,
    "benchmark": check_benchmark,
    "model_weights": check_model_weights,
    "metric_weights": check_metric_weights,
    "codec_weights": check_codec_weights,
}
#: What ``moediffir doctor`` checks: everything a full reproduction reads.
NEEDS: tuple[str, ...] = ("datasets", "benchmark", "model_weights", "metric_weights", "codec_weights")


def preflight(cfg: Config, needs: Iterable[str] = NEEDS) -> PreflightReport:
    """Run the checks ``needs`` (keys of :data:`CHECKS`) and return every missing input, each listed once."""
    report = PreflightReport(cfg.profile)
    seen: set[str] = set()
    for key in needs:
        if key not in CHECKS:
            raise KeyError(f"unknown preflight check {key!r}; have {sorted(CHECKS)}")
        report.checked.append(key)
        for item in CHECKS[key](cfg):
            if item.path not in seen:
                seen.add(item.path)
                report.missing.append(item)
    return report


def require(cfg: Config, needs: Iterable[str]) -> None:
    """Raise :class:`MissingInputsError` listing every missing input of ``needs``, before any work."""
    report = preflight(cfg, needs)
    if not report.ok:
        names = ", ".join(f"{m.name} ({m.path})" for m in report.missing)
        raise MissingInputsError(
            f"{len(report.missing)} input(s) missing for profile {cfg.profile!r}, nothing was started: {names} "
            f"(`moediffir doctor --profile {cfg.profile}` lists them too)\n" + "\n".join(str(m) for m in report.missing),
            report.missing)
