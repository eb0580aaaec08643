"""``python -m taskqueue_core.cli``: the ``taskq`` console."""

from __future__ import annotations

import sys

from taskqueue_core.cli.application import main

if __name__ == "__main__":
    sys.exit(main())
