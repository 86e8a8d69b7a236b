"""``python -m medassist``, which ``torchrun -m medassist`` runs on every rank."""

from __future__ import annotations

import sys

from medassist.cli import main

if __name__ == "__main__":
    sys.exit(main())
