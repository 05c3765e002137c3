"""Deprecated name, kept for one release: ``python evaluations/defence_table.py`` (same options)."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from evaluations.defence_table import main

    sys.exit(main())
