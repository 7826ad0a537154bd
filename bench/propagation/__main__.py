"""``python -m bench.propagation [--quick]``: the propagation benchmark alone, its table printed.

``--quick`` runs no polling agents (their measurement takes two poll intervals, over two minutes) and
prints only the model for them.
"""

from __future__ import annotations

import sys

from bench.propagation import main

if __name__ == "__main__":
    main("--quick" in sys.argv[1:])
