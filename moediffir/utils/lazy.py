"""Lazy re-exports for the kit's packages: ``from moediffir.models import MoEPromptModule`` works, and importing
the package alone imports none of its heavy modules (diffusers, open_clip) until a name is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` resolving each name of ``exports`` (name -> its module, relative
    to the package) on first use; any other name raises ``AttributeError``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
