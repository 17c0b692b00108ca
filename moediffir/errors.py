"""The one base of every error the kit raises for the user to fix (no paper section: the kit's own contract).

Every exception class of the package derives from :class:`MoEDiffIRError` (and, where it always did, from
the built-in it refines, such as ``ValueError`` or ``FileNotFoundError``, so existing ``except`` clauses keep
working). The command line catches this one class: it prints the message as one line and exits with the
error's :attr:`~MoEDiffIRError.exit_code` (2: nothing was done; 1: a run stopped part way).

Classes that several modules raise live here too: :class:`MissingWeightsError` (a pretrained weight file is
not on disk, for networks and metrics alike) and :class:`MissingInputsError` (the preflight of
``moediffir doctor`` found missing datasets or weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MoEDiffIRError(Exception):
    """A problem the user can fix: bad input, a missing file, a setting that does not fit.

    The message names the key or file and the problem; the command line prints it on one line.
    """

    #: Exit code of the command line: 2 = refused before any work, 1 = a run that stopped part way.
    exit_code: int = 2


class MissingInputsError(MoEDiffIRError, FileNotFoundError):
    """Datasets, a benchmark or weight files are not on disk; ``missing`` lists every one (the preflight of
    ``moediffir doctor``), and the message names each with where it goes."""

    def __init__(self, message: str, missing: Sequence[Any] = ()) -> None:
        self.missing = list(missing)
        super().__init__(message)

    def __str__(self) -> str:  # FileNotFoundError would print "[Errno ...]" for two arguments
        return str(self.args[0]) if self.args else ""


class MissingWeightsError(MissingInputsError):
    """Pretrained weight files are not on disk, for networks and metrics alike; the message names every file,
    where it goes and the fixes (for the network weights ``missing`` holds
    :class:`moediffir.weights.weight_checks.MissingWeight` entries)."""


class DeviceError(MoEDiffIRError, ValueError):
    """The device asked for (``--device`` / config key ``device``) is not on this machine."""
