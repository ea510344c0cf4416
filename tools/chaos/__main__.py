"""`python -m tools.chaos`: every scenario, then the table (`make chaos`); with
``--soak 180`` only the soak (`make soak`); with ``--only NAME ...`` those scenarios.
"""

from __future__ import annotations

import sys

from tools.chaos import main

if __name__ == "__main__":
    sys.exit(main())
