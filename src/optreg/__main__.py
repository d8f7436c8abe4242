"""``python -m optreg``: the ``optreg`` command (:func:`optreg.cli.main`)."""

from __future__ import annotations

import sys

from optreg.cli import main

if __name__ == "__main__":
    sys.exit(main())
