"""``python -m wnll_art``: the ``wnll-art`` command line (:func:`wnll_art.cli.main`)."""

from __future__ import annotations

import sys

from wnll_art.cli import main

if __name__ == "__main__":
    sys.exit(main())
