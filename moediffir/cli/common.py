"""What every ``moediffir`` command shares: ``--profile`` and ``--set`` overrides, ``--device``, and the checks
made before any work (device, inputs on disk, writable output folders; docs/design.md §2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moediffir.config import PROFILES, Config, parse_override, resolve_config

Namespace = argparse.Namespace
#: The parser type every ``add_*_command(s)`` function receives.
SubParsers = argparse._SubParsersAction


def add_config_args(parser: argparse.ArgumentParser, device: bool = False, default_profile: str = "smoke") -> None:
    """``--profile``, repeated ``--set KEY=VALUE`` and (optionally) ``--device``."""
    parser.add_argument("--profile", choices=PROFILES, default=default_profile,
                        help=f"settings profile (default: {default_profile})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.workers=2 (repeatable)")
    if device:
        parser.add_argument("--device", default=None, help="'auto', 'cpu', 'cuda', 'cuda:1', ... (config key device)")


def overrides_from_args(args: Namespace, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--set`` pairs, then ``--device``, then command-specific flags (``extra``, ``None`` values skipped)."""
    out: dict[str, Any] = {}
    for text in getattr(args, "overrides", []) or []:
        key, value = parse_override(text)
        out[key] = value
    if getattr(args, "device", None):
        out["device"] = args.device
    for key, value in (extra or {}).items():
        if value is not None:
            out[key] = value
    return out


def config_from_args(args: Namespace, extra: dict[str, Any] | None = None) -> Config:
    """Resolve the profile with every override given on the command line (validated)."""
    return resolve_config(args.profile, overrides_from_args(args, extra))


def command_config(args: Namespace, extra: dict[str, Any] | None = None,
                   check: Callable[[Config], None] | None = None) -> Config:
    """:func:`config_from_args`, then the checks every command makes before any work: the command's own ``check``
    of the config, its device (one check for every command that runs networks) and its preflight
    (``args.needs``: what it reads from disk)."""
    cfg = config_from_args(args, extra)
    if check is not None:
        check(cfg)
    if "device" in getattr(args, "checks", ()):
        from moediffir.utils.devices import check_device

        check_device(cfg.device)
    needs = getattr(args, "needs", ())
    if needs:
        from moediffir.doctor import require

        require(cfg, needs)
    if getattr(args, "writes", ()):
        from moediffir.utils.io import check_writable_dir

        for key in args.writes:
            check_writable_dir(OUTPUTS[key](cfg), what=f"output folder ({key})")
    return cfg


#: Output folders a command may write, checked to be writable before any work (``set_command(writes=...)``).
OUTPUTS: dict[str, Callable[[Config], Path]] = {
    "benchmark": lambda cfg: cfg.benchmark_dir,
    "datasets": lambda cfg: cfg.datasets_dir,
    "runs": lambda cfg: cfg.run_dir,
    "results": lambda cfg: cfg.profile_results_dir,
}


def set_command(parser: argparse.ArgumentParser, func: Callable[[Namespace], int], needs: tuple[str, ...] = (),
                device: bool = False, writes: tuple[str, ...] = ()) -> None:
    """Set the command's function, its preflight (``needs``: keys of ``moediffir.doctor.CHECKS``), whether its
    device is checked, and the output folders it writes (``writes``: keys of :data:`OUTPUTS`)."""
    parser.set_defaults(func=func, needs=needs, checks=("device",) if device else (), writes=writes)
