"""``python -m stress``: see stress/cli.py and docs/stress.md."""

import sys

from .cli import main

sys.exit(main())
