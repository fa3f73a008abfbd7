"""Load test: N concurrent clients for T seconds against a limner server on this machine.

The code lives in `limner.testing.load` (the tests use it too); see its docstring for the
options. Usage: python benchmarks/load_test.py --spawn [--engine embedded] [--clients 50]
"""

from __future__ import annotations

import sys

from limner.testing.load import main

if __name__ == "__main__":
    sys.exit(main())
