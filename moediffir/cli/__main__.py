"""``python -m moediffir.cli``: the ``moediffir`` command (also under ``accelerate launch -m moediffir.cli``)."""

from __future__ import annotations

import sys

from moediffir.cli import main

if __name__ == "__main__":
    sys.exit(main())
